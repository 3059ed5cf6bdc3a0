import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import dgram from 'node:dgram';
import { chmodSync, chownSync, closeSync, copyFileSync, existsSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { hashApiKey } from '../auth/auth.js';
import { mergeConfig, type ConfigOverrides } from '../config.js';
import { startPostgres, type LocalPostgres } from './postgres.js';
import { asUser, canBind, freePort, serviceUser, stopChild } from './processes.js';
import { makeLocalPki, OPENSSL, type LocalPki } from './tls.js';

/**
 * A whole cluster on one machine (`npm run cluster -- --nodes 3`, and test/scaleout-cluster.test.ts):
 * PostgreSQL (shared call records and per-key limits), HAProxy in front of the nodes' HTTP/WebSocket doors
 * (deploy/haproxy/haproxy.cfg), Kamailio in front of their SIP (deploy/kamailio/kamailio.cfg, dispatcher) and
 * N nodes, each its own `src/main.ts` process, all unprivileged on loopback: node i on 127.0.0.(i+1) where
 * the host answers on those addresses (Linux does), else on 127.0.0.1 with ports of their own. The nodes share
 * the token and SIP nonce secrets and one API key, as production nodes must (docs/scale-out.md). With `openssl`
 * installed, HAProxy also serves wss:// and the nodes reach PostgreSQL over verified TLS (a throwaway CA), and
 * Kamailio takes SIP over TLS too where its tls module is installed. With `srtp`, rtpengine (userspace, unprivileged)
 * anchors the media of callers that offer SRTP: they speak SRTP to it, the nodes plain RTP.
 */
export interface LocalClusterOptions {
  nodes: number;
  /** Settings every node gets on top of the cluster's own (e.g. limits). */
  nodeConfig?: ConfigOverrides;
  /** The API key every node accepts (default: a fresh random one). */
  apiKey?: string;
  /** Use this database instead of starting a throwaway one. */
  databaseUrl?: string;
  /** Start HAProxy / Kamailio when installed (default true each). */
  haproxy?: boolean;
  kamailio?: boolean;
  /** The nodes' log level (default 'info'); logs go to <dir>/nodeN.log. */
  logLevel?: string;
  /**
   * TLS with a throwaway CA (src/cluster/tls.ts): HAProxy's wss:// front door and the throwaway database's
   * connections (sslmode=verify-full). Default: on where `openssl` is installed.
   */
  tls?: boolean;
  /**
   * Start rtpengine and let Kamailio hand it calls whose offer is SRTP (RTP/SAVP, SDES); plain-RTP calls stay
   * direct. Default off; needs rtpengine and Kamailio's rtpengine module.
   */
  srtp?: boolean;
  /** A durable throwaway database (fsync on); off by default, for speed. */
  durable?: boolean;
  /** How long to wait for a node's /healthz to say ready (models load first). */
  readyTimeoutMs?: number;
}

export interface ClusterNode {
  name: string;
  address: string;
  httpPort: number;
  sipPort: number;
  httpUrl: string;
  process: ChildProcess;
  logFile: string;
}

export interface LocalCluster {
  dir: string;
  apiKey: string;
  databaseUrl: string;
  nodes: ClusterNode[];
  /** HAProxy's front door (http://127.0.0.1:port), or null without HAProxy. */
  httpUrl: string | null;
  /** HAProxy's TLS front door (https://127.0.0.1:port), or null without HAProxy or TLS. */
  httpsUrl: string | null;
  /** The throwaway CA's certificate (PEM file) clients trust for httpsUrl and the database, or null without TLS. */
  caFile: string | null;
  /** Kamailio's address (sip:127.0.0.1:port), or null without Kamailio. */
  sipUri: string | null;
  /** Kamailio's TLS door (sip:127.0.0.1:port;transport=tls, certificate from caFile), or null without it. */
  sipTlsUri: string | null;
  /** Whether SRTP offers are answered (rtpengine runs behind Kamailio). */
  srtp: boolean;
  stop(): Promise<void>;
}

const ROOT = path.resolve(import.meta.dirname, '..', '..');
const DEPLOY = path.join(ROOT, 'deploy');
export const HAPROXY = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p)) ?? null;
export const KAMAILIO = ['/usr/sbin/kamailio', '/usr/bin/kamailio'].find((p) => existsSync(p)) ?? null;
export const RTPENGINE = ['/usr/bin/rtpengine', '/usr/sbin/rtpengine'].find((p) => existsSync(p)) ?? null;

