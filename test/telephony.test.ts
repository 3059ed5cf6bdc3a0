import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { FRAME_MS, FRAME_SAMPLES, rmsDbfs } from '../src/audio/format.js';
import { decodeAlaw, decodeMulaw, encodeAlaw, encodeMulaw } from '../src/audio/g711.js';
import { resampleOnce } from '../src/audio/resample.js';
import type { Session } from '../src/session/session.js';
import { lastVoicedFrame } from '../loadtest/run.js';
import { TwilioCaller } from '../loadtest/twilio-caller.js';
import { computeTwilioSignature } from '../src/transports/telephony/twilio-signature.js';
import { speak } from './helpers/speech.js';
import { mintSessionToken, sessionForNetworkCall, startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

/**
 * Phone calls over the providers' media-stream WebSockets, each side played by a real WebSocket client that
 * sends the provider's documented messages and plays agent audio out in real time (marks echoed when the
 * audio before them has played, `clear` dropping what is buffered) against a real server on the embedded
 * models. Narrowband (8 kHz) speech is recognised poorly by PocketSphinx, so the µ-law calls assert the
 * pipeline (a transcript, a spoken reply), not exact words; the 16 kHz Vonage call asserts the words.
 */
const TWILIO_AUTH_TOKEN = 'twilio-auth-token-for-tests';
let server: TestServer;
let askTime: Int16Array;
let goodbye: Int16Array;
let interruption: Int16Array;
let yes: Int16Array;

beforeAll(async () => {
  [server, askTime, goodbye, interruption, yes] = await Promise.all([
    startTestServer({ telephony: { twilio: { authToken: TWILIO_AUTH_TOKEN } } }),
    speak('What time is it?'),
    speak('Okay, bye bye. See you.'),
    speak('Stop, stop. I want to speak to a human please.', { padMs: 0 }),
    speak('Yes.'),
  ]);
});

afterAll(async () => {
  await server?.stop();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** Sends one item per 20 ms in real time (drift-corrected); returns each send time. */
class Clock {
  private next = performance.now();
  async run<T>(items: readonly T[], send: (item: T) => void): Promise<number[]> {
    if (this.next < performance.now() - 100) this.next = performance.now();
    const times: number[] = [];
    for (const item of items) {
      this.next += FRAME_MS;
      const wait = this.next - performance.now();
      if (wait > 1) await sleep(wait);
      send(item);
      times.push(performance.now());
    }
    return times;
  }
}

function frames16k(pcm: Int16Array): Int16Array[] {
  const out: Int16Array[] = [];
  for (let offset = 0; offset < pcm.length; offset += FRAME_SAMPLES) {
    const frame = new Int16Array(FRAME_SAMPLES);
    frame.set(pcm.subarray(offset, offset + FRAME_SAMPLES));
    out.push(frame);
  }
  return out;
}

function chunks(bytes: Uint8Array, size: number): Uint8Array[] {
  const out: Uint8Array[] = [];
  for (let offset = 0; offset + size <= bytes.length; offset += size) out.push(bytes.slice(offset, offset + size));
  return out;
}

/** Wait (sending silence through `silence`) until `predicate` holds. */
async function until(predicate: () => boolean, silence: () => void, timeoutMs = 15_000, what = 'condition'): Promise<void> {
  const clock = new Clock();
  const deadline = performance.now() + timeoutMs;
  while (!predicate()) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await clock.run([0, 0, 0, 0, 0], () => silence());
  }
}

const waitForSession = (networkId: string): Promise<Session> => sessionForNetworkCall(server, networkId);
const sessionToken = (): Promise<string> => mintSessionToken(server);

function twilioUrl(query = ''): string {
  return `ws://127.0.0.1:${server.port}/v1/telephony/twilio${query}`;
}

const SILENCE_16K = new Int16Array(FRAME_SAMPLES);

/** Telnyx's or Vonage's side of a stream: documented messages out, real-time playout of what comes back. */
class ProviderPeer {
  readonly received: { atMs: number; json?: Record<string, unknown>; binary?: Uint8Array }[] = [];
  readonly echoed: string[] = [];
  closeInfo: { code: number; reason: string } | null = null;
  readonly socket: WebSocket;
  private playheadMs = 0;
  private readonly timers = new Map<NodeJS.Timeout, string>();

  constructor(
    readonly provider: 'telnyx' | 'vonage',
    query: string,
    private readonly rate = 8000,
  ) {
    this.socket = new WebSocket(`ws://127.0.0.1:${server.port}/v1/telephony/${provider}${query}`);
    this.socket.on('close', (code, reason) => (this.closeInfo = { code, reason: reason.toString() }));
    this.socket.on('message', (data: Buffer, isBinary) => {
      const atMs = performance.now();
      if (isBinary) {
        const bytes = new Uint8Array(data);
        this.received.push({ atMs, binary: bytes });
        this.play(atMs, (bytes.length / 2 / this.rate) * 1000);
        return;
      }
      const json = JSON.parse(data.toString()) as Record<string, unknown>;
      this.received.push({ atMs, json });
      const event = json.event ?? json.action;
      if (event === 'media') this.play(atMs, (Buffer.from(String((json.media as { payload: string }).payload), 'base64').length / 8000) * 1000);
      if (event === 'mark' || event === 'notify') {
        const name = String(((json.mark ?? json.payload) as { name: string }).name);
        const timer = setTimeout(() => this.echo(name), Math.max(0, this.playheadMs - atMs));
        this.timers.set(timer, name);
      }
      if (event === 'clear') {
        this.playheadMs = atMs;
        for (const [timer, name] of this.timers) {
          clearTimeout(timer);
          if (provider === 'telnyx') this.echo(name); // Telnyx returns queued marks on clear
        }
        this.timers.clear();
        if (provider === 'vonage') this.send({ event: 'websocket:cleared' });
      }
    });
  }

  open(): Promise<void> {
    return new Promise((resolve, reject) => {
      this.socket.once('open', () => resolve());
      this.socket.once('error', reject);
    });
  }

  send(value: object): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(value));
  }

  sendBinary(bytes: Uint8Array): void {
    if (this.socket.readyState === WebSocket.OPEN) this.socket.send(bytes, { binary: true });
  }

  audio(): Uint8Array[] {
    return this.received.flatMap((r) => (r.binary ? [r.binary] : r.json?.event === 'media' ? [new Uint8Array(Buffer.from(String((r.json.media as { payload: string }).payload), 'base64'))] : []));
  }

  private play(atMs: number, ms: number): void {
    this.playheadMs = Math.max(this.playheadMs, atMs) + ms;
  }

  private echo(name: string): void {
    for (const [timer, n] of this.timers) if (n === name) this.timers.delete(timer);
    this.echoed.push(name);
    if (this.provider === 'telnyx') this.send({ event: 'mark', stream_id: 'S', mark: { name } });
    else this.send({ event: 'websocket:notify', payload: { name } });
  }
}

