/**
 * A whole cluster on loopback, as `npm run cluster` starts it (src/cluster/local.ts): a throwaway PostgreSQL,
 * three node processes on 127.0.0.2–4 (or ports of 127.0.0.1), HAProxy from deploy/haproxy and Kamailio from
 * deploy/kamailio in front. Shows: device calls through HAProxy spread over the nodes; any node serves any call's
 * record (transcript included) from PostgreSQL; the per-key cap holds across nodes; SIGKILL of one node leaves
 * the other nodes' calls talking, its record is closed as `node_lost` and its slots come back once its lease
 * lapses; SIP INVITEs through Kamailio land on different nodes and their records are shared too; with `openssl`,
 * a call through HAProxy's wss:// door (throwaway CA) and every node's database connection on verified TLS; with
 * Kamailio's tls module and baresip, a SIP call over TLS through Kamailio; with rtpengine too, an SRTP call whose
 * media rtpengine turns into plain RTP for the node, heard both ways.
 */
import { existsSync, readFileSync } from 'node:fs';
import tls from 'node:tls';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { HAPROXY, KAMAILIO, kamailioHasModule, RTPENGINE, startLocalCluster, type LocalCluster } from '../src/cluster/local.js';
import { resampleOnce } from '../src/audio/resample.js';
import { Baresip } from './helpers/baresip.js';
import { postgresBinDir } from '../src/cluster/postgres.js';
import { OPENSSL } from '../src/cluster/tls.js';
import { callThroughProxy } from './helpers/sip-proxy.js';
import { picoAvailable, speak } from './helpers/speech.js';
import { endDeviceCall, openDeviceCall, type DeviceCall as Call } from './helpers/device-call.js';

const PG = postgresBinDir();
const CAP = 4;
const LEASE_MS = 2000;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const BARESIP = existsSync('/usr/bin/baresip');
// SIP over TLS: Kamailio's tls module (Debian: kamailio-tls-modules) and the throwaway CA; SRTP: rtpengine and its module.
const SIP_TLS = KAMAILIO !== null && OPENSSL !== null && kamailioHasModule('tls');
const SRTP = KAMAILIO !== null && RTPENGINE !== null && kamailioHasModule('rtpengine');

