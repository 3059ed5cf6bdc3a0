import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chownSync, chmodSync, copyFileSync, existsSync, mkdtempSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import pg from 'pg';
import { asUser, freePort, stopChild, systemUser } from './processes.js';

/**
 * A throwaway PostgreSQL server for `npm run cluster` and the tests: its own data directory, listening on
 * 127.0.0.1 and a free port, trust authentication for loopback only. Never the system's cluster. PostgreSQL
 * refuses to run as root, so as root it runs as the `postgres` system user (setpriv), which owns the data dir.
 */
export interface LocalPostgres {
  url: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

/** The binaries' directory: PG_BINDIR, else the newest /usr/lib/postgresql/<version>/bin, else none. */
export function postgresBinDir(env: NodeJS.ProcessEnv = process.env): string | null {
  if (env.PG_BINDIR && existsSync(path.join(env.PG_BINDIR, 'postgres'))) return env.PG_BINDIR;
  const root = '/usr/lib/postgresql';
  if (!existsSync(root)) return null;
  const versions = readdirSync(root)
    .filter((v) => existsSync(path.join(root, v, 'bin', 'postgres')))
    .sort((a, b) => Number(b) - Number(a));
  return versions[0] ? path.join(root, versions[0], 'bin') : null;
}

const isRoot = (): boolean => process.getuid?.() === 0;

/** argv that runs `bin` as the postgres user when we are root. */
const asDbUser = (bin: string, args: string[]): [string, string[]] => asUser('postgres', 'postgres', bin, args);

/** Server certificate and key PostgreSQL serves TLS with, and the CA clients verify it by (src/cluster/tls.ts). */
export interface PostgresTls {
  cert: string;
  key: string;
  ca: string;
}

/**
 * Start one in a fresh temp dir (its own, top level: the postgres user must reach it); stop() removes it.
 * With `tls`, it runs with ssl=on and the URL asks for sslmode=verify-full against the given CA.
 */
export async function startPostgres(options: { durable?: boolean; tls?: PostgresTls } = {}): Promise<LocalPostgres> {
  const bin = postgresBinDir();
  if (!bin) throw new Error('PostgreSQL binaries not found (apt-get install postgresql, or set PG_BINDIR)');
  const dir = mkdtempSync(path.join(tmpdir(), 'voice-agent-pg-'));
  if (isRoot()) {
    const owner = systemUser('postgres');
    if (!owner) throw new Error('running as root, and there is no `postgres` system user to run PostgreSQL as');
    chownSync(dir, owner.uid, owner.gid);
  }
  const data = path.join(dir, 'data');
  const [initBin, initArgs] = asDbUser(path.join(bin, 'initdb'), ['-D', data, '-U', 'voice_agent', '-A', 'trust', '-E', 'UTF8', '--no-sync', '--no-instructions']);
  const init = spawnSync(initBin, initArgs, { encoding: 'utf8' });
  if (init.status !== 0) {
    rmSync(dir, { recursive: true, force: true });
    throw new Error(`initdb failed: ${init.stderr || init.error?.message}`);
  }
  const tlsSettings: string[] = [];
  if (options.tls) {
    // PostgreSQL reads the key as its own user and refuses one others can read: copies in its dir, its own, 0600.
    const cert = path.join(dir, 'server.pem');
    const key = path.join(dir, 'server.key');
    copyFileSync(options.tls.cert, cert);
    copyFileSync(options.tls.key, key);
    chmodSync(key, 0o600);
    if (isRoot()) for (const f of [cert, key]) chownSync(f, statSync(dir).uid, statSync(dir).gid);
    // TLS or nothing over TCP: a node that would connect in clear text is refused, not served.
    writeFileSync(path.join(data, 'pg_hba.conf'), 'local all all trust\nhostssl all all 127.0.0.1/32 trust\n');
    tlsSettings.push('-c', 'ssl=on', '-c', `ssl_cert_file=${cert}`, '-c', `ssl_key_file=${key}`);
  }
  const port = await freePort('127.0.0.1');
  // Loopback only (listen_addresses), sockets in our own directory; fsync off for throwaway test clusters.
  const settings = ['-c', `listen_addresses=127.0.0.1`, '-p', String(port), '-k', dir, '-c', 'max_connections=200', ...tlsSettings, ...(options.durable ? [] : ['-c', 'fsync=off', '-c', 'synchronous_commit=off', '-c', 'full_page_writes=off'])];
  const [pgBin, pgArgs] = asDbUser(path.join(bin, 'postgres'), ['-D', data, ...settings]);
  let log = '';
  const child = spawn(pgBin, pgArgs, { stdio: ['ignore', 'ignore', 'pipe'] });
  child.stderr?.on('data', (d: Buffer) => (log = (log + d.toString('utf8')).slice(-8000)));
  const ssl = options.tls ? `?sslmode=verify-full&sslrootcert=${encodeURIComponent(options.tls.ca)}` : '';
  const url = `postgres://voice_agent@127.0.0.1:${port}/postgres${ssl}`;
  const stop = async (): Promise<void> => {
    await stopChild(child, 'SIGINT', 10_000);
    rmSync(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    const client = new pg.Client({ connectionString: url });
    const ok = await client.connect().then(
      () => true,
      () => false,
    );
    await client.end().catch(() => undefined);
    if (ok) break;
    if (i > 150 || child.exitCode !== null) {
      await stop();
      throw new Error(`PostgreSQL did not start: ${log.trim().slice(-2000)}`);
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  return { url, process: child, stop };
}
