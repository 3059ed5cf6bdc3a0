import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import pino from 'pino';
import WebSocket from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../src/auth/auth.js';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { validateConfig } from '../src/config-schema.js';
import { buildServer, type VoiceServer } from '../src/server.js';
import { TEST_API_KEY } from './helpers/server.js';

/**
 * Issue 10, the HTTP and WebSocket doors: call records belong to the key that placed the call and network ids
 * never become record ids; realtime calls count against their own key and are refused with the limit's code;
 * /v1/chat/completions wants an API key; API keys are not taken from URLs; token lifetime is bounded;
 * ?language= is validated; keypad digits stay out of the logs. Real sockets on 127.0.0.1, a real pino log.
 */
const OTHER_KEY = 'second-tenant-key-not-secret';
const keyId = (key: string) => hashApiKey(key).slice(0, 8);
let server: VoiceServer;
let port: number;
let base: string;
const logLines: string[] = [];

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

beforeAll(async () => {
  const config = mergeConfig(DEFAULT_CONFIG, {
    host: '127.0.0.1',
    port: 0,
    auth: { apiKeyHashes: [hashApiKey(TEST_API_KEY), hashApiKey(OTHER_KEY)] },
    store: { path: path.join(tmpdir(), `voice-agent-security-${randomUUID()}.db`) },
    sip: { enabled: false },
    limits: { maxSessionsPerKey: 1 },
    chatCompletions: { enabled: true },
  });
  // The service's own log at info, as an operator would run it: what reaches it is what is asserted.
  const sink = new Writable({
    write(chunk: Buffer, _encoding, done) {
      logLines.push(...chunk.toString('utf8').split('\n').filter(Boolean));
      done();
    },
  });
  server = buildServer(config, pino({ level: 'info' }, sink));
  port = await server.start();
  await server.service.load();
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await server?.stop();
});

async function mint(key: string, ttl?: number): Promise<Response> {
  return fetch(`${base}/v1/tokens`, { method: 'POST', headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' }, body: JSON.stringify(ttl ? { ttl_s: ttl } : {}) });
}

async function token(key: string): Promise<string> {
  return ((await (await mint(key)).json()) as { token: string }).token;
}

/** Upgrade status of a WebSocket URL (101 when accepted). */
function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve) => {
    const ws = new WebSocket(url, { headers });
    ws.once('upgrade', () => {
      ws.close();
      resolve(101);
    });
    ws.once('unexpected-response', (_req, res) => {
      resolve(res.statusCode ?? 0);
      ws.terminate();
    });
    ws.once('error', () => resolve(0));
  });
}

