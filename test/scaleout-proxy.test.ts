/**
 * Two nodes behind a real proxy (HAProxy and/or nginx from Debian, unprivileged on 127.0.0.1), configured with
 * the files operators use (deploy/haproxy/haproxy.cfg, deploy/nginx/voice-agent.conf; only the addresses are
 * filled in). Shows: new calls spread over both nodes; a session token minted on one node opens calls on the
 * other (shared `auth.tokenSecret`); once a node drains, every new call through the proxy lands on the other node
 * (the proxy retries the 503 the draining node answers before the upgrade) while the call in progress on the
 * draining node is still answered and ends normally; behind HAProxy, a WebRTC session's DELETE reaches the node
 * that holds the session (a stick table filled from the offer's answer).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { PeerConnection } from '../src/transports/webrtc/wrtc.js';
import { freePort } from '../src/cluster/processes.js';
import { clientOffer } from './helpers/webrtc-offer.js';
import { endDeviceCall, openDeviceCall, type DeviceCall as Call } from './helpers/device-call.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { NGINX, writeNginxConfig } from './helpers/nginx.js';

const HAPROXY = ['/usr/sbin/haproxy', '/usr/bin/haproxy'].find((p) => existsSync(p));
const DEPLOY = path.join(import.meta.dirname, '..', 'deploy');
const TOKEN_SECRET = 'cluster-token-secret-for-the-proxy-test';

interface Proxy {
  port: number;
  stop(): Promise<void>;
}

// Every proxy this file starts, so that a failing test or hook still leaves no process behind.
const children = new Set<ChildProcess>();
process.once('exit', () => children.forEach((c) => c.kill('SIGKILL')));

/** Spawns a proxy and waits until /healthz answers 200 through it (both nodes are up). */
async function spawnProxy(name: string, bin: string, args: string[], env: NodeJS.ProcessEnv, port: number, dir: string): Promise<Proxy> {
  let stderr = '';
  const child = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'ignore', 'pipe'] });
  children.add(child);
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString('utf8')));
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  const stop = async (): Promise<void> => {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 3000))]);
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    }
    children.delete(child);
    await rm(dir, { recursive: true, force: true });
  };
  for (let i = 0; ; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.status === 200, () => false);
    if (ok) break;
    if (i > 100 || child.exitCode !== null) {
      await stop();
      throw new Error(`${name} did not start: ${stderr.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  return { port, stop };
}

async function startHaproxy(nodes: number[]): Promise<Proxy> {
  const port = await freePort('127.0.0.1');
  const dir = await mkdtemp(path.join(tmpdir(), 'haproxy-test-'));
  const env = { VOICE_AGENT_MAXCONN: '500', VOICE_AGENT_FRONT: `127.0.0.1:${port}`, VOICE_AGENT_NODE1: `127.0.0.1:${nodes[0]}`, VOICE_AGENT_NODE2: `127.0.0.1:${nodes[1]}` };
  // -db: foreground, no daemon; the config file is the one in deploy/, as is.
  return spawnProxy('haproxy', HAPROXY!, ['-db', '-f', path.join(DEPLOY, 'haproxy', 'haproxy.cfg')], env, port, dir);
}

async function startNginx(nodes: number[]): Promise<Proxy> {
  const port = await freePort('127.0.0.1');
  const dir = await mkdtemp(path.join(tmpdir(), 'nginx-test-'));
  // What envsubst does in the documented deployment: fill in the named variables only.
  const vars: Record<string, string> = { VOICE_AGENT_FRONT: `127.0.0.1:${port}`, VOICE_AGENT_NODE1: `127.0.0.1:${nodes[0]}`, VOICE_AGENT_NODE2: `127.0.0.1:${nodes[1]}` };
  const snippet = (await readFile(path.join(DEPLOY, 'nginx', 'voice-agent.conf'), 'utf8')).replace(/\$\{(VOICE_AGENT_\w+)\}/g, (_m, name: string) => vars[name] ?? _m);
  await writeFile(path.join(dir, 'voice-agent.conf'), snippet);
  const args = await writeNginxConfig(dir, `  include ${dir}/voice-agent.conf;`);
  return spawnProxy('nginx', NGINX!, args, {}, port, dir);
}

const openCall = (port: number, query: string): Promise<Call> => openDeviceCall(`ws://127.0.0.1:${port}/v1/ws?${query}`);
const endCall = endDeviceCall;

async function mintToken(node: TestServer): Promise<string> {
  const res = await fetch(`${node.httpUrl}/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: '{}',
  });
  expect(res.status).toBe(200);
  return ((await res.json()) as { token: string }).token;
}

/** How many WebRTC offers a node has answered (its own metrics). */
async function answeredOffers(node: TestServer): Promise<number> {
  const text = await (await fetch(`${node.httpUrl}/metrics`)).text();
  return Number(/^voice_agent_webrtc_offers_total\{result="answered"\} (\d+)/m.exec(text)?.[1] ?? 0);
}

const engines = [
  { name: 'HAProxy', bin: HAPROXY, start: startHaproxy, install: 'apt-get install haproxy' },
  { name: 'nginx', bin: NGINX, start: startNginx, install: 'apt-get install nginx' },
];

// Three nodes, loaded once: each engine gets a pair [its own, the shared one], and drains its own.
let pool: TestServer[] = [];
beforeAll(async () => {
  if (!engines.some((e) => e.bin)) return;
  // Shared token secret, as every node of a cluster is configured; each node keeps its own call store.
  const started = await Promise.allSettled([0, 1, 2].map(() => startTestServer({ sip: { enabled: false }, auth: { tokenSecret: TOKEN_SECRET }, drain: { deadlineMs: 20_000 } })));
  pool = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  if (pool.length < 3) throw new Error('a node did not start');
});
afterAll(async () => {
  await Promise.allSettled(pool.map((n) => n.stop()));
});

engines.forEach((engine, index) => {
  describe.skipIf(!engine.bin)(`two nodes behind ${engine.name}`, () => {
    let nodes: TestServer[] = [];
    let proxy: Proxy | undefined;
    const calls: Call[] = [];

    beforeAll(async () => {
      nodes = [pool[index === 0 ? 0 : 2], pool[1]];
      proxy = await engine.start(nodes.map((n) => n.port));
    });

    afterAll(async () => {
      for (const call of calls) call.ws.terminate();
      await proxy?.stop();
    });

    const nodeOf = (callId: string): number => nodes.findIndex((n) => n.server.service.sessions.has(callId));

    it('spreads calls over both nodes, with a session token minted on one node accepted by both', async () => {
      const token = await mintToken(nodes[0]);
      // Straight to the other node first: the token is not node 0's alone.
      const direct = await openCall(nodes[1].port, `token=${encodeURIComponent(token)}`);
      expect(nodeOf(direct.callId)).toBe(1);
      await endCall(direct);

      const opened: Call[] = [];
      for (let i = 0; i < 4; i++) opened.push(await openCall(proxy!.port, `token=${encodeURIComponent(token)}`));
      calls.push(...opened);
      const perNode = [0, 1].map((n) => opened.filter((c) => nodeOf(c.callId) === n).length);
      // Least connections over two nodes with four open calls: two each.
      expect(perNode).toEqual([2, 2]);
      await Promise.all(opened.map(endCall));
    });

    it.skipIf(engine.name !== 'HAProxy')('pins a WebRTC session to its node: the session\'s DELETE through the proxy reaches it', async () => {
      const auth = { authorization: `Bearer ${TEST_API_KEY}` };
      const sessions: Array<{ id: string; node: number; pc: PeerConnection }> = [];
      try {
        for (let i = 0; i < 4; i++) {
          const { pc, sdp } = await clientOffer();
          const before = await Promise.all(nodes.map(answeredOffers));
          const res = await fetch(`http://127.0.0.1:${proxy!.port}/v1/webrtc/offer`, { method: 'POST', headers: { ...auth, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'offer', sdp }) });
          expect(res.status).toBe(200);
          const { sessionId } = (await res.json()) as { sessionId: string };
          const after = await Promise.all(nodes.map(answeredOffers));
          sessions.push({ id: sessionId, node: after.findIndex((n, k) => n > before[k]), pc });
        }
        // Offers are spread too (so a DELETE sent to "any" node would miss half the time) …
        expect(new Set(sessions.map((s) => s.node)).size).toBe(2);
        // … and every session's DELETE lands where the session is: 204, never the other node's 404. Node by node,
        // so that a proxy alternating between the nodes would send half of them to the wrong one.
        for (const session of [...sessions].sort((a, b) => a.node - b.node)) {
          const res = await fetch(`http://127.0.0.1:${proxy!.port}/v1/webrtc/sessions/${session.id}`, { method: 'DELETE', headers: auth });
          expect(res.status, `session on node ${session.node}`).toBe(204);
        }
      } finally {
        for (const session of sessions) session.pc.close();
      }
    });

    it('sends every new call to the other node while one drains, and the call in progress there still finishes', async () => {
      // A call in progress on node 0 (least connections alternates, so one of the first two lands there).
      const first = [await openCall(proxy!.port, `token=${encodeURIComponent(await mintToken(nodes[1]))}`)];
      if (nodeOf(first[0].callId) !== 0) first.push(await openCall(proxy!.port, `token=${encodeURIComponent(await mintToken(nodes[1]))}`));
      calls.push(...first);
      const inProgress = first.find((c) => nodeOf(c.callId) === 0)!;
      expect(inProgress).toBeDefined();
      for (const other of first.filter((c) => c !== inProgress)) await endCall(other);

      const token = await mintToken(nodes[1]);
      // Gathered beforehand (up to 2 s), so that the offer below reaches the proxy before its health check runs.
      const offer = engine.name === 'HAProxy' ? await clientOffer() : undefined;
      const drainStarted = performance.now();
      const drained = nodes[0].server.service.drain();
      // At once, before a health check could have run: the 503 before the upgrade is what moves these.
      const moved = await Promise.all([0, 1, 2, 3].map(() => openCall(proxy!.port, `token=${encodeURIComponent(token)}`)));
      calls.push(...moved);
      expect(moved.map((c) => nodeOf(c.callId))).toEqual([1, 1, 1, 1]);
      if (offer) {
        // A WebRTC offer (a POST, buffered by HAProxy) is retried the same way: node 1 answers it.
        const { pc, sdp } = offer;
        try {
          const before = await Promise.all(nodes.map(answeredOffers));
          const res = await fetch(`http://127.0.0.1:${proxy!.port}/v1/webrtc/offer`, { method: 'POST', headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify({ type: 'offer', sdp }) });
          expect(res.status).toBe(200);
          const after = await Promise.all(nodes.map(answeredOffers));
          expect([after[0] - before[0], after[1] - before[1]]).toEqual([0, 1]);
          const { sessionId } = (await res.json()) as { sessionId: string };
          expect((await fetch(`http://127.0.0.1:${proxy!.port}/v1/webrtc/sessions/${sessionId}`, { method: 'DELETE', headers: { authorization: `Bearer ${TEST_API_KEY}` } })).status).toBe(204);
        } finally {
          pc.close();
        }
      }

      // The draining node still serves the call it has: a question gets a completed answer.
      const answered = new Promise<Record<string, unknown>>((resolve) =>
        inProgress.ws.on('message', (data, isBinary) => {
          if (isBinary) return;
          const event = JSON.parse(data.toString()) as Record<string, unknown>;
          if (event.type === 'response.done') resolve(event);
        }),
      );
      inProgress.ws.send(JSON.stringify({ type: 'input.text', text: 'What time is it?' }));
      const done = await answered;
      expect(done.status).toBe('completed');
      expect(String(done.text)).toMatch(/\d/);
      expect(nodes[0].server.service.state).toBe('draining');

      // It ends when the caller hangs up, and the drain ends with it, long before its 20 s deadline.
      await endCall(inProgress);
      await drained;
      expect(performance.now() - drainStarted).toBeLessThan(15_000);
      expect(nodes[0].server.service.sessions.size).toBe(0);
      // The proxy's own view: health through it stays 200 (served by node 1), and new calls keep landing there.
      expect((await fetch(`http://127.0.0.1:${proxy!.port}/healthz`)).status).toBe(200);
      const after = await openCall(proxy!.port, `token=${encodeURIComponent(token)}`);
      calls.push(after);
      expect(nodeOf(after.callId)).toBe(1);
      await Promise.all([...moved, after].map(endCall));
    });
  });
});

describe.skipIf(HAPROXY && NGINX)('proxies that are not installed', () => {
  it.skipIf(HAPROXY)('(HAProxy is not installed: `apt-get install haproxy` or scripts/setup.sh --test runs its cases)', () => undefined);
  it.skipIf(NGINX)('(nginx is not installed: `apt-get install nginx` or scripts/setup.sh --test runs its cases)', () => undefined);
});