// First: its words are asserted, and it must not meet a recogniser adapted to earlier narrowband calls.
describe('Vonage WebSocket', () => {
  it('answers 16 kHz L16 speech and keypad digits, then hangs up after the goodbye has played', async () => {
    const peer = new ProviderPeer('vonage', `?token=${await sessionToken()}`, 16000);
    await peer.open();
    const uuid = 'aaaaaaaa-bbbb-4ccc-8ddd-eeeeeeeeeeee';
    peer.send({ event: 'websocket:connected', 'content-type': 'audio/l16;rate=16000', uuid, language: 'en' });
    const session = await waitForSession(uuid);
    const toBytes = (f: Int16Array) => new Uint8Array(f.buffer.slice(0));
    const clock = new Clock();
    const silence = () => peer.sendBinary(new Uint8Array(640));
    await clock.run(frames16k(askTime).map(toBytes), (b) => peer.sendBinary(b));
    await until(() => peer.echoed.some((m) => m.endsWith(':done')), silence, 20_000, 'the time reply');
    const first = session.transcript.find((t) => t.role === 'caller');
    expect(first?.text.toLowerCase()).toContain('time');
    const audio = peer.audio();
    expect(audio.every((p) => p.length === 640)).toBe(true);
    const pcm = (p: Uint8Array) => new Int16Array(p.buffer, p.byteOffset, p.length / 2);
    expect(audio.map((p) => rmsDbfs(pcm(p))).filter((db) => db > -40).length * FRAME_MS).toBeGreaterThan(400);
    expect(peer.received.some((r) => r.json?.action === 'notify')).toBe(true);

    const doneBefore = peer.echoed.filter((m) => m.endsWith(':done')).length;
    for (const digit of ['7', '#']) peer.send({ event: 'websocket:dtmf', digit, duration: 120 });
    await until(() => peer.echoed.filter((m) => m.endsWith(':done')).length > doneBefore, silence, 20_000, 'the keypad reply');
    expect(session.transcript.some((t) => t.role === 'caller' && t.text === 'DTMF: 7')).toBe(true);

    await clock.run(frames16k(goodbye).map(toBytes), (b) => peer.sendBinary(b));
    // "Okay, bye bye." may end a turn before "See you." carries it on: words carried from a turn already answered
    // are never a confident goodbye, so the agent asks first, and a "yes" ends the call.
    const asked = () => session.transcript.some((t) => t.role === 'agent' && /end the call/i.test(t.text));
    await until(() => peer.closeInfo !== null || asked(), silence, 20_000, 'the hang-up or its question');
    if (peer.closeInfo === null) {
      await until(() => peer.echoed.filter((m) => m.endsWith(':done')).length > doneBefore + 1 || peer.closeInfo !== null, silence, 20_000, 'the question played');
      await clock.run(frames16k(yes).map(toBytes), (b) => peer.sendBinary(b));
    }
    await until(() => peer.closeInfo !== null, silence, 20_000, 'the hang-up');
    const bye = peer.received.find((r) => (r.json?.payload as { name?: string } | undefined)?.name?.endsWith(':bye'));
    expect(bye).toBeDefined();
    expect(peer.echoed.some((m) => m.endsWith(':bye'))).toBe(true);
    expect(peer.closeInfo).toEqual({ code: 1000, reason: 'agent ended the call' });
    console.log(`vonage: "${first?.text}", then keypad, then "${session.transcript.filter((t) => t.role === 'caller').at(-1)?.text}" → hang-up`);
  });

  it('refuses a content type it cannot play', async () => {
    const peer = new ProviderPeer('vonage', `?token=${await sessionToken()}`);
    await peer.open();
    peer.send({ event: 'websocket:connected', 'content-type': 'audio/mpeg' });
    for (let i = 0; i < 100 && !peer.closeInfo; i++) await sleep(20);
    expect(peer.closeInfo?.code).toBe(1003);
  });
});

