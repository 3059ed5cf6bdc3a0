import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import type { VoiceService } from '../src/service.js';
import { OutputPacer } from '../src/session/output-pacer.js';
import { hangUpAfterPlayout } from '../src/transports/playout.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

/**
 * "Hang up after the goodbye has played", on the device WebSocket: every frame of the goodbye the session
 * produced reaches the client before the close, and the close comes no sooner than that audio could play.
 */
let server: TestServer;
/** Agent frames the session handed to the transport, per call. */
const handed = new Map<string, number>();

beforeAll(async () => {
  server = await startTestServer();
  const service: VoiceService = server.server.service;
  const open = service.openSession.bind(service);
  // Count at the seam between session and transport (what the transport was asked to deliver).
  service.openSession = async (transport, output, options) => {
    let session: Awaited<ReturnType<VoiceService['openSession']>> | null = null;
    session = await open(transport, { ...output, audio: (frame) => {
      if (session) handed.set(session.callId, (handed.get(session.callId) ?? 0) + 1);
      output.audio(frame);
    } }, options);
    return session;
  };
});
afterAll(async () => {
  await server?.stop();
});

describe('device WebSocket hang-up after the goodbye', () => {
  it('delivers the whole goodbye, then closes 1000 once it has had time to play', async () => {
    const socket = new WebSocket(server.wsUrl, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    const events: Record<string, unknown>[] = [];
    const audioAt: number[] = [];
    socket.on('message', (data, isBinary) => {
      if (isBinary) audioAt.push(performance.now());
      else events.push(JSON.parse(String(data)) as Record<string, unknown>);
    });
    const closed = new Promise<{ code: number; at: number }>((resolve) => socket.on('close', (code) => resolve({ code, at: performance.now() })));
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
    });
    for (let i = 0; i < 100 && !events.some((e) => e.type === 'session.started'); i++) await new Promise((r) => setTimeout(r, 20));
    const callId = String(events.find((e) => e.type === 'session.started')?.callId);

    socket.send(JSON.stringify({ type: 'input.text', text: 'ok thanks bye' }));
    const close = await closed;
    expect(close.code).toBe(1000);
    expect(events.find((e) => e.type === 'response.done')).toMatchObject({ text: 'Goodbye! Thank you for calling.', status: 'completed' });
    expect(events.some((e) => e.type === 'call.action' && e.action === 'hangup')).toBe(true);

    // Every frame the session produced arrived, none after the close.
    const frames = handed.get(callId) ?? 0;
    expect(frames).toBeGreaterThan(25);
    expect(audioAt).toHaveLength(frames);
    expect(audioAt.at(-1)!).toBeLessThanOrEqual(close.at);
    // Paced at real time: the close comes after the audio's own length (less the pacer's 40 ms lead and a frame).
    expect(close.at - audioAt[0]).toBeGreaterThanOrEqual(frames * 20 - 40 - 20 - 20);
  });
});

describe('the shared hang-up rule', () => {
  it('waits for the pacer, then the transport queue, then the far end tail; bounded', async () => {
    const pacer = new OutputPacer(() => {}, 40);
    for (let i = 0; i < 10; i++) pacer.enqueue({ samples: new Int16Array(320), responseId: 'r', segment: 0 });
    let queued = 3;
    const drain = setInterval(() => (queued = Math.max(0, queued - 1)), 50);
    const started = performance.now();
    let hungUpAt = 0;
    await hangUpAfterPlayout({ session: { waitForPlayout: (ms) => pacer.whenIdle(ms) }, pending: () => queued, tailMs: 60, isClosed: () => false }, () => (hungUpAt = performance.now()));
    clearInterval(drain);
    // 200 ms of audio played, the transport queue drained (~150 ms, overlapping), then the 60 ms tail.
    expect(hungUpAt - started).toBeGreaterThanOrEqual(200 + 60 - 10);

    // A transport queue that never drains: hung up at the bound anyway.
    const stuckAt = performance.now();
    let stuckHungUp = 0;
    await hangUpAfterPlayout({ session: null, pending: () => 1, tailMs: 60, isClosed: () => false }, () => (stuckHungUp = performance.now()), 300);
    expect(stuckHungUp - stuckAt).toBeGreaterThanOrEqual(290);
    expect(stuckHungUp - stuckAt).toBeLessThan(1000);

    // A call that ended meanwhile is not hung up twice.
    let calls = 0;
    await hangUpAfterPlayout({ session: null, pending: () => 0, tailMs: 0, isClosed: () => true }, () => calls++);
    expect(calls).toBe(0);
    pacer.close();
  });
});
