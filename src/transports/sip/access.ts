/**
 * Who may call: a source-address allow-list (CIDRs) and optional HTTP Digest authentication (RFC 3261 §22,
 * RFC 2617 MD5 with qop=auth) for trunks that require it.
 */
import { BlockList, isIP } from 'node:net';
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/** Parses `sip.allowFrom`; throws a clear error for a bad entry so the service refuses to start. */
export function buildAllowList(cidrs: readonly string[]): BlockList {
  const list = new BlockList();
  for (const entry of cidrs) {
    const [address, prefixText] = entry.trim().split('/');
    const family = isIP(address);
    if (family === 0) throw new Error(`sip.allowFrom: "${entry}" is not an IP address or CIDR`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefixText === undefined) {
      list.addAddress(address, type);
      continue;
    }
    const prefix = Number(prefixText);
    if (!Number.isInteger(prefix) || prefix < 0 || prefix > (family === 4 ? 32 : 128)) throw new Error(`sip.allowFrom: bad prefix length in "${entry}"`);
    list.addSubnet(address, prefix, type);
  }
  return list;
}

/** Checks a socket's remote address, unwrapping IPv4-mapped IPv6 (::ffff:a.b.c.d) from dual-stack sockets. */
export function isAllowed(list: BlockList, address: string): boolean {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  const plain = mapped ? mapped[1] : address;
  const family = isIP(plain);
  if (family === 0) return false;
  return list.check(plain, family === 4 ? 'ipv4' : 'ipv6');
}

export interface DigestConfig {
  realm: string;
  /** user name → password. */
  users: Record<string, string>;
}

const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const NONCE_TTL_MS = 5 * 60_000;

/**
 * Stateless nonces: a timestamp signed with a per-process key, so any nonce we issued can be checked without
 * remembering it, and old ones are refused as stale.
 */
export class DigestAuth {
  private readonly key = randomBytes(32);

  constructor(private readonly config: DigestConfig) {}

  challenge(stale = false): string {
    const ts = Date.now().toString(16);
    const sig = createHmac('sha256', this.key).update(ts).digest('hex').slice(0, 32);
    return `Digest realm="${this.config.realm}", nonce="${ts}.${sig}", algorithm=MD5, qop="auth"${stale ? ', stale=true' : ''}`;
  }

  /** 'ok', 'stale' (valid signature but expired: re-challenge with stale=true) or 'invalid'. */
  verify(method: string, authorization: string | undefined): 'ok' | 'stale' | 'invalid' {
    if (!authorization || !/^digest\s/i.test(authorization)) return 'invalid';
    const params = parseAuthParams(authorization.replace(/^digest\s+/i, ''));
    const username = params.get('username');
    const realm = params.get('realm');
    const nonce = params.get('nonce');
    const uri = params.get('uri');
    const response = params.get('response');
    if (!username || !nonce || !uri || !response || realm !== this.config.realm) return 'invalid';
    const algorithm = params.get('algorithm');
    if (algorithm && algorithm.toUpperCase() !== 'MD5') return 'invalid';
    const password = Object.prototype.hasOwnProperty.call(this.config.users, username) ? this.config.users[username] : undefined;
    if (password === undefined) return 'invalid';
    const [ts, sig] = nonce.split('.');
    if (!ts || !sig) return 'invalid';
    const expected = createHmac('sha256', this.key).update(ts).digest('hex').slice(0, 32);
    if (!safeEqual(sig, expected)) return 'invalid';
    const ha1 = md5(`${username}:${this.config.realm}:${password}`);
    const ha2 = md5(`${method}:${uri}`);
    const qop = params.get('qop');
    const wanted = qop
      ? md5(`${ha1}:${nonce}:${params.get('nc') ?? ''}:${params.get('cnonce') ?? ''}:${qop}:${ha2}`)
      : md5(`${ha1}:${nonce}:${ha2}`);
    if (!safeEqual(response.toLowerCase(), wanted)) return 'invalid';
    const issued = parseInt(ts, 16);
    if (!Number.isFinite(issued) || Date.now() - issued > NONCE_TTL_MS) return 'stale';
    return 'ok';
  }
}

/** `name=value, name="quoted, value"` → map (quoted values may hold commas and semicolons). */
function parseAuthParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) params.set(m[1].toLowerCase(), m[3] ?? m[2]);
  return params;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A client-side Digest response (tests and tools that call a trunk-style endpoint). */
export function digestResponse(p: { username: string; password: string; realm: string; nonce: string; method: string; uri: string; nc: string; cnonce: string }): string {
  const ha1 = md5(`${p.username}:${p.realm}:${p.password}`);
  const ha2 = md5(`${p.method}:${p.uri}`);
  const response = md5(`${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:auth:${ha2}`);
  return `Digest username="${p.username}", realm="${p.realm}", nonce="${p.nonce}", uri="${p.uri}", response="${response}", algorithm=MD5, qop=auth, nc=${p.nc}, cnonce="${p.cnonce}"`;
}
