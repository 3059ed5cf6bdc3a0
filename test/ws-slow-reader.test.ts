import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import WebSocket from 'ws';
import { mintSessionToken, startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { droppedFrames, serverBufferedMax, slowReaderWebSocket, smallServerSendBuffers } from './helpers/slow-reader.js';
import { WS_CLOSE_GRACE_MS } from '../src/server.js';

/**
 * A peer that stops reading, end to end, on each WebSocket transport: a real client over a TCP connection
 * with network-sized kernel buffers (helpers/slow-reader.ts) pauses its socket mid-reply, and the server's
 * `ws` send buffer must stay near limits.maxBufferedBytes (agent audio dropped and counted, protocol
 * messages kept) while the call and the node's other calls go on; once the client reads again it gets
 * what the protocol needs and the agent's later audio. Without the bound the realtime and Vonage cases fail
 * on it (measured against the transports before ws-outbound.ts: 199 648 and 38 609 bytes, limit + slack 24 576).
 */
const LIMIT = 16 * 1024;
/** Past the bound: the media message that crossed it, plus the control messages that are never dropped. */
const SLACK = 8 * 1024;

let server: TestServer;
/** The last case stops the server itself. */
let stopped = false;

beforeAll(async () => {
  server = await startTestServer({ limits: { maxBufferedBytes: LIMIT } });
  smallServerSendBuffers(server);
});

afterAll(async () => {
  if (!stopped) await server?.stop();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

async function until(predicate: () => boolean | Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await predicate())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Samples the server's largest send buffer until stopped: the bound must hold all along, not just at the end. */
function watchBuffered(): { stop(): number } {
  let max = 0;
  const timer = setInterval(() => (max = Math.max(max, serverBufferedMax(server))), 10);
  return {
    stop: () => {
      clearInterval(timer);
      return Math.max(max, serverBufferedMax(server));
    },
  };
}

/** Until half a second of agent audio was dropped, or (without a bound) the server's buffer outgrew it. */
async function waitForEpisode(transport: string, droppedBefore: number): Promise<void> {
  await until(async () => serverBufferedMax(server) > LIMIT + SLACK || (await droppedFrames(server, transport)) > droppedBefore + 25, 6000, 'agent audio to be dropped');
}

type Json = Record<string, unknown>;

/** One realtime connection and the events it has read. */
class RealtimePeer {
  readonly events: Json[] = [];
  closed = false;
  constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer) => this.events.push(JSON.parse(data.toString()) as Json));
    ws.on('close', () => (this.closed = true));
  }
  static async open(slow: boolean): Promise<RealtimePeer> {
    const path = '/v1/realtime?model=gpt-realtime';
    const headers = { authorization: `Bearer ${TEST_API_KEY}` };
    const peer = new RealtimePeer(slow ? slowReaderWebSocket(server, path, headers) : new WebSocket(`ws://127.0.0.1:${server.port}${path}`, { headers }));
    await until(() => peer.has('session.created'), 10_000, 'session.created');
    return peer;
  }
  has(type: string, from = 0): boolean {
    return this.events.slice(from).some((e) => e.type === type);
  }
  count(type: string, from = 0): number {
    return this.events.slice(from).filter((e) => e.type === type).length;
  }
  ask(text: string): number {
    const from = this.events.length;
    this.ws.send(JSON.stringify({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text }] } }));
    this.ws.send(JSON.stringify({ type: 'response.create' }));
    return from;
  }
}

/** The client reads again: what arrives later than `drainMs` after it resumed is audio sent after the episode. */
const DRAIN_MS = 1000;

