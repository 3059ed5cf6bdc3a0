/**
 * Two SIP nodes behind a real Kamailio (Debian's, unprivileged on 127.0.0.1) running deploy/kamailio/kamailio.cfg
 * as operators do, with its dispatcher probing the nodes with OPTIONS. Shows: INVITEs through Kamailio reach the
 * nodes and are answered, each new call on the node with the fewest calls in progress; once a node drains, new INVITEs all go to the other node (the
 * draining node's 503 fails over at once, and its OPTIONS 503 takes it out of the set).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { freePort } from '../src/cluster/processes.js';
import { sipServerOf } from '../src/transports/sip/index.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { callThroughProxy, sipCaller as caller, sipStatus as status } from './helpers/sip-proxy.js';

const KAMAILIO = ['/usr/sbin/kamailio', '/usr/bin/kamailio'].find((p) => existsSync(p));
const CONFIG = path.join(import.meta.dirname, '..', 'deploy', 'kamailio', 'kamailio.cfg');

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe.skipIf(!KAMAILIO)('two SIP nodes behind Kamailio', () => {
  let nodes: TestServer[] = [];
  let kamailio: ChildProcess | undefined;
  let dir = '';
  let proxyPort = 0;
  let log = '';

  beforeAll(async () => {
    const started = await Promise.allSettled([0, 1].map(() => startTestServer({ drain: { deadlineMs: 20_000 } })));
    nodes = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
    if (nodes.length < 2) throw new Error('a node did not start');
    dir = await mkdtemp(path.join(tmpdir(), 'kamailio-test-'));
    const list = nodes.map((n, i) => `1 sip:127.0.0.1:${sipServerOf(n.server.service)!.port} 0 0 duid=node${i + 1}`).join('\n') + '\n';
    await writeFile(path.join(dir, 'dispatcher.list'), list);
    proxyPort = await freePort('127.0.0.1', 'udp');
    // -DD: stay in the foreground (its children are reaped with it); -E: log to stderr; -Y: a runtime dir of
    // its own instead of /run/kamailio.
    kamailio = spawn(
      KAMAILIO!,
      ['-DD', '-E', '-f', CONFIG, '-Y', dir, '-A', `VA_LISTEN=udp:127.0.0.1:${proxyPort}`, '-A', `VA_DISPATCHER_LIST="${path.join(dir, 'dispatcher.list')}"`],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    kamailio.stderr?.on('data', (d: Buffer) => (log = (log + d.toString('utf8')).slice(-20_000)));
    // Up when it answers an OPTIONS addressed to itself.
    for (let i = 0; ; i++) {
      const c = await caller(proxyPort);
      c.send([`OPTIONS sip:127.0.0.1:${proxyPort} SIP/2.0`, c.via(), 'Max-Forwards: 70', `From: <sip:t@127.0.0.1>;tag=p${i}`, `To: <sip:127.0.0.1:${proxyPort}>`, `Call-ID: up-${i}`, 'CSeq: 1 OPTIONS']);
      await sleep(100);
      c.close();
      if (status(c.got[0]) === 200) break;
      if (i > 50 || kamailio.exitCode !== null) throw new Error(`kamailio did not start: ${log.slice(-2000)}`);
    }
  });

  afterAll(async () => {
    if (kamailio && kamailio.exitCode === null && kamailio.signalCode === null) {
      const exited = new Promise<void>((r) => kamailio!.once('exit', () => r()));
      kamailio.kill('SIGTERM');
      await Promise.race([exited, sleep(3000)]);
      if (kamailio.exitCode === null && kamailio.signalCode === null) kamailio.kill('SIGKILL');
    }
    await Promise.allSettled(nodes.map((n) => n.stop()));
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  const sessionsPerNode = () => nodes.map((n) => n.server.service.sessions.size);

  const call = () => callThroughProxy(proxyPort);

  it('sends INVITEs through Kamailio to both nodes, and in-dialog requests back to the node that took the call', async () => {
    const first = await call();
    const second = await call();
    expect([first.status, second.status]).toEqual([200, 200]);
    expect(sessionsPerNode()).toEqual([1, 1]);
    // Kamailio stays in the dialog's path (Record-Route), so the ACK and BYE reach the node through it.
    expect(first.routes.join()).toContain(`127.0.0.1:${proxyPort}`);
    // The BYE follows the Record-Route through Kamailio to the right node: both calls end.
    await Promise.all([first.hangUp(), second.hangUp()]);
    for (let i = 0; i < 40 && sessionsPerNode().some((n) => n > 0); i++) await sleep(50);
    expect(sessionsPerNode()).toEqual([0, 0]);
  });

  it('sends a new call to the node with the fewest calls in progress', async () => {
    /** A call, and the node it landed on. */
    const placed = async () => {
      const before = sessionsPerNode();
      const c = await call();
      expect(c.status).toBe(200);
      return { c, node: sessionsPerNode().findIndex((n, i) => n > before[i]) };
    };
    const first = [await placed(), await placed(), await placed()];
    // Three calls over two nodes: two on one, one on the other (which one breaks a tie is Kamailio's choice).
    const onNode = (n: number) => first.filter((p) => p.node === n);
    expect([onNode(0).length, onNode(1).length].sort()).toEqual([1, 2]);
    const lighter = onNode(0).length === 1 ? 0 : 1;
    // Hang up the lighter node's call: now 0 against 2, and the next two calls both go there (0 < 2, then
    // 1 < 2), where round-robin would alternate.
    await onNode(lighter)[0].c.hangUp();
    for (let i = 0; i < 40 && sessionsPerNode()[lighter] > 0; i++) await sleep(50);
    const next = [await placed(), await placed()];
    expect(next.map((p) => p.node)).toEqual([lighter, lighter]);
    await Promise.all([...onNode(1 - lighter), ...next].map((p) => p.c.hangUp()));
    for (let i = 0; i < 40 && sessionsPerNode().some((n) => n > 0); i++) await sleep(50);
    expect(sessionsPerNode()).toEqual([0, 0]);
  });

  it('gives a draining node no new calls, while the call it has goes on', async () => {
    // Three calls: the node with one is the one least-calls picks next; that node starts draining.
    const before = [await call(), await call(), await call()];
    expect(before.map((c) => c.status)).toEqual([200, 200, 200]);
    expect([...sessionsPerNode()].sort()).toEqual([1, 2]);
    const draining = sessionsPerNode().indexOf(1);
    const other = 1 - draining;
    const drained = nodes[draining].server.service.drain();
    // At once: Kamailio still sends the INVITE to the draining node (fewest calls; its next OPTIONS probe is
    // up to a second away), gets 503, and fails over. Then after the probes saw OPTIONS 503: the node is out.
    const now = [await call(), await call()];
    await sleep(2500);
    const later = [await call(), await call()];
    expect([...now, ...later].map((c) => c.status)).toEqual([200, 200, 200, 200]);
    const expected = [0, 0];
    expected[draining] = 1;
    expected[other] = 6;
    expect(sessionsPerNode()).toEqual(expected);
    expect(nodes[draining].server.service.state).toBe('draining');
    await Promise.all([...before, ...now, ...later].map((c) => c.hangUp()));
    await drained;
    expect(sessionsPerNode()[draining]).toBe(0);
  });
});

describe.skipIf(KAMAILIO)('Kamailio is not installed', () => {
  it('(skipped: `apt-get install kamailio` or scripts/setup.sh --test runs the Kamailio cases)', () => undefined);
});