/** A Twilio media stream placed with `credential`, keying DTMF digits; resolves when the record holds them. */
async function twilioCall(credential: string, callSid: string, digits: string[]): Promise<{ recordId: string; close(): Promise<void> }> {
  const earlier = await server.service.store.idForNetworkId(callSid);
  const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/telephony/twilio?token=${credential}`);
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('unexpected-response', (_req, res) => reject(new Error(`HTTP ${res.statusCode}`)));
  });
  const streamSid = `MZ${randomUUID().replaceAll('-', '')}`;
  ws.send(JSON.stringify({ event: 'connected', protocol: 'Call', version: '1.0.0' }));
  ws.send(JSON.stringify({ event: 'start', streamSid, start: { streamSid, callSid, tracks: ['inbound'], customParameters: {}, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } } }));
  for (const digit of digits) ws.send(JSON.stringify({ event: 'dtmf', streamSid, dtmf: { track: 'inbound_track', digit } }));
  const store = server.service.store;
  const deadline = performance.now() + 10_000;
  let recordId: string | null = null;
  for (;;) {
    // The newest record for this CallSid that holds these digits (an older call may share the CallSid).
    recordId = await store.idForNetworkId(callSid);
    const record = recordId && recordId !== earlier ? await readAny(recordId) : null;
    if (record?.transcript.some((t) => t.text.startsWith('DTMF'))) break;
    if (performance.now() > deadline) throw new Error(`no DTMF turn for ${callSid}`);
    await sleep(50);
  }
  return {
    recordId: recordId!,
    close: async () => {
      ws.send(JSON.stringify({ event: 'stop', streamSid }));
      ws.close();
      await sleep(200);
    },
  };
}

/** A record whatever its owner (test-side inspection only). */
async function readAny(id: string) {
  for (const key of [TEST_API_KEY, OTHER_KEY]) {
    const record = await server.service.store.get(id, keyId(key));
    if (record) return record;
  }
  return null;
}

const getRecord = (id: string, key: string) => fetch(`${base}/v1/calls/${id}`, { headers: { authorization: `Bearer ${key}` } });

describe('call records have owners', () => {
  it('only the key that placed a call reads it; a reused CallSid starts a new record, never appends to the old', async () => {
    const callSid = `CA${randomUUID().replaceAll('-', '')}`;
    const first = await twilioCall(await token(TEST_API_KEY), callSid, ['5', '#']);
    await first.close();
    expect(first.recordId).not.toBe(callSid);
    const mine = await getRecord(first.recordId, TEST_API_KEY);
    expect(mine.status).toBe(200);
    const record = (await mine.json()) as { network_id: string; transcript: { text: string }[] };
    expect(record.network_id).toBe(callSid);
    expect(record.transcript.map((t) => t.text)).toContain('DTMF: 5');
    expect((await getRecord(first.recordId, OTHER_KEY)).status).toBe(404);
    expect((await getRecord(callSid, TEST_API_KEY)).status).toBe(404);

    // Another tenant's stream reusing the ended call's CallSid.
    const second = await twilioCall(await token(OTHER_KEY), callSid, ['7', '#']);
    await second.close();
    expect(second.recordId).not.toBe(first.recordId);
    expect((await getRecord(second.recordId, TEST_API_KEY)).status).toBe(404);
    expect((await getRecord(second.recordId, OTHER_KEY)).status).toBe(200);
    const firstAgain = (await (await getRecord(first.recordId, TEST_API_KEY)).json()) as { transcript: { text: string }[] };
    expect(firstAgain.transcript.map((t) => t.text).join(' ')).not.toContain('7');
  });

  it('keypad digits never reach the log at info when transcripts may not be logged', () => {
    expect(server.service.config.privacy.logTranscripts).toBe(false);
    // The calls above keyed digits and were logged (their start, their end): only the digits must be absent.
    expect(logLines.some((line) => line.includes('media stream started'))).toBe(true);
    const leaking = logLines.filter((line) => /"digit"|DTMF: \d/.test(line));
    expect(leaking).toEqual([]);
  });
});

describe('keys, tokens and limits at the doors', () => {
  it('realtime calls count against their caller\'s key and a refusal says session_limit (close 1008), not 1011', async () => {
    const open = (key: string) =>
      new Promise<{ ws: WebSocket; first: { type: string; error?: { code: string } }; closed: Promise<{ code: number; reason: string }> }>((resolve, reject) => {
        const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/realtime?model=voice-agent`, { headers: { authorization: `Bearer ${key}` } });
        const closed = new Promise<{ code: number; reason: string }>((r) => ws.once('close', (code, reason) => r({ code, reason: reason.toString() })));
        ws.once('message', (data) => resolve({ ws, first: JSON.parse(String(data)) as { type: string; error?: { code: string } }, closed }));
        ws.once('error', reject);
      });
    const a = await open(TEST_API_KEY);
    expect(a.first.type).toBe('session.created');
    const refused = await open(TEST_API_KEY);
    expect(refused.first.error?.code).toBe('session_limit');
    expect(await refused.closed).toEqual({ code: 1008, reason: 'session_limit' });
    const b = await open(OTHER_KEY);
    expect(b.first.type).toBe('session.created');
    a.ws.close();
    b.ws.close();
    await Promise.all([a.closed, b.closed]);
    await sleep(100);
  });

  it('a phone stream over its key\'s limit is closed 1008 session_limit (the refusal table), not 1013', async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/realtime?model=voice-agent`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    const first = (await new Promise<Buffer>((resolve) => ws.once('message', resolve))).toString();
    expect(JSON.parse(first).type).toBe('session.created');
    // The key's one call is up: a Vonage stream placed with a token of the same key is refused at its start.
    const stream = new WebSocket(`ws://127.0.0.1:${port}/v1/telephony/vonage?token=${await token(TEST_API_KEY)}`);
    await new Promise((resolve) => stream.once('open', resolve));
    const closed = new Promise<{ code: number; reason: string }>((resolve) => stream.once('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    stream.send(JSON.stringify({ event: 'websocket:connected', 'content-type': 'audio/l16;rate=16000' }));
    expect(await closed).toEqual({ code: 1008, reason: 'session_limit' });
    ws.close();
    await new Promise((resolve) => ws.once('close', resolve));
    await sleep(100);
  });

  it('/v1/chat/completions and /v1/models take an API key, not a session token', async () => {
    const ask = (credential: string) =>
      fetch(`${base}/v1/chat/completions`, {
        method: 'POST',
        headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' },
        body: JSON.stringify({ model: 'voice-agent', messages: [{ role: 'user', content: 'hello' }] }),
      });
    const session = await token(TEST_API_KEY);
    expect((await ask(session)).status).toBe(401);
    expect((await fetch(`${base}/v1/models`, { headers: { authorization: `Bearer ${session}` } })).status).toBe(401);
    expect((await ask(TEST_API_KEY)).status).toBe(200);
  });

  it('API keys are refused in ?token= (session tokens only); headers still take them', async () => {
    const ws = `ws://127.0.0.1:${port}/v1/ws`;
    expect(await upgradeStatus(`${ws}?token=${TEST_API_KEY}`)).toBe(401);
    expect(await upgradeStatus(ws, { authorization: `Bearer ${TEST_API_KEY}` })).toBe(101);
    expect(await upgradeStatus(`${ws}?token=${await token(TEST_API_KEY)}`)).toBe(101);
    const offer = await fetch(`${base}/v1/webrtc/offer?token=${TEST_API_KEY}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ type: 'offer', sdp: 'v=0' }) });
    expect(offer.status).toBe(401);
    await sleep(200);
  });

  it('session tokens live at most an hour', async () => {
    expect((await mint(TEST_API_KEY, 86_400)).status).toBe(400);
    const hour = (await (await mint(TEST_API_KEY, 3600)).json()) as { expires_at: number };
    expect(hour.expires_at - Date.now() / 1000).toBeLessThanOrEqual(3601);
    expect(() => validateConfig(mergeConfig(DEFAULT_CONFIG, { auth: { tokenTtlS: 86_400 } }), 'test', DEFAULT_CONFIG)).toThrow(/tokenTtlS/);
  });

  it('?language= must be a language tag', async () => {
    const refusal = await new Promise<{ message: { code?: string }; close: number }>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${port}/v1/ws?language=${encodeURIComponent('en"}\n{"x')}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
      let message: { code?: string } = {};
      ws.on('message', (d) => (message = JSON.parse(String(d)) as { code?: string }));
      ws.on('close', (code) => resolve({ message, close: code }));
    });
    expect(refusal).toEqual({ message: expect.objectContaining({ code: 'invalid_message' }), close: 1008 });
  });
});
