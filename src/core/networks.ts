/** Address lists from configuration (SIP's allowed sources and media networks, WebRTC's candidate networks). */
import { BlockList, isIP } from 'node:net';

/** CIDRs (or single addresses) → a BlockList; a bad entry throws a clear error naming `what`, so the service refuses to start. */
export function networkList(cidrs: readonly string[], what: string): BlockList {
  const list = new BlockList();
  for (const entry of cidrs) {
    const [address, prefixText] = entry.trim().split('/');
    const family = isIP(address);
    if (family === 0) throw new Error(`${what}: "${entry}" is not an IP address or CIDR`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefixText === undefined) {
      list.addAddress(address, type);
      continue;
    }
    const prefix = Number(prefixText);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) throw new Error(`${what}: bad prefix length in "${entry}"`);
    list.addSubnet(address, prefix, type);
  }
  return list;
}

/** Whether `address` is on the list, unwrapping IPv4-mapped IPv6 (::ffff:a.b.c.d) from dual-stack sockets. */
export function isAllowed(list: BlockList, address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped ? mapped[1] : address;
  const family = isIP(plain);
  if (family === 0) return false;
  return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
}