/** Whether Kamailio's module `name` is installed (Debian ships tls and rtpengine in packages of their own). */
export function kamailioHasModule(name: string): boolean {
  const lib = ['/usr/lib/x86_64-linux-gnu', '/usr/lib/aarch64-linux-gnu', '/usr/lib64', '/usr/lib', '/usr/local/lib64', '/usr/local/lib'];
  return KAMAILIO !== null && lib.some((dir) => existsSync(path.join(dir, 'kamailio', 'modules', `${name}.so`)));
}

/** deploy/haproxy/haproxy.cfg with one `server` line per node (addresses still from the environment, as operators run it). */
export function haproxyConfig(nodes: number): string {
  const lines = readFileSync(path.join(DEPLOY, 'haproxy', 'haproxy.cfg'), 'utf8').split('\n');
  const isServer = (line: string) => /^\s*server node\d+ /.test(line);
  const at = lines.findIndex(isServer);
  const indent = /^\s*/.exec(lines[at] ?? '')?.[0] ?? '    ';
  const kept = lines.filter((line) => !isServer(line));
  kept.splice(at, 0, ...Array.from({ length: nodes }, (_, i) => `${indent}server node${i + 1} "\${VOICE_AGENT_NODE${i + 1}}" check`));
  return kept.join('\n');
}

