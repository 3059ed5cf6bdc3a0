import { spawnSync, type ChildProcess } from 'node:child_process';
import dgram from 'node:dgram';
import net from 'node:net';

/** A port free on `address` now (TCP, or UDP for SIP), for a child that must be told its port. */
export async function freePort(address: string, kind: 'tcp' | 'udp' = 'tcp'): Promise<number> {
  if (kind === 'udp') {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(0, address, () => resolve());
    });
    const { port } = socket.address();
    await new Promise<void>((resolve) => socket.close(() => resolve()));
    return port;
  }
  const server = net.createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, address, () => resolve());
  });
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Whether this host can bind `address` (127.0.0.2 and up answer on Linux; not on every system). */
export async function canBind(address: string): Promise<boolean> {
  return freePort(address).then(
    () => true,
    () => false,
  );
}

/** Signal a child and wait for it to exit; SIGKILL after `timeoutMs`. */
export async function stopChild(child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM', timeoutMs = 5000): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill(signal);
  const timer = new Promise<boolean>((resolve) => setTimeout(() => resolve(false), timeoutMs).unref());
  const done = await Promise.race([exited.then(() => true), timer]);
  if (!done) {
    child.kill('SIGKILL');
    await exited;
  }
}

/**
 * argv that runs `bin` as `user`:`group` when we are root (setpriv exec's in place, so signals reach the program
 * itself), else as is: the servers the cluster starts (PostgreSQL, rtpengine) need no privileges, so root keeps none.
 */
export function asUser(user: string, group: string, bin: string, args: string[]): [string, string[]] {
  return process.getuid?.() === 0 ? ['setpriv', [`--reuid=${user}`, `--regid=${group}`, '--init-groups', '--', bin, ...args]] : [bin, args];
}

/** A system user's uid and gid (`id`), or null where there is none. */
export function systemUser(name: string): { uid: number; gid: number } | null {
  const uid = spawnSync('id', ['-u', name], { encoding: 'utf8' });
  const gid = spawnSync('id', ['-g', name], { encoding: 'utf8' });
  return uid.status === 0 && gid.status === 0 ? { uid: Number(uid.stdout.trim()), gid: Number(gid.stdout.trim()) } : null;
}

/** The user (and group) a server runs as when we are root: its package's own user where installed, else nobody. */
export function serviceUser(name: string): { user: string; group: string; uid: number; gid: number } {
  const own = systemUser(name);
  if (own) return { user: name, group: name, ...own };
  return { user: 'nobody', group: 'nogroup', ...(systemUser('nobody') ?? { uid: 65534, gid: 65534 }) };
}