describe('Twilio Media Streams', () => {
  it('refuses unsigned and wrongly signed upgrades, and checks a credential when one is given', async () => {
    const status = (headers: Record<string, string>, query = '') =>
      new Promise<number>((resolve) => {
        const ws = new WebSocket(twilioUrl(query), { headers });
        ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
        ws.on('open', () => {
          resolve(101);
          ws.close();
        });
        ws.on('error', () => undefined);
      });
    expect(await status({})).toBe(403);
    expect(await status({ 'x-twilio-signature': computeTwilioSignature('wrong-token', twilioUrl()) })).toBe(403);
    // Signed for another URL (query changed after signing).
    expect(await status({ 'x-twilio-signature': computeTwilioSignature(TWILIO_AUTH_TOKEN, twilioUrl('?a=1')) }, '?a=2')).toBe(403);
    expect(await status({ 'x-twilio-signature': computeTwilioSignature(TWILIO_AUTH_TOKEN, twilioUrl()) })).toBe(101);
    // A valid signature plus a bad credential: the credential is still checked.
    expect(await status({ 'x-twilio-signature': computeTwilioSignature(TWILIO_AUTH_TOKEN, twilioUrl('?token=nope')) }, '?token=nope')).toBe(401);
    // Telnyx and Vonage need a credential.
    const telnyx = await new Promise<number>((resolve) => {
      const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/telephony/telnyx`);
      ws.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
      ws.on('open', () => resolve(101));
      ws.on('error', () => undefined);
    });
    expect(telnyx).toBe(401);
  });

  it('answers a spoken µ-law turn with exact 160-byte frames, marks, and only the heard reply in the history', async () => {
    const caller = new TwilioCaller(twilioUrl(), { authToken: TWILIO_AUTH_TOKEN, credential: TEST_API_KEY, parameters: { language: 'en' } });
    await caller.connect();
    const session = await waitForSession(caller.callSid);
    const clock = new Clock();
    const sent = await clock.run(frames16k(askTime), (f) => caller.sendFrame(f));
    const lastVoicedAt = sent[lastVoicedFrame(askTime)];
    await until(() => caller.echoedMarks.some((m) => m.endsWith(':done')), () => caller.sendFrame(SILENCE_16K), 20_000, 'the reply to be played');

    const media = caller.received.filter((r) => r.message.event === 'media' && r.atMs > lastVoicedAt);
    const payloads = media.map((r) => Buffer.from(String((r.message.media as { payload: string }).payload), 'base64'));
    expect(payloads.length).toBeGreaterThan(20);
    expect(payloads.every((p) => p.length === 160)).toBe(true);
    expect(media.every((r) => r.message.streamSid === caller.streamSid)).toBe(true);
    const voiced = payloads.map((p, i) => ({ i, dbfs: rmsDbfs(decodeMulaw(new Uint8Array(p))) })).filter((v) => v.dbfs > -40);
    expect(voiced.length * FRAME_MS).toBeGreaterThan(400);
    const v2v = media[voiced[0].i].atMs - lastVoicedAt;

    const marks = caller.received.filter((r) => r.message.event === 'mark').map((r) => String((r.message.mark as { name: string }).name));
    expect(marks.length).toBeGreaterThan(0);
    expect(caller.echoedMarks).toEqual(marks); // every mark echoed, in order, none cleared
    const callerTurn = session.transcript.find((t) => t.role === 'caller');
    const agentTurn = session.transcript.find((t) => t.role === 'agent');
    // The codec path is what this asserts: a caller turn was taken and answered (what the narrowband recogniser
    // heard is measured in BENCHMARKS.md and asserted by the phone dialogue in dialogue-call.test.ts).
    expect(callerTurn).toBeDefined();
    expect(agentTurn?.status).toBe('completed');
    expect(session.history.at(-1)).toEqual({ role: 'assistant', content: agentTurn?.text });
    console.log(`twilio turn "${callerTurn?.text}" → "${agentTurn?.text}": v2v ${v2v.toFixed(0)} ms, ${payloads.length} frames, marks ${marks.join(' ')}`);
    await caller.close();
    expect(server.server.service.sessions.has(caller.callSid)).toBe(false);
  });

  it('clears Twilio’s buffer on barge-in and keeps only what the caller heard', async () => {
    const caller = new TwilioCaller(twilioUrl(`?token=${await sessionToken()}`), { authToken: TWILIO_AUTH_TOKEN });
    await caller.connect();
    const session = await waitForSession(caller.callSid);
    const clock = new Clock();
    await clock.run(frames16k(askTime), (f) => caller.sendFrame(f));
    const firstAudio = () => caller.received.find((r) => r.message.event === 'media');
    await until(() => firstAudio() !== undefined, () => caller.sendFrame(SILENCE_16K), 20_000, 'agent audio');
    await clock.run(Array.from({ length: 25 }, () => SILENCE_16K), (f) => caller.sendFrame(f)); // 500 ms of the reply
    const bargeAt = performance.now();
    await clock.run(frames16k(interruption), (f) => caller.sendFrame(f));
    await until(() => caller.received.some((r) => r.message.event === 'clear'), () => caller.sendFrame(SILENCE_16K), 10_000, 'clear');

    const clear = caller.received.find((r) => r.message.event === 'clear')!;
    expect(clear.message).toEqual({ event: 'clear', streamSid: caller.streamSid });
    expect(clear.atMs).toBeGreaterThan(bargeAt);
    // What the caller heard of the interrupted reply is all the conversation keeps of it.
    await until(() => session.transcript.some((t) => t.role === 'agent' && t.status === 'interrupted'), () => caller.sendFrame(SILENCE_16K), 5000, 'interrupted reply');
    const interrupted = session.transcript.find((t) => t.role === 'agent' && t.status === 'interrupted')!;
    // For the log: agent audio usually stops at the caller's first loud frames, before the clear confirms it.
    const onsetAt = bargeAt + (interruption.findIndex((v) => Math.abs(v) > 500) / 16000) * 1000;
    const lastSent = caller.received.filter((r) => r.message.event === 'media' && r.atMs < clear.atMs).at(-1)!;
    const heardMs = clear.atMs - firstAudio()!.atMs;
    console.log(`twilio barge-in: agent audio stopped ${(lastSent.atMs - onsetAt).toFixed(0)} ms after the caller's onset, clear ${(clear.atMs - onsetAt).toFixed(0)} ms after it; ${heardMs.toFixed(0)} ms sent before the clear, "${interrupted.text}" kept`);
    expect(interrupted.text.length).toBeGreaterThan(0);
    expect(session.history.some((m) => m.role === 'assistant' && m.content === interrupted.text)).toBe(true);
    await caller.close();
  });

  it('hands keypad digits to the agent, while malformed and hostile streams are refused and closed without harm', async () => {
    const good = new TwilioCaller(twilioUrl(), { authToken: TWILIO_AUTH_TOKEN });
    await good.connect();
    const session = await waitForSession(good.callSid);
    const clock = new Clock();
    const goodCall = (async () => {
      await clock.run(Array.from({ length: 10 }, () => SILENCE_16K), (f) => good.sendFrame(f));
      for (const digit of ['4', '2', '#']) good.sendDtmf(digit);
      await until(() => good.echoedMarks.some((m) => m.endsWith(':done')), () => good.sendFrame(SILENCE_16K), 20_000, 'the keypad reply');
    })();

    // A stream that sends garbage between valid messages stays up.
    const noisy = new TwilioCaller(twilioUrl(), { authToken: TWILIO_AUTH_TOKEN });
    await noisy.connect();
    await waitForSession(noisy.callSid);
    noisy.sendRaw('{not json');
    noisy.sendRaw(JSON.stringify({ event: 'media', streamSid: noisy.streamSid, media: { payload: '@@not-base64@@' } }));
    noisy.sendRaw(JSON.stringify({ event: 'media', streamSid: noisy.streamSid, media: { payload: Buffer.alloc(4000).toString('base64') } })); // 500 ms in one chunk
    noisy.sendRaw('x'.repeat(100_000)); // over maxMessageBytes
    noisy.sendRaw(Buffer.from([1, 2, 3])); // binary
    noisy.sendRaw(JSON.stringify({ event: 'dtmf', dtmf: { digit: 'Z' } }));
    noisy.sendMulaw(new Uint8Array(160).fill(0xff));
    await sleep(300);
    expect(noisy.closeInfo).toBeNull();

    // A stream of nothing but garbage is closed with 1007.
    for (let i = 0; i < 60; i++) noisy.sendRaw(`garbage ${i}`);
    for (let i = 0; i < 100 && !noisy.closeInfo; i++) await sleep(20);
    expect(noisy.closeInfo).toEqual({ code: 1007, reason: 'too many malformed messages' });

    // A start in another audio format is refused with the reason.
    const wrong = new WebSocket(twilioUrl(), { headers: { 'x-twilio-signature': computeTwilioSignature(TWILIO_AUTH_TOKEN, twilioUrl()) } });
    await new Promise((resolve) => wrong.on('open', resolve));
    const closed = new Promise<{ code: number; reason: string }>((resolve) => wrong.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
    wrong.send(JSON.stringify({ event: 'start', streamSid: 'MZ1', start: { streamSid: 'MZ1', callSid: 'CA1', mediaFormat: { encoding: 'audio/l16', sampleRate: 16000, channels: 1 } } }));
    const refusal = await closed;
    expect(refusal.code).toBe(1003);
    expect(refusal.reason).toContain('unsupported media format');

    await goodCall;
    const keypad = session.transcript.find((t) => t.role === 'caller');
    expect(keypad?.text).toBe('DTMF: 4 2');
    expect(session.transcript.find((t) => t.role === 'agent')?.status).toBe('completed');
    const replyAudio = good.received.filter((r) => r.message.event === 'media').map((r) => rmsDbfs(decodeMulaw(new Uint8Array(Buffer.from(String((r.message.media as { payload: string }).payload), 'base64')))));
    expect(replyAudio.filter((db) => db > -40).length).toBeGreaterThan(10);
    await good.close();
    // The server is still healthy.
    expect((await fetch(`${server.httpUrl}/healthz`)).status).toBe(200);
  });
});

describe('Telnyx media streaming', () => {
  it('reorders out-of-order A-law frames and answers the turn', async () => {
    const authed = new ProviderPeer('telnyx', `?token=${await sessionToken()}`);
    await authed.open();
    const callControlId = 'v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ';
    let seq = 0;
    authed.send({ event: 'connected', version: '1.0.0' });
    authed.send({
      event: 'start',
      sequence_number: String(++seq),
      stream_id: 'S',
      start: { call_control_id: callControlId, call_session_id: 'x', from: '+1', to: '+2', custom_parameters: {}, media_format: { encoding: 'PCMA', sample_rate: 8000, channels: 1 } },
    });
    const session = await waitForSession(callControlId);
    const alaw = encodeAlaw(await resampleOnce(askTime, 16000, 8000));
    const frames = chunks(alaw, 160).map((payload, i) => ({ chunk: i + 1, payload }));
    // Swap neighbours in every group of three and repeat one frame: the order Telnyx does not guarantee.
    const shuffled: typeof frames = [];
    for (let i = 0; i < frames.length; i += 3) shuffled.push(...[frames[i + 1], frames[i], frames[i + 2]].filter((f) => f !== undefined));
    shuffled.splice(10, 0, shuffled[5]);
    const clock = new Clock();
    const sent = await clock.run(shuffled, (f) =>
      authed.send({ event: 'media', sequence_number: String(++seq), stream_id: 'S', media: { track: 'inbound', chunk: String(f.chunk), timestamp: String(f.chunk * 20), payload: Buffer.from(f.payload).toString('base64') } }),
    );
    let chunk = frames.length;
    const silence = Buffer.alloc(160, 0xd5).toString('base64');
    await until(() => authed.echoed.some((m) => m.endsWith(':done')), () => authed.send({ event: 'media', sequence_number: String(++seq), stream_id: 'S', media: { track: 'inbound', chunk: String(++chunk), payload: silence } }), 20_000, 'the reply');

    const audio = authed.audio();
    expect(audio.length).toBeGreaterThan(20);
    expect(audio.every((p) => p.length === 160)).toBe(true);
    expect(audio.map((p) => rmsDbfs(decodeAlaw(p))).filter((db) => db > -40).length * FRAME_MS).toBeGreaterThan(400);
    const callerTurn = session.transcript.find((t) => t.role === 'caller');
    // As in the µ-law test above: this asserts the reordering codec path took and answered a caller turn; what the
    // narrowband recogniser made of the first words of a call is measured in BENCHMARKS.md.
    expect(callerTurn).toBeDefined();
    expect(session.transcript.find((t) => t.role === 'agent')?.status).toBe('completed');
    console.log(`telnyx (A-law, ${shuffled.length} frames sent out of order, last at +${(sent.at(-1)! - sent[0]).toFixed(0)} ms): "${callerTurn?.text}"`);
    authed.send({ event: 'stop', sequence_number: String(++seq), stream_id: 'S', stop: { call_control_id: callControlId } });
    for (let i = 0; i < 100 && !authed.closeInfo; i++) await sleep(20);
    expect(authed.closeInfo?.code).toBe(1000);
  });
});