/** Wait until `check` resolves true; throw with `what` (and the child's exit) after `timeoutMs`. */
async function waitFor(what: string, check: () => Promise<boolean>, child: ChildProcess, timeoutMs: number, log: () => string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    if (await check().catch(() => false)) return;
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`${what} exited (${child.exitCode ?? child.signalCode}): ${log().slice(-2000)}`);
    if (performance.now() > deadline) throw new Error(`${what} not ready within ${timeoutMs} ms: ${log().slice(-2000)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** A SIP OPTIONS to `port` on loopback answered 200 (Kamailio is up). */
async function sipAlive(port: number): Promise<boolean> {
  const socket = dgram.createSocket('udp4');
  try {
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    const local = socket.address().port;
    const answered = new Promise<boolean>((resolve) => {
      socket.once('message', (m) => resolve(/^SIP\/2\.0 200/.test(m.toString('utf8'))));
      setTimeout(() => resolve(false), 300).unref();
    });
    const tag = randomBytes(4).toString('hex');
    const text = [
      `OPTIONS sip:127.0.0.1:${port} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${local};branch=z9hG4bK${tag};rport`,
      'Max-Forwards: 70',
      `From: <sip:cluster@127.0.0.1>;tag=${tag}`,
      `To: <sip:127.0.0.1:${port}>`,
      `Call-ID: up-${tag}`,
      'CSeq: 1 OPTIONS',
      'Content-Length: 0',
      '',
      '',
    ].join('\r\n');
    socket.send(Buffer.from(text), port, '127.0.0.1');
    return await answered;
  } finally {
    socket.close();
  }
}

/** rtpengine answers an ng `ping` on `port` (bencoded over UDP: a cookie, then the dictionary). */
async function rtpengineAlive(port: number): Promise<boolean> {
  const socket = dgram.createSocket('udp4');
  try {
    const answered = new Promise<boolean>((resolve) => {
      socket.once('message', (m) => resolve(m.toString('utf8').includes('4:pong')));
      setTimeout(() => resolve(false), 300).unref();
    });
    socket.send(Buffer.from('up d7:command4:pinge'), port, '127.0.0.1');
    return await answered;
  } finally {
    socket.close();
  }
}

export async function startLocalCluster(options: LocalClusterOptions): Promise<LocalCluster> {
  const dir = mkdtempSync(path.join(tmpdir(), 'voice-agent-cluster-'));
  const children: ChildProcess[] = [];
  const logs = new Map<ChildProcess, string>();
  let database: LocalPostgres | null = null;
  const nodes: ClusterNode[] = [];
  /** Directories of their own for servers that run as another user (removed at stop with `dir`). */
  const ownDirs: string[] = [];
  let stopped = false;
  // A test runner or CLI that dies without stop() must not leave nodes, proxies or the database behind.
  const killAll = (): void => {
    for (const child of [...children, ...(database ? [database.process] : [])]) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  };
  process.once('exit', killAll);
  const stop = async (): Promise<void> => {
    if (stopped) return;
    stopped = true;
    process.removeListener('exit', killAll);
    // Nodes first (SIGINT: stop now, calls end as 'shutdown', slots and lease released), then the proxies, then the database.
    await Promise.allSettled(nodes.map((n) => stopChild(n.process, 'SIGINT', 10_000)));
    await Promise.allSettled(children.filter((c) => !nodes.some((n) => n.process === c)).map((c) => stopChild(c, 'SIGTERM')));
    if (database) await database.stop();
    for (const d of [dir, ...ownDirs]) rmSync(d, { recursive: true, force: true });
  };
  const spawnLogged = (bin: string, args: string[], env: NodeJS.ProcessEnv = process.env): ChildProcess => {
    const child = spawn(bin, args, { env, stdio: ['ignore', 'ignore', 'pipe'] });
    logs.set(child, '');
    child.stderr?.on('data', (d: Buffer) => logs.set(child, ((logs.get(child) ?? '') + d.toString('utf8')).slice(-20_000)));
    children.push(child);
    return child;
  };
  try {
    const pki: LocalPki | null = options.tls !== false && OPENSSL ? makeLocalPki(dir) : null;
    if (options.databaseUrl) {
      // The given database; nothing to start or stop.
    } else {
      database = await startPostgres({ durable: options.durable, tls: pki ?? undefined });
    }
    const databaseUrl = options.databaseUrl ?? database!.url;
    const apiKey = options.apiKey ?? `va-${randomBytes(24).toString('base64url')}`;
    const secrets = {
      VOICE_AGENT_TOKEN_SECRET: randomBytes(32).toString('base64url'),
      VOICE_AGENT_SIP_NONCE_SECRET: randomBytes(32).toString('base64url'),
      VOICE_AGENT_DATABASE_URL: databaseUrl,
    };
    const spread = await canBind('127.0.0.2');
    for (let i = 0; i < options.nodes; i++) {
      const name = `node${i + 1}`;
      const address = spread ? `127.0.0.${i + 2}` : '127.0.0.1';
      const httpPort = await freePort(address);
      const sipPort = await freePort(address, 'udp');
      const own: ConfigOverrides = {
        host: address,
        port: httpPort,
        logLevel: options.logLevel ?? 'info',
        // The proxies connect from 127.0.0.1: the caller's address comes from their X-Forwarded-For.
        trustProxy: ['127.0.0.1'],
        auth: { apiKeyHashes: [hashApiKey(apiKey)], generatedKeyFile: null },
        store: { kind: 'postgres', path: path.join(dir, `${name}.db`), postgres: { nodeId: name } },
        recording: { dir: path.join(dir, 'recordings') },
        sip: { host: address, port: sipPort },
      };
      const configFile = path.join(dir, `${name}.json`);
      writeFileSync(configFile, JSON.stringify(mergeConfig(own, options.nodeConfig ?? {}), null, 2));
      const logFile = path.join(dir, `${name}.log`);
      const fd = openSync(logFile, 'a');
      const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'main.ts'), '--config', configFile], {
        cwd: ROOT,
        env: { ...process.env, ...secrets, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
        stdio: ['ignore', fd, fd],
      });
      closeSync(fd);
      children.push(child);
      nodes.push({ name, address, httpPort, sipPort, httpUrl: `http://${address}:${httpPort}`, process: child, logFile });
    }
    const readyTimeoutMs = options.readyTimeoutMs ?? 180_000;
    await Promise.all(
      nodes.map((n) =>
        waitFor(n.name, async () => (await fetch(`${n.httpUrl}/healthz`)).status === 200, n.process, readyTimeoutMs, () => (existsSync(n.logFile) ? readFileSync(n.logFile, 'utf8') : '')),
      ),
    );

    let httpUrl: string | null = null;
    let httpsUrl: string | null = null;
    if (options.haproxy !== false && HAPROXY) {
      const port = await freePort('127.0.0.1');
      const cfg = path.join(dir, 'haproxy.cfg');
      writeFileSync(cfg, haproxyConfig(nodes.length));
      const env: NodeJS.ProcessEnv = { ...process.env, VOICE_AGENT_FRONT: `127.0.0.1:${port}`, VOICE_AGENT_MAXCONN: process.env.VOICE_AGENT_MAXCONN ?? '1000' };
      if (pki) {
        const tlsPort = await freePort('127.0.0.1');
        env.VOICE_AGENT_FRONT_TLS = `127.0.0.1:${tlsPort}`;
        env.VOICE_AGENT_TLS_PEM = pki.bundle;
        httpsUrl = `https://127.0.0.1:${tlsPort}`;
      }
      nodes.forEach((n, i) => (env[`VOICE_AGENT_NODE${i + 1}`] = `${n.address}:${n.httpPort}`));
      const child = spawnLogged(HAPROXY, ['-db', '-f', cfg], env);
      httpUrl = `http://127.0.0.1:${port}`;
      await waitFor('haproxy', async () => (await fetch(`${httpUrl}/healthz`)).status === 200, child, 10_000, () => logs.get(child) ?? '');
    }

    let sipUri: string | null = null;
    let sipTlsUri: string | null = null;
    const kamailio = options.kamailio !== false && KAMAILIO !== null;
    if (options.srtp && !(kamailio && RTPENGINE && kamailioHasModule('rtpengine'))) {
      throw new Error('SRTP needs Kamailio with its rtpengine module, and rtpengine (apt-get install kamailio rtpengine)');
    }
    if (kamailio) {
      const port = await freePort('127.0.0.1', 'udp');
      const list = path.join(dir, 'dispatcher.list');
      writeFileSync(list, nodes.map((n, i) => `1 sip:${n.address}:${n.sipPort} 0 0 duid=node${i + 1}`).join('\n') + '\n');
      // -DD: foreground; -E: log to stderr; -Y: its own runtime dir instead of /run/kamailio.
      const defines = [`VA_LISTEN=udp:127.0.0.1:${port}`, `VA_DISPATCHER_LIST="${list}"`];
      // As root, Kamailio drops to its package's user (-u/-g) after reading its config and dispatcher list.
      const root = process.getuid?.() === 0;
      const kamailioUser = serviceUser('kamailio');
      if (pki && kamailioHasModule('tls')) {
        const tlsPort = await freePort('127.0.0.1');
        // Its TLS module loads the certificate after the drop: copies it owns, in a directory of its own at top
        // level (it cannot reach into the cluster's root-only dir), removed at stop.
        let [cert, key] = [pki.cert, pki.key];
        if (root) {
          const own = mkdtempSync(path.join(tmpdir(), 'voice-agent-kamailio-'));
          ownDirs.push(own);
          [cert, key] = [path.join(own, 'server.pem'), path.join(own, 'server.key')];
          copyFileSync(pki.cert, cert);
          copyFileSync(pki.key, key);
          chmodSync(key, 0o600);
          for (const f of [own, cert, key]) chownSync(f, kamailioUser.uid, kamailioUser.gid);
        }
        defines.push(`VA_LISTEN_TLS=tls:127.0.0.1:${tlsPort}`, `VA_TLS_CERT="${cert}"`, `VA_TLS_KEY="${key}"`);
        sipTlsUri = `sip:127.0.0.1:${tlsPort};transport=tls`;
      }
      if (options.srtp) {
        // Userspace forwarding (--table=-1: no kernel module), as its package's user: no privileges on ports above 1024.
        const ng = await freePort('127.0.0.1', 'udp');
        const base = 46_000 + 2 * Math.floor(Math.random() * 2000);
        const rtpengineUser = serviceUser('rtpengine');
        const [bin, args] = asUser(rtpengineUser.user, rtpengineUser.group, RTPENGINE!, ['--config-file=none', '--table=-1', '--interface=127.0.0.1', `--listen-ng=127.0.0.1:${ng}`, '--foreground', '--log-stderr', `--port-min=${base}`, `--port-max=${base + 999}`, '--num-threads=2', `--log-level=${options.logLevel === 'debug' ? 7 : 5}`]);
        const child = spawnLogged(bin, args);
        await waitFor('rtpengine', () => rtpengineAlive(ng), child, 10_000, () => logs.get(child) ?? '');
        defines.push(`VA_RTPENGINE="udp:127.0.0.1:${ng}"`);
      }
      const user = root ? ['-u', kamailioUser.user, '-g', kamailioUser.group] : [];
      const child = spawnLogged(KAMAILIO!, ['-DD', '-E', ...user, '-f', path.join(DEPLOY, 'kamailio', 'kamailio.cfg'), '-Y', dir, ...defines.flatMap((d) => ['-A', d])]);
      sipUri = `sip:127.0.0.1:${port}`;
      await waitFor('kamailio', () => sipAlive(port), child, 10_000, () => logs.get(child) ?? '');
    }
    return { dir, apiKey, databaseUrl, nodes, httpUrl, httpsUrl, caFile: pki?.ca ?? null, sipUri, sipTlsUri, srtp: options.srtp === true, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