describe('a realtime client that stops reading', () => {
  it('keeps the server buffer bounded, drops only audio, and the call goes on once it reads again', async () => {
    const slow = await RealtimePeer.open(true);
    onTestFinished(() => slow.ws.terminate());
    const droppedBefore = await droppedFrames(server, 'realtime');
    // The capabilities reply is ~10 s of speech: long enough to pause, drop, and read again within it.
    const from = slow.ask('What can you do?');
    await until(() => slow.has('response.output_audio.delta', from), 10_000, 'the first audio delta');
    slow.ws.pause();
    const watch = watchBuffered();

    // Another call on the same node is answered in full meanwhile.
    const other = await RealtimePeer.open(false);
    const otherFrom = other.ask('What time is it?');
    await until(() => other.has('response.done', otherFrom), 10_000, "the other call's reply");
    expect(other.count('response.output_audio.delta', otherFrom)).toBeGreaterThan(20);
    other.ws.close();

    await waitForEpisode('realtime', droppedBefore);
    const maxBuffered = watch.stop();
    expect(maxBuffered).toBeLessThanOrEqual(LIMIT + SLACK);
    expect(await droppedFrames(server, 'realtime')).toBeGreaterThan(droppedBefore + 25);
    expect(slow.has('response.done', from)).toBe(false);

    slow.ws.resume();
    const resumedAt = performance.now();
    const arrivals: number[] = [];
    slow.ws.on('message', (data: Buffer) => {
      if (data.includes('response.output_audio.delta')) arrivals.push(performance.now() - resumedAt);
    });
    // The reply goes on: its later audio comes at the pace of speech, long after the buffered part drained,
    // and it ends as the protocol says (response.done), with the one notice before.
    await until(() => slow.has('response.done', from), 12_000, 'response.done of the interrupted reply');
    expect(arrivals.filter((ms) => ms > DRAIN_MS).length).toBeGreaterThan(20);
    const notices = slow.events.filter((e) => e.type === 'error').map((e) => (e.error as Json).code);
    expect(notices).toEqual(['slow_consumer']);
    expect(slow.closed).toBe(false);
    slow.ws.close();
    console.log(`realtime: max server buffer ${maxBuffered} B (limit ${LIMIT}), ${(await droppedFrames(server, 'realtime')) - droppedBefore} frames dropped, ${arrivals.filter((ms) => ms > DRAIN_MS).length} deltas after the drain`);
  });
});

/** Vonage's side of a 24 kHz stream: binary audio both ways; notify actions (our marks) are recorded, not echoed. */
class VonagePeer {
  readonly audioAt: number[] = [];
  readonly notified: string[] = [];
  closed = false;
  private readonly silence: NodeJS.Timeout;
  private constructor(readonly ws: WebSocket) {
    ws.on('message', (data: Buffer, isBinary) => {
      if (isBinary) this.audioAt.push(performance.now());
      else {
        const json = JSON.parse(data.toString()) as Json;
        if (json.action === 'notify') this.notified.push(String((json.payload as Json).name));
      }
    });
    ws.on('close', () => (this.closed = true));
    // A phone stream never stops sending the caller's side, even when it stops reading ours.
    this.silence = setInterval(() => ws.readyState === WebSocket.OPEN && ws.send(new Uint8Array(960), { binary: true }), 20);
  }
  static async open(slow: boolean, uuid: string): Promise<VonagePeer> {
    const path = `/v1/telephony/vonage?token=${await mintSessionToken(server)}`;
    const ws = slow ? slowReaderWebSocket(server, path) : new WebSocket(`ws://127.0.0.1:${server.port}${path}`);
    await new Promise<void>((resolve, reject) => ws.once('open', resolve).once('error', reject));
    ws.send(JSON.stringify({ event: 'websocket:connected', 'content-type': 'audio/l16;rate=24000', uuid, language: 'en' }));
    return new VonagePeer(ws);
  }
  /** Keypad digits: the agent answers them (here with its ~9 s out-of-domain line). */
  keypad(): void {
    for (const digit of ['7', '#']) this.ws.send(JSON.stringify({ event: 'websocket:dtmf', digit, duration: 120 }));
  }
  close(): void {
    clearInterval(this.silence);
    this.ws.close();
  }
  terminate(): void {
    clearInterval(this.silence);
    this.ws.terminate();
  }
}

