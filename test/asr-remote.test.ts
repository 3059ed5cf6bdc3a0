import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { FRAME_SAMPLES } from '../src/audio/format.js';
import { hashApiKey } from '../src/auth/auth.js';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger, createLogger } from '../src/core/logger.js';
import { buildAsrServer, type AsrServer } from '../src/asr-server.js';
import { OpenAiBatchAsr } from '../src/providers/asr/openai-batch/index.js';
import { VllmRealtimeAsr } from '../src/providers/asr/vllm-realtime/index.js';
import type { AsrFinal, AsrPartial, AsrStream } from '../src/providers/asr/types.js';
import { speak } from './helpers/speech.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { TestDevice } from './helpers/device.js';

/**
 * The vLLM-realtime ASR client against this service's own asr-server mode (embedded PocketSphinx behind vLLM's
 * /v1/realtime protocol) over a real socket with real speech; then a whole call whose ASR runs remotely.
 */
const logger = process.env.LOG_LEVEL ? createLogger(process.env.LOG_LEVEL) : silentLogger();
let asrServer: AsrServer;
let url: string;
let httpUrl: string;
let askTime: Int16Array;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

beforeAll(async () => {
  const config = mergeConfig(DEFAULT_CONFIG, {
    host: '127.0.0.1',
    port: 0,
    auth: { apiKeyHashes: [hashApiKey(TEST_API_KEY)] },
    providers: { asr: { provider: 'pocketsphinx', spareDecoders: 1, maxIdleDecoders: 2 } },
    asrServer: { maxSessions: 4 },
  });
  asrServer = buildAsrServer(config, logger);
  const [port, speech] = await Promise.all([asrServer.start(), speak('What time is it?')]);
  askTime = speech;
  url = `ws://127.0.0.1:${port}/v1/realtime`;
  httpUrl = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await asrServer?.stop();
});

/** Push 20 ms frames, `paceMs` apart (0: as fast as possible). */
async function pushFrames(push: (pcm: Int16Array) => void, pcm: Int16Array, paceMs: number): Promise<void> {
  for (let off = 0; off < pcm.length; off += FRAME_SAMPLES) {
    push(pcm.subarray(off, off + FRAME_SAMPLES));
    if (paceMs > 0) await sleep(paceMs);
  }
}

/** Streams the question into `stream` (`paceMs` between frames): it must come back as English words about the time. */
async function askTheTime(stream: AsrStream, paceMs: number): Promise<{ final: AsrFinal; ms: number }> {
  await pushFrames((pcm) => stream.push(pcm), askTime, paceMs);
  const t0 = performance.now();
  const final = await stream.finalize();
  const ms = performance.now() - t0;
  expect(final.text.toLowerCase()).toContain('time');
  expect(final.language).toBe('en');
  return { final, ms };
}

/** Raw protocol client: collects server events. */
async function rawSession(headers: Record<string, string> = { authorization: `Bearer ${TEST_API_KEY}` }) {
  const ws = new WebSocket(url, { headers });
  const events: Array<Record<string, unknown>> = [];
  ws.on('message', (d) => events.push(JSON.parse(String(d)) as Record<string, unknown>));
  await new Promise<void>((resolve, reject) => {
    ws.once('open', () => resolve());
    ws.once('error', reject);
  });
  const waitFor = async (pred: (e: Record<string, unknown>) => boolean, ms = 10_000) => {
    const deadline = Date.now() + ms;
    for (;;) {
      const found = events.find(pred);
      if (found) return found;
      if (Date.now() > deadline) throw new Error(`timed out; got ${JSON.stringify(events)}`);
      await sleep(10);
    }
  };
  return { ws, events, waitFor, send: (e: unknown) => ws.send(typeof e === 'string' ? e : JSON.stringify(e)) };
}