describe.skipIf(!PG || !HAPROXY)('a cluster of three nodes on PostgreSQL behind HAProxy and Kamailio', () => {
  let cluster: LocalCluster | undefined;
  let db: pg.Pool | undefined;
  const open = new Set<WebSocket>();
  let microphone = new Int16Array(0);

  beforeAll(async () => {
    // The SIP phone's microphone: 1 s of silence, a question, then silence so RTP keeps flowing (G.711: 8 kHz).
    const question = speak('What time is it?').then((s) => resampleOnce(s, 16_000, 8000));
    cluster = await startLocalCluster({
      nodes: 3,
      srtp: SRTP,
      logLevel: process.env.LOG_LEVEL ?? 'warn',
      nodeConfig: {
        limits: { maxSessionsPerKey: CAP },
        store: { postgres: { leaseMs: LEASE_MS } },
        // Light models: this is about the cluster, not recognition (English only, no grammars, one TTS engine).
        // Pico where its voices are installed; elsewhere (no ../shared) the system's espeak-ng, no WASM to load.
        providers: {
          asr: { provider: 'pocketsphinx', grammar: 'off', languages: ['en'], spareDecoders: 1 },
          tts: picoAvailable() ? { provider: 'svoxpico' } : { provider: 'espeak', espeakEngine: 'process' },
        },
      },
    });
    db = new pg.Pool({ connectionString: cluster.databaseUrl, max: 4 });
    const narrow = await question;
    microphone = new Int16Array(8000 + narrow.length + 8000 * 30);
    microphone.set(narrow, 8000);
  }, 240_000);

  afterAll(async () => {
    for (const ws of open) ws.terminate();
    await db?.end();
    await cluster?.stop();
  }, 60_000);

  const nodeOf = async (callId: string): Promise<string | null> =>
    ((await db!.query<{ node: string }>('SELECT node FROM calls WHERE id = $1', [callId])).rows[0]?.node ?? null);

  /** A device call through the front door; rejects with the refusal's code. */
  async function call(): Promise<Call> {
    const c = await openDeviceCall(`${cluster!.httpUrl!.replace('http', 'ws')}/v1/ws`, { authorization: `Bearer ${cluster!.apiKey}` }, 10_000);
    open.add(c.ws);
    return c;
  }

  const hangUp = endDeviceCall;

  /**
   * Wait until the key's counted slots (those of nodes with a live lease) are `n`: a node releases a slot as the
   * socket closes, so a hang-up is not yet a free slot, and a dead node's slots stop counting when its lease lapses.
   */
  async function slotsCounted(n: number, withinMs = LEASE_MS * 4): Promise<number> {
    const sql = "SELECT count(*)::int AS n FROM call_slots s JOIN nodes l ON l.node = s.node WHERE l.heartbeat_at > now() - make_interval(secs => $1)";
    let held = -1;
    for (const end = Date.now() + withinMs; Date.now() < end; await sleep(50)) {
      held = (await db!.query<{ n: number }>(sql, [LEASE_MS / 1000])).rows[0].n;
      if (held === n) break;
    }
    return held;
  }

  /** The call answers a ping (its node and its path through HAProxy are alive). */
  async function alive(c: Call): Promise<boolean> {
    if (c.ws.readyState !== WebSocket.OPEN) return false;
    const id = Math.floor(Math.random() * 1e9);
    c.ws.send(JSON.stringify({ type: 'ping', id }));
    for (let i = 0; i < 40; i++) {
      if (c.events.some((e) => e.type === 'pong' && e.id === id)) return true;
      await sleep(50);
    }
    return false;
  }

  const record = async (baseUrl: string, id: string): Promise<{ status: number; body: Record<string, unknown> }> => {
    const res = await fetch(`${baseUrl}/v1/calls/${id}`, { headers: { authorization: `Bearer ${cluster!.apiKey}` } });
    return { status: res.status, body: (await res.json()) as Record<string, unknown> };
  };

  it('spreads calls over the nodes, and every node serves every call\'s record from PostgreSQL', async () => {
    const calls = [await call(), await call(), await call()];
    const nodes = await Promise.all(calls.map((c) => nodeOf(c.callId)));
    // leastconn: three calls held open land on three different nodes.
    expect(new Set(nodes).size).toBe(3);

    // A turn on the first call: the caller's line and the agent's reply go to the shared store.
    const first = calls[0];
    first.ws.send(JSON.stringify({ type: 'input.text', text: 'What time is it?' }));
    for (let i = 0; i < 200 && !first.events.some((e) => e.type === 'response.done'); i++) await sleep(50);
    expect(first.events.some((e) => e.type === 'response.done')).toBe(true);
    await Promise.all(calls.map(hangUp));

    // The end is written after the socket closes, within the flush interval (docs/scale-out.md, the consistency bound).
    const ended = async (id: string) => (await record(cluster!.nodes[0].httpUrl, id)).body.end_reason;
    for (const c of calls) for (let i = 0; i < 40 && !(await ended(c.callId)); i++) await sleep(50);
    for (const node of cluster!.nodes) {
      for (const c of calls) {
        const { status, body } = await record(node.httpUrl, c.callId);
        expect(status).toBe(200);
        expect(body.id).toBe(c.callId);
        expect(body.end_reason).not.toBeNull();
      }
      const { body } = await record(node.httpUrl, first.callId);
      const transcript = body.transcript as Array<{ role: string; text: string }>;
      expect(transcript.find((t) => t.role === 'caller')?.text).toBe('What time is it?');
      expect(transcript.some((t) => t.role === 'agent' && t.text.length > 0)).toBe(true);
    }
    // Through the front door too, wherever HAProxy sends the request.
    expect((await record(cluster!.httpUrl!, calls[2].callId)).status).toBe(200);
  });

  it.skipIf(!OPENSSL)('answers a call on the wss:// front door, and every node reaches PostgreSQL over TLS', async () => {
    const ca = readFileSync(cluster!.caFile!);
    const c = await openDeviceCall(`${cluster!.httpsUrl!.replace('https', 'wss')}/v1/ws`, { authorization: `Bearer ${cluster!.apiKey}` }, 10_000, { ca });
    open.add(c.ws);
    expect(await nodeOf(c.callId)).toMatch(/^node\d$/);
    expect(await alive(c)).toBe(true);
    await hangUp(c);
    // Every node's pool (application_name "voice-agent nodeN") holds connections, each one TLS.
    const conns = (
      await db!.query<{ app: string; ssl: boolean }>(
        "SELECT a.application_name AS app, s.ssl FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) WHERE a.application_name LIKE 'voice-agent node%'",
      )
    ).rows;
    expect(new Set(conns.map((r) => r.app))).toEqual(new Set(cluster!.nodes.map((n) => `voice-agent ${n.name}`)));
    expect(conns.every((r) => r.ssl)).toBe(true);
    // And a client that would talk in clear text is refused (pg_hba: hostssl only).
    const plain = new pg.Client({ connectionString: cluster!.databaseUrl.replace(/\?.*$/, '') });
    await expect(plain.connect()).rejects.toThrow(/no pg_hba.conf entry|SSL off/);
    await plain.end().catch(() => undefined);
  });

  it('holds the per-key cap across nodes', async () => {
    const held = [];
    for (let i = 0; i < CAP; i++) held.push(await call());
    // The calls are on several nodes, so no single node's count reached the cap.
    expect(new Set(await Promise.all(held.map((c) => nodeOf(c.callId)))).size).toBeGreaterThan(1);
    // One more, on whichever node: refused, because the key holds CAP calls across the cluster.
    await expect(call()).rejects.toThrow('session_limit');
    await expect(call()).rejects.toThrow('session_limit');
    await hangUp(held.pop()!);
    // The freed slot is free on every node, once the node's release (sent as the socket closes) committed.
    let again: Call | null = null;
    for (let i = 0; i < 20 && !again; i++) again = await call().catch(async (err: Error) => (err.message === 'session_limit' ? (await sleep(50), null) : Promise.reject(err)));
    expect(again).not.toBeNull();
    held.push(again!);
    await Promise.all(held.map(hangUp));
    expect(await slotsCounted(0)).toBe(0);
  });

  it('survives SIGKILL of a node: other calls go on, new calls succeed, the dead node\'s slots lapse with its lease', async () => {
    expect(await slotsCounted(0)).toBe(0); // the cap test's calls were hung up just before
    const calls = [];
    for (let i = 0; i < CAP; i++) calls.push(await call());
    const where = await Promise.all(calls.map((c) => nodeOf(c.callId)));
    const victim = cluster!.nodes.find((n) => where.includes(n.name))!;
    const lost = calls.filter((_, i) => where[i] === victim.name);
    const kept = calls.filter((_, i) => where[i] !== victim.name);
    expect(kept.length).toBeGreaterThan(0);

    const exited = new Promise<void>((r) => victim.process.once('exit', () => r()));
    victim.process.kill('SIGKILL');
    await exited;
    // Its callers' sockets close (HAProxy loses the server side); everyone else's calls still answer.
    for (const c of lost) {
      for (let i = 0; i < 40 && c.ws.readyState === WebSocket.OPEN; i++) await sleep(50);
      expect(c.ws.readyState).not.toBe(WebSocket.OPEN);
    }
    for (const c of kept) expect(await alive(c)).toBe(true);

    // Once the lease lapsed, the dead node's slots no longer count: the key has CAP - kept slots again, on the
    // live nodes (HAProxy's health check took the dead one out; a refused connection is retried elsewhere).
    // A survivor's lease renewal marks the dead node's calls lost, drops its slots, then its lease row.
    let gone = false;
    for (const end = Date.now() + LEASE_MS * 4; !gone && Date.now() < end; await sleep(50)) {
      gone = (await db!.query('SELECT 1 FROM nodes WHERE node = $1', [victim.name])).rowCount === 0;
    }
    expect(gone).toBe(true);
    expect(await slotsCounted(kept.length)).toBe(kept.length);
    const fresh = [];
    for (let i = 0; i < lost.length; i++) fresh.push(await call());
    expect(await Promise.all(fresh.map((c) => nodeOf(c.callId)))).not.toContain(victim.name);
    await expect(call()).rejects.toThrow('session_limit');

    // Its calls' records are closed as lost by the surviving nodes, and readable from them.
    const survivor = cluster!.nodes.find((n) => n !== victim)!;
    for (const c of lost) expect((await record(survivor.httpUrl, c.callId)).body.end_reason).toBe('node_lost');
    for (const c of kept) expect(await alive(c)).toBe(true);
    await Promise.all([...kept, ...fresh].map(hangUp));
  });

  it.skipIf(!KAMAILIO)('spreads SIP calls through Kamailio over the nodes', async () => {
    const live = (await db!.query<{ node: string }>('SELECT node FROM nodes')).rows.map((r) => r.node);
    const port = Number(cluster!.sipUri!.split(':').pop());
    const answered = [];
    for (let i = 0; i < live.length; i++) answered.push(await callThroughProxy(port));
    expect(answered.map((a) => a.status)).toEqual(live.map(() => 200));
    const ids = (await db!.query<{ node: string }>("SELECT node FROM calls WHERE transport = 'sip' AND network_id = ANY($1)", [answered.map((a) => a.callId)])).rows;
    // Least calls: each INVITE while the others are up goes to a node with none.
    expect(new Set(ids.map((r) => r.node)).size).toBe(live.length);
    await Promise.all(answered.map((a) => a.hangUp()));
  });

  /** The record of the SIP call whose Call-ID baresip logged (after log entry `from`), once the node wrote it. */
  async function sipRecord(phone: Baresip, from = 0): Promise<{ id: string; node: string; end_reason: string | null }> {
    let row: { id: string; node: string; end_reason: string | null } | undefined;
    for (let i = 0; i < 100 && !row; i++) {
      const ids = [...phone.log.slice(from).join('').matchAll(/^Call-ID: (\S+)/gim)].map((m) => m[1]);
      row = (await db!.query<{ id: string; node: string; end_reason: string | null }>("SELECT id, node, end_reason FROM calls WHERE transport = 'sip' AND network_id = ANY($1)", [ids])).rows[0];
      if (!row) await sleep(50);
    }
    if (!row) throw new Error('no record of the SIP call in PostgreSQL');
    return row;
  }

  async function hangUpPhone(phone: Baresip, recordId: string): Promise<void> {
    const since = performance.now();
    await phone.command('hangup');
    await phone.waitFor('CALL_CLOSED', 5000, since);
    let end: string | null = null;
    for (let i = 0; i < 60 && !end; i++) {
      end = (await db!.query<{ end_reason: string | null }>('SELECT end_reason FROM calls WHERE id = $1', [recordId])).rows[0]?.end_reason ?? null;
      if (!end) await sleep(50);
    }
    expect(end).toBe('caller_hangup');
  }

  it.skipIf(!SIP_TLS || !BARESIP)('answers a SIP call over TLS through Kamailio (certificate from the throwaway CA)', async () => {
    const port = Number(/:(\d+);transport=tls$/.exec(cluster!.sipTlsUri!)![1]);
    // Kamailio serves the CA's certificate for 127.0.0.1 (baresip 1.0 does not check it, so the test does).
    const socket = tls.connect({ host: '127.0.0.1', port, ca: readFileSync(cluster!.caFile!) });
    await new Promise<void>((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject));
    expect(socket.authorized).toBe(true);
    socket.destroy();

    const phone = await Baresip.start(microphone, { caFile: cluster!.caFile! });
    try {
      await phone.command('dial', cluster!.sipTlsUri!.replace('sip:', 'sip:agent@'));
      await phone.waitFor('CALL_ESTABLISHED');
      const sent = phone.log.join('');
      expect(sent).toMatch(/^INVITE sip:agent@127\.0\.0\.1:\d+;transport=tls SIP\/2\.0/m);
      expect(sent).toMatch(/^Via: SIP\/2\.0\/TLS /m);
      const row = await sipRecord(phone);
      expect(row.node).toMatch(/^node\d$/);
      await hangUpPhone(phone, row.id);
    } finally {
      await phone.stop();
      await phone.cleanup();
    }
  });

  it.skipIf(!SIP_TLS || !SRTP || !BARESIP)('answers an SRTP caller through rtpengine, the node on plain RTP, media both ways', async () => {
    // srtp-mand: baresip offers RTP/SAVP with SDES keys over TLS and drops a call answered without SRTP.
    const phone = await Baresip.start(microphone, { caFile: cluster!.caFile!, srtp: true });
    try {
      // A node on its own refuses the SRTP offer: it speaks plain RTP/AVP only.
      const live = (await db!.query<{ node: string }>('SELECT node FROM nodes')).rows.map((r) => r.node);
      const node = cluster!.nodes.find((n) => live.includes(n.name))!;
      await phone.command('dial', `sip:agent@${node.address}:${node.sipPort}`);
      expect((await phone.waitFor('CALL_CLOSED')).param).toMatch(/488/);

      const from = phone.log.length;
      const since = performance.now();
      await phone.command('dial', cluster!.sipTlsUri!.replace('sip:', 'sip:agent@'));
      await phone.waitFor('CALL_ESTABLISHED', 10_000, since);
      // The answer the caller got through Kamailio is SRTP, from rtpengine, which offered the node plain RTP.
      const answer = phone.log.slice(from).join('').split(/(?=SIP\/2\.0 200 OK)/).find((m) => /^SIP\/2\.0 200 OK[\s\S]*CSeq: \d+ INVITE/.test(m)) ?? '';
      expect(answer).toMatch(/^m=audio \d+ RTP\/SAVP /m);
      expect(answer).toMatch(/^a=crypto:\d+ AES_CM_128_HMAC_SHA1_80 inline:/m);
      const row = await sipRecord(phone, from);
      // The caller's words reached the node's recogniser through rtpengine, and the agent answered.
      let turns: Array<{ role: string; text: string }> = [];
      for (let i = 0; i < 300 && !turns.some((t) => t.role === 'agent'); i++) {
        const res = await fetch(`${cluster!.httpUrl}/v1/calls/${row.id}`, { headers: { authorization: `Bearer ${cluster!.apiKey}` } });
        turns = ((await res.json()) as { transcript?: Array<{ role: string; text: string }> }).transcript ?? [];
        if (!turns.some((t) => t.role === 'agent')) await sleep(100);
      }
      expect(turns.find((t) => t.role === 'caller')?.text.length).toBeGreaterThan(0);
      expect(turns.some((t) => t.role === 'agent')).toBe(true);
      await sleep(1500); // the reply plays out
      await hangUpPhone(phone, row.id);
      await phone.stop();
      // And the caller heard the agent's voice, decrypted from SRTP.
      const heard = await phone.voicedMs();
      console.log(`SRTP call on ${row.node}: caller "${turns.find((t) => t.role === 'caller')?.text}", agent "${turns.find((t) => t.role === 'agent')?.text}"; phone heard ${heard.voicedMs} ms voiced, loudest ${heard.loudest.toFixed(1)} dBFS`);
      expect({ voiced: heard.voicedMs > 500, loud: heard.loudest > -30 }).toEqual({ voiced: true, loud: true });
    } finally {
      await phone.stop();
      await phone.cleanup();
    }
  }, 60_000);
});

describe.skipIf(PG && HAPROXY)('PostgreSQL or HAProxy is not installed', () => {
  it('(skipped: `apt-get install postgresql haproxy kamailio kamailio-tls-modules rtpengine-daemon baresip`, or scripts/setup.sh --test, runs the cluster cases)', () => undefined);
});