describe('a Vonage media stream that stops reading', () => {
  it('keeps the server buffer bounded, keeps the marks, and the call goes on once it reads again', async () => {
    const droppedBefore = await droppedFrames(server, 'vonage');
    const slow = await VonagePeer.open(true, 'aaaaaaaa-0000-4000-8000-00000000000a');
    onTestFinished(() => slow.terminate());
    await sleep(300);
    slow.keypad();
    await until(() => slow.audioAt.length > 0, 10_000, 'the first agent audio');
    slow.ws.pause();
    const watch = watchBuffered();

    // Another call on the same node is spoken to meanwhile.
    const other = await VonagePeer.open(false, 'aaaaaaaa-0000-4000-8000-00000000000b');
    await sleep(300);
    other.keypad();
    await until(() => other.audioAt.length > 50, 10_000, 'a second of the other call\'s reply');
    other.close();

    await waitForEpisode('vonage', droppedBefore);
    const maxBuffered = watch.stop();
    expect(maxBuffered).toBeLessThanOrEqual(LIMIT + SLACK);
    expect(await droppedFrames(server, 'vonage')).toBeGreaterThan(droppedBefore + 25);
    expect(slow.notified.some((name) => name.endsWith(':done'))).toBe(false);

    slow.ws.resume();
    const resumedAt = performance.now();
    // Marks are never dropped: the reply's end mark arrives.
    await until(() => slow.notified.some((name) => name.endsWith(':done')), 12_000, 'the end-of-reply mark');
    // What is left of that reply depends on the voice's pace (eSpeak ends it sooner than Pico): the call going on
    // is shown by the next turn's answer, which must reach the caller whole.
    const later = slow.audioAt.filter((at) => at - resumedAt > DRAIN_MS).length;
    const heardBefore = slow.audioAt.length;
    slow.keypad();
    await until(() => slow.audioAt.length > heardBefore + 50, 10_000, 'a second of the next reply');
    expect(slow.closed).toBe(false);
    slow.close();
    console.log(`vonage: max server buffer ${maxBuffered} B (limit ${LIMIT}), ${(await droppedFrames(server, 'vonage')) - droppedBefore} frames dropped, ${later} frames after the drain`);
  });
});

/** A device WebSocket call whose agent is talking ("What can you do?") when the client stops reading. */
async function pausedDevicePeer(): Promise<{ ws: WebSocket; events: Json[]; audioAt: number[]; closed: () => boolean }> {
  const ws = slowReaderWebSocket(server, '/v1/ws', { authorization: `Bearer ${TEST_API_KEY}` });
  onTestFinished(() => ws.terminate());
  const events: Json[] = [];
  const audioAt: number[] = [];
  let closed = false;
  ws.on('message', (data: Buffer, isBinary) => (isBinary ? audioAt.push(performance.now()) : events.push(JSON.parse(data.toString()) as Json)));
  ws.on('close', () => (closed = true));
  await until(() => events.some((e) => e.type === 'session.started'), 10_000, 'session.started');
  ws.send(JSON.stringify({ type: 'input.text', text: 'What can you do?' }));
  await until(() => audioAt.length > 0, 10_000, 'the first agent audio');
  ws.pause();
  return { ws, events, audioAt, closed: () => closed };
}

describe('a device WebSocket client that stops reading', () => {
  it('keeps the server buffer bounded, says slow_consumer once, and the call goes on once it reads again', async () => {
    const droppedBefore = await droppedFrames(server, 'ws');
    const { ws, events, audioAt, closed } = await pausedDevicePeer();
    const watch = watchBuffered();
    await waitForEpisode('ws', droppedBefore);
    const maxBuffered = watch.stop();
    expect(maxBuffered).toBeLessThanOrEqual(LIMIT + SLACK);
    expect(await droppedFrames(server, 'ws')).toBeGreaterThan(droppedBefore + 25);

    ws.resume();
    const resumedAt = performance.now();
    await until(() => audioAt.filter((at) => at - resumedAt > DRAIN_MS).length > 20, 10_000, 'later agent audio');
    await until(() => events.some((e) => e.type === 'response.done'), 10_000, 'response.done');
    expect(events.filter((e) => e.type === 'error').map((e) => e.code)).toEqual(['slow_consumer']);
    expect(closed()).toBe(false);
    ws.close();
    console.log(`device ws: max server buffer ${maxBuffered} B (limit ${LIMIT}), ${(await droppedFrames(server, 'ws')) - droppedBefore} frames dropped`);
  });
});

describe('stopping the server with a peer that stopped reading', () => {
  it('cuts the peer off after the close grace instead of waiting out ws’s 30 s close timeout', async () => {
    const droppedBefore = await droppedFrames(server, 'ws');
    await pausedDevicePeer();
    await waitForEpisode('ws', droppedBefore);
    // The peer will never read our close frame: the stop must not wait for its answer.
    stopped = true;
    const t0 = performance.now();
    await server.stop();
    const stopMs = performance.now() - t0;
    console.log(`stop with a paused peer: ${Math.round(stopMs)} ms (grace ${WS_CLOSE_GRACE_MS} ms)`);
    expect(stopMs).toBeLessThan(WS_CLOSE_GRACE_MS + 3000);
  });
});