describe('asr-server mode + vllm-realtime client', () => {
  it('transcribes real speech streamed over the socket: deltas as partials, done as the final with language', async () => {
    const asr = new VllmRealtimeAsr({ url, model: 'pocketsphinx-en-us', apiKey: TEST_API_KEY, languages: ['en'], logger });
    await asr.load();
    const partials: AsrPartial[] = [];
    const stream = asr.createStream({ language: 'en-GB', onPartial: (p) => partials.push(p) });
    // Real-time-ish pacing so partials can come back while "speaking".
    const { final, ms: finalMs } = await askTheTime(stream, 10);
    expect(final.audioMs).toBeCloseTo((askTime.length / 16000) * 1000, -2);
    expect(partials.length).toBeGreaterThan(0);
    // Deltas carry no language (as vLLM's): none is claimed for partials; the session keeps the call's own.
    expect(partials.every((p) => p.language === '')).toBe(true);

    // The same connection serves the next utterance (vLLM clears its queue after done), and a cancelled one
    // in between leaves no trace in it.
    await pushFrames((pcm) => stream.push(pcm), askTime.subarray(0, 8000), 0);
    stream.cancel();
    await pushFrames((pcm) => stream.push(pcm), askTime, 0);
    const second = await stream.finalize();
    expect(second.text.toLowerCase()).toContain('time');
    // An utterance with no audio needs no round trip.
    expect((await stream.finalize()).text).toBe('');
    stream.close();
    console.log(`remote final "${final.text}" ${finalMs.toFixed(1)} ms after the last frame (pushed at 2x real time); ${partials.length} partials`);
  });

  it('speaks the protocol with clear errors for bad input and keeps the session usable', async () => {
    const { ws, events, waitFor, send } = await rawSession();
    const created = await waitFor((e) => e.type === 'session.created');
    expect(String(created.id)).toMatch(/^sess-/);

    send({ type: 'input_audio_buffer.commit' });
    expect((await waitFor((e) => e.code === 'model_not_validated')).error).toMatch(/session\.update/);
    send({ type: 'session.update', model: 'whisper-large-v3' });
    expect((await waitFor((e) => e.code === 'model_not_found')).error).toMatch(/whisper-large-v3/);
    send({ type: 'session.update', model: 'pocketsphinx-en-us', language: 'fr' });
    expect((await waitFor((e) => e.code === 'unsupported_language')).error).toMatch(/fr/);
    send('{not json');
    await waitFor((e) => e.code === 'invalid_json');
    send({ type: 'input_audio_buffer.append', audio: '***' });
    await waitFor((e) => e.code === 'invalid_audio');
    send({ type: 'input_audio_buffer.append', audio: Buffer.from([1, 2, 3]).toString('base64') });
    expect((await waitFor((e) => e.code === 'invalid_audio' && String(e.error).includes('3 bytes'))).error).toBeTruthy();
    send({ type: 'response.create' });
    await waitFor((e) => e.code === 'unknown_event');

    // Still usable: the vLLM example client's sequence (commit, appends, commit final).
    send({ type: 'session.update', model: 'pocketsphinx-en-us', language: 'en' });
    send({ type: 'input_audio_buffer.commit' });
    const bytes = Buffer.from(askTime.buffer, askTime.byteOffset, askTime.byteLength);
    for (let off = 0; off < bytes.length; off += 4096) send({ type: 'input_audio_buffer.append', audio: bytes.subarray(off, off + 4096).toString('base64') });
    send({ type: 'input_audio_buffer.commit', final: true });
    const done = await waitFor((e) => e.type === 'transcription.done');
    const deltas = events.filter((e) => e.type === 'transcription.delta').map((e) => String(e.delta)).join('');
    expect(String(done.text).toLowerCase()).toContain('time');
    expect(done.language).toBe('en');
    expect(deltas).toBe(done.text);
    ws.close();
  });

  it('refuses bad credentials and unknown models at load() with a clear error', async () => {
    await expect(new VllmRealtimeAsr({ url, model: 'pocketsphinx-en-us', apiKey: 'wrong' }).load()).rejects.toThrow(/HTTP 401/);
    await expect(new VllmRealtimeAsr({ url, model: 'nope', apiKey: TEST_API_KEY }).load()).rejects.toThrow(/nope.*does not exist/);
    await expect(new VllmRealtimeAsr({ url: 'ws://127.0.0.1:9/v1/realtime', model: 'm', connectTimeoutMs: 2000 }).load()).rejects.toThrow(/ECONNREFUSED/);
  });

  it('openai-batch posts the utterance as WAV to /v1/audio/transcriptions and gets the final', async () => {
    const asr = new OpenAiBatchAsr({ baseUrl: `${httpUrl}/v1`, model: 'pocketsphinx-en-us', apiKey: TEST_API_KEY, responseFormat: 'verbose_json', logger });
    await asr.load();
    const stream = asr.createStream({ language: 'en' });
    const { final, ms } = await askTheTime(stream, 0);
    console.log(`batch final "${final.text}" in ${ms.toFixed(1)} ms (upload + full decode of ${(askTime.length / 16).toFixed(0)} ms of audio)`);

    const wrongModel = new OpenAiBatchAsr({ baseUrl: `${httpUrl}/v1`, model: 'whisper-1', apiKey: TEST_API_KEY, retries: 0 }).createStream({});
    wrongModel.push(askTime.subarray(0, 3200));
    await expect(wrongModel.finalize()).rejects.toThrow(/HTTP 404/);
  });
});

describe('a call whose ASR runs on the asr-server', () => {
  let service: TestServer;

  beforeAll(async () => {
    service = await startTestServer({
      providers: { asr: { provider: 'vllm-realtime', url, model: 'pocketsphinx-en-us', apiKey: TEST_API_KEY, languages: ['en'] } },
    });
  });

  afterAll(async () => {
    await service?.stop();
  });

  it('hears the caller through the remote ASR and answers; an ASR server outage is an asr_failed error, not a crash', async () => {
    const device = new TestDevice(service.wsUrl);
    await device.connect();
    await device.stream(askTime);
    const done = await device.silenceUntil((e) => e.type === 'response.done' && e.status === 'completed', 15_000);
    const final = device.eventsOf('transcript.final').find((e) => e.turn === done.turn)!;
    expect(String(final.text).toLowerCase()).toContain('time');
    expect(final.language).toBe('en');
    expect(device.eventsOf('response.tool_call').some((e) => e.name === 'get_current_time')).toBe(true);
    expect(device.audio.filter((a) => a.dbfs > -40).length).toBeGreaterThan(10);
    const metrics = device.eventsOf('turn.metrics').find((e) => e.turn === done.turn)!;
    const stages = (metrics.metrics as { stages: Record<string, number> }).stages;
    console.log(`call via asr-server: "${final.text}" → "${done.text}", stages ${JSON.stringify(stages)}`);

    // The ASR server goes away mid-call: the next turn reports asr_failed and the call stays up.
    await asrServer.stop();
    const since = performance.now();
    await device.stream(askTime);
    const err = await device.silenceUntil((e) => e.type === 'error' && e.code === 'asr_failed', 15_000, since);
    expect(String(err.message)).toMatch(/speech recognition failed/);
    await device.silence(200);
    expect(device.eventsOf('session.started').length).toBe(1);
    await device.close();
  });
});
