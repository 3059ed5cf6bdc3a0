import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { Writable } from 'node:stream';
import { pino, type Logger } from 'pino';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import WebSocket, { WebSocketServer } from 'ws';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { resampleOnce } from '../src/audio/resample.js';
import { silentLogger } from '../src/core/logger.js';
import { Registry } from 'prom-client';
import { BackendPool, registerBackendMetrics } from '../src/providers/backends.js';
import { OpenAiBatchAsr } from '../src/providers/asr/openai-batch/index.js';
import { olderThan, VllmRealtimeAsr, type VllmRealtimeStream } from '../src/providers/asr/vllm-realtime/index.js';
import { OpenAiCompatibleLlm } from '../src/providers/llm/openai/index.js';
import type { LlmEvent, ToolDefinition } from '../src/providers/llm/types.js';
import { spawnSync } from 'node:child_process';
import { createTtsProvider, OpenAiSpeechTts } from '../src/providers/tts/index.js';
import { speak } from './helpers/speech.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { TextCaller } from './helpers/text-caller.js';

/**
 * Remote stages against servers on 127.0.0.1 that speak the protocols as vLLM's code does (read from
 * vllm/entrypoints/openai/realtime/connection.py and vllm/model_executor/models/voxtral_realtime.py), and as
 * OpenAI-compatible /v1/audio/speech servers stream PCM: the vLLM fixes, failover between servers, remote TTS.
 */
const logger = silentLogger();
/** The embedded fallback speaks with the system's espeak-ng program (starts at once; the WASM build takes seconds to load). */
const noEspeak = spawnSync('espeak-ng', ['--version'], { stdio: 'ignore' }).status !== 0;
const MODEL = 'mistralai/Voxtral-Mini-4B-Realtime-2602';
/** The fake model's decode window (Voxtral's is 80 ms steps plus look-ahead; a larger one keeps the test short). */
const WINDOW = 6400;
const SPEECH_RMS = 300;

let speech: Int16Array;
let reply24k: Int16Array;

beforeAll(async () => {
  const raw = await speak('What time is it? I would like to book a table for two.');
  // Cut at the last loud sample, then trim the start so the utterance ends 300 ms into a decode window: the model
  // decodes that window only when trailing silence completes it.
  let last = raw.length - 1;
  while (last > 0 && Math.abs(raw[last]) < 500) last--;
  const cut = raw.subarray(0, last + 1);
  const excess = (((cut.length - 4800) % WINDOW) + WINDOW) % WINDOW;
  speech = cut.slice(excess);
  reply24k = await resampleOnce(await speak('It is ten past three.'), INTERNAL_SAMPLE_RATE, 24_000);
});

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function rms(pcm: Int16Array): number {
  let sum = 0;
  for (const s of pcm) sum += s * s;
  return Math.sqrt(sum / Math.max(1, pcm.length));
}

/** Which whole windows of `pcm` a window-decoding model hears speech in (what the fake server transcribes). */
function speechWindows(pcm: Int16Array): number[] {
  const out: number[] = [];
  for (let w = 0; (w + 1) * WINDOW <= pcm.length; w++) if (rms(pcm.subarray(w * WINDOW, (w + 1) * WINDOW)) > SPEECH_RMS) out.push(w);
  return out;
}

function withSilence(pcm: Int16Array, ms: number): Int16Array {
  const out = new Int16Array(pcm.length + (ms * INTERNAL_SAMPLE_RATE) / 1000);
  out.set(pcm);
  return out;
}

async function pushAll(stream: { push(pcm: Int16Array): void }, pcm: Int16Array, paceMs = 0): Promise<void> {
  for (let off = 0; off < pcm.length; off += FRAME_SAMPLES) {
    stream.push(pcm.subarray(off, off + FRAME_SAMPLES));
    if (paceMs > 0) await sleep(paceMs);
  }
}

interface FakeRealtimeOptions {
  /** The generation ends on its own after this many words (a token limit): an unsolicited `done`. */
  maxWords?: number;
  /** The first generation fails after its first word with `processing_error`, leaving its audio queued. */
  failFirstGeneration?: boolean;
  /** A build before PR #33963: `commit{final}` is taken as a plain commit and ignored while generating. */
  ignoreFinal?: boolean;
  /** A build before PR #36934 started with --api-key: every WebSocket upgrade with credentials gets HTTP 500. */
  authBug?: boolean;
  /** What GET /version answers (vLLM's api_server route). */
  version?: string;
}

/**
 * vLLM's /v1/realtime as connection.py runs it, with a stand-in for Voxtral that decodes whole windows only and
 * "hears" a word (w<window index>) in each window with speech energy. One audio queue per connection; a plain
 * commit starts the one generation; `final` queues the end sentinel; `done` carries text and usage, no language;
 * the queue is cleared after `done` only, not after an error.
 */
class FakeVllmRealtime {
  readonly server: Server;
  readonly wss = new WebSocketServer({ noServer: true });
  connections = 0;
  finalCommits = 0;
  private generations = 0;
  private readonly sockets = new Set<WebSocket>();
  port = 0;

  constructor(private readonly options: FakeRealtimeOptions = {}) {
    this.server = createServer((req, res) => {
      if (req.url === '/version') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ version: this.options.version ?? '0.18.1' }));
      } else if (req.url === '/v1/models') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'list', data: [{ id: MODEL, object: 'model' }] }));
      } else res.writeHead(404).end();
    });
    this.server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => {
      if (this.options.authBug && req.headers.authorization) {
        socket.end('HTTP/1.1 500 Internal Server Error\r\ncontent-length: 21\r\nconnection: close\r\n\r\nInternal Server Error');
        return;
      }
      this.wss.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws));
    });
  }

  get url(): string {
    return `ws://127.0.0.1:${this.port}/v1/realtime`;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    this.port = (this.server.address() as AddressInfo).port;
    return this;
  }

  /** The server process dies: connections drop, nothing listens any more. */
  async kill(): Promise<void> {
    for (const ws of this.sockets) ws.terminate();
    this.server.closeAllConnections();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }

  private onConnection(ws: WebSocket): void {
    this.connections++;
    this.sockets.add(ws);
    ws.on('close', () => this.sockets.delete(ws));
    const queue: Array<Int16Array | null> = [];
    let validated = false;
    let labels = 0;
    let gen: { buf: Int16Array; words: string[]; fail: boolean } | null = null;
    const send = (e: Record<string, unknown>): void => ws.send(JSON.stringify(e));
    const finish = (): void => {
      const g = gen;
      gen = null;
      if (!g) return;
      const text = g.words.map((w) => ` ${w}`).join('');
      send({ type: 'transcription.done', text, usage: { prompt_tokens: 40, completion_tokens: g.words.length, total_tokens: 40 + g.words.length } });
      queue.length = 0; // "Clear queue for next utterance"
    };
    const pump = (): void => {
      while (gen) {
        if (gen.buf.length >= WINDOW) {
          const window = gen.buf.subarray(0, WINDOW);
          gen.buf = gen.buf.slice(WINDOW);
          const label = labels++;
          if (rms(window) > SPEECH_RMS) {
            const word = `w${label}`;
            gen.words.push(word);
            send({ type: 'transcription.delta', delta: ` ${word}` });
            if (gen.fail) {
              // _run_generation's except: an error event, no done, and the audio queue left as it is.
              gen = null;
              send({ type: 'error', error: 'CUDA error: an illegal memory access was encountered', code: 'processing_error' });
              return;
            }
            if (this.options.maxWords && gen.words.length >= this.options.maxWords) {
              finish();
              return;
            }
          }
          continue;
        }
        const next = queue.shift();
        if (next === undefined) return;
        if (next === null) {
          finish(); // the partial window left in buf is never decoded
          return;
        }
        const merged = new Int16Array(gen.buf.length + next.length);
        merged.set(gen.buf);
        merged.set(next, gen.buf.length);
        gen.buf = merged;
      }
    };
    send({ type: 'session.created', id: `sess-${this.connections}`, created: 0 });
    ws.on('message', (data) => {
      const e = JSON.parse(String(data)) as { type: string; audio?: string; final?: boolean; model?: string };
      if (e.type === 'session.update') validated = true;
      else if (e.type === 'input_audio_buffer.append') {
        const bytes = Buffer.from(e.audio ?? '', 'base64');
        queue.push(new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.length)));
        pump();
      } else if (e.type === 'input_audio_buffer.commit') {
        if (!validated) return send({ type: 'error', error: 'Model not validated.', code: 'model_not_validated' });
        if (e.final && !this.options.ignoreFinal) {
          this.finalCommits++;
          queue.push(null);
          pump();
        } else if (!gen) {
          gen = { buf: new Int16Array(0), words: [], fail: this.options.failFirstGeneration === true && this.generations === 0 };
          this.generations++;
          pump();
        } // else: "Generation already in progress, ignoring commit"
      } else send({ type: 'error', error: `Unknown event type: ${e.type}`, code: 'unknown_event' });
    });
  }
}

const fakes: FakeVllmRealtime[] = [];
async function fake(options: FakeRealtimeOptions = {}): Promise<FakeVllmRealtime> {
  const f = await new FakeVllmRealtime(options).start();
  fakes.push(f);
  return f;
}
const streams: VllmRealtimeStream[] = [];
function open(asr: VllmRealtimeAsr, language = 'fr'): VllmRealtimeStream {
  const s = asr.createStream({ language });
  streams.push(s);
  return s;
}

afterEach(async () => {
  for (const s of streams.splice(0)) s.close();
  await Promise.allSettled(fakes.splice(0).map((f) => f.kill()));
});

const words = (windows: number[]): string => windows.map((w) => `w${w}`).join(' ');

describe('vllm-realtime against vLLM realtime behaviour', () => {
  it('sends trailing silence before the final commit so the last window is decoded; reports no language', async () => {
    const server = await fake();
    const padded = new VllmRealtimeAsr({ url: server.url, model: MODEL, logger });
    await padded.load();
    const stream = open(padded);
    await pushAll(stream, speech);
    const final = await stream.finalize();
    const heard = speechWindows(withSilence(speech, 500));
    const lastWindow = Math.floor(speech.length / WINDOW);
    expect(heard).toContain(lastWindow);
    expect(final.text).toBe(words(heard));
    // vLLM's done has no language: none is reported (the session keeps its own), not the requested 'fr'.
    expect(final.language).toBe('');
    expect(final.audioMs).toBeCloseTo((speech.length * 1000) / INTERNAL_SAMPLE_RATE, 0);

    // Without the padding the model never decodes the last, partial window: the last words are lost.
    const unpadded = open(new VllmRealtimeAsr({ url: server.url, model: MODEL, logger, trailingSilenceMs: 0 }));
    await pushAll(unpadded, speech);
    const lost = await unpadded.finalize();
    expect(lost.text).toBe(words(speechWindows(speech)));
    expect(lost.text).not.toContain(`w${lastWindow}`);
  });

  it('after a generation error drops the connection (vLLM keeps the failed audio queued) and decodes the next utterance cleanly', async () => {
    const server = await fake({ failFirstGeneration: true });
    const asr = new VllmRealtimeAsr({ url: server.url, model: MODEL, logger, finalTimeoutMs: 3000 });
    const stream = open(asr);
    await sleep(50);
    await pushAll(stream, speech);
    await expect(stream.finalize()).rejects.toThrow(/processing_error|illegal memory access/);
    await pushAll(stream, speech);
    const second = await stream.finalize();
    // On the old connection the stale audio (and its end sentinel) would have answered instead.
    expect(second.text).toBe(words(speechWindows(withSilence(speech, 500))));
    expect(server.connections).toBe(2);
  });

  it('an unsolicited done (the generation hit its token limit mid-utterance) is not the final and costs no timeout', async () => {
    const server = await fake({ maxWords: 2 });
    const stream = open(new VllmRealtimeAsr({ url: server.url, model: MODEL, logger, finalTimeoutMs: 3000 }));
    await sleep(50);
    // Paced, so the server's own done arrives while the caller still speaks.
    await pushAll(stream, speech, 2);
    const t0 = performance.now();
    const final = await stream.finalize();
    const ms = performance.now() - t0;
    const spoken = final.text.split(' ');
    // The first generation's two words start the utterance; the rest came from the generations after it.
    expect(spoken.slice(0, 2)).toEqual(words(speechWindows(speech).slice(0, 2)).split(' '));
    expect(spoken.length).toBeGreaterThan(2);
    expect(ms).toBeLessThan(1000);
  });

  it('names the vLLM version when a build ignores commit{final} or fails WebSockets under --api-key', async () => {
    const old = await fake({ ignoreFinal: true });
    const stream = open(new VllmRealtimeAsr({ url: old.url, model: MODEL, logger, finalTimeoutMs: 400 }));
    await pushAll(stream, speech);
    await expect(stream.finalize()).rejects.toThrow(/commit\{final\}.*0\.18\.0|0\.18\.0.*commit\{final\}/);

    const buggy = await fake({ authBug: true });
    await expect(new VllmRealtimeAsr({ url: buggy.url, model: MODEL, apiKey: 'k', logger }).load()).rejects.toThrow(
      /HTTP 500.*--api-key.*0\.18\.0/,
    );

    // An old release is named at start already (GET /version), before a call meets its bugs.
    const older = await fake({ version: '0.17.1+cu130' });
    const { logger: log, lines } = logSink();
    await new VllmRealtimeAsr({ url: older.url, model: MODEL, logger: log }).load();
    expect(lines.some((l) => l.level === 40 && l.version === '0.17.1+cu130' && /older than 0\.18\.0/.test(String(l.msg)))).toBe(true);
    expect(olderThan('0.18.0rc1', '0.18.0')).toBe(false);
    expect(olderThan('0.9.2', '0.18.0')).toBe(true);
  });

  it('fails over between two servers: connect failure, and a server dying mid-utterance (replayed on the other)', async () => {
    const a = await fake();
    const b = await fake();
    const asr = new VllmRealtimeAsr({ urls: [a.url, b.url], model: MODEL, logger, failover: { downMs: 10_000 } });
    const stream = open(asr);
    await sleep(50);
    expect(a.connections).toBe(1);
    await pushAll(stream, speech.subarray(0, speech.length >> 1));
    await a.kill();
    await sleep(50);
    await pushAll(stream, speech.subarray(speech.length >> 1));
    const final = await stream.finalize();
    expect(final.text).toBe(words(speechWindows(withSilence(speech, 500))));
    expect(b.connections).toBe(1);
    const [down, up] = asr.backends.stats();
    expect(down).toMatchObject({ url: a.url, up: false, failures: 1 });
    expect(up).toMatchObject({ url: b.url, up: true, failures: 0 });

    // A new call goes straight to the server that is up.
    const next = open(asr);
    await pushAll(next, speech);
    expect((await next.finalize()).text).toBe(final.text);
    expect(b.connections).toBe(2);
  });
});

/** An HTTP server on 127.0.0.1:0 that closes everything at the end of the test. */
const https: Server[] = [];
async function http(handler: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<{ base: string; server: Server }> {
  const server = createServer((req, res) => {
    let body = '';
    req.on('data', (c: Buffer) => (body += c.toString('utf8')));
    req.on('end', () => handler(req, res, body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  https.push(server);
  return { base: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1`, server };
}
async function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  await new Promise<void>((resolve) => server.close(() => resolve()));
}
afterEach(async () => {
  await Promise.allSettled(https.splice(0).map(closeServer));
});

function logSink(): { logger: Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(JSON.parse(chunk.toString('utf8')) as Record<string, unknown>);
      done();
    },
  });
  return { logger: pino<never>({ level: 'info' }, sink), lines };
}

const sseReply = (res: ServerResponse, text: string): void => {
  res.writeHead(200, { 'content-type': 'text/event-stream' });
  res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: text }, finish_reason: null }] })}\n\n`);
  res.write(`data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n`);
  res.end('data: [DONE]\n\n');
};

async function collect(llm: OpenAiCompatibleLlm, tools: ToolDefinition[] = []): Promise<LlmEvent[]> {
  const out: LlmEvent[] = [];
  for await (const e of llm.stream({ messages: [{ role: 'user', content: 'hi' }], tools, language: 'en', signal: new AbortController().signal })) out.push(e);
  return out;
}

describe('LLM and batch ASR against vLLM answers', () => {
  const timeTool: ToolDefinition = { name: 'get_current_time', description: 'time', parameters: { type: 'object', properties: {} } };

  it('detects the 400 of a vLLM without --enable-auto-tool-choice, says so, and goes on without tools', async () => {
    const bodies: Array<{ tools?: unknown[] }> = [];
    const { base } = await http((_req, res, body) => {
      const parsed = JSON.parse(body) as { tools?: unknown[] };
      bodies.push(parsed);
      if (parsed.tools) {
        // vLLM's serving_chat.py message for this case.
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'error', message: '"auto" tool choice requires --enable-auto-tool-choice and --tool-call-parser to be set', type: 'BadRequestError', code: 400 }));
      } else sseReply(res, 'Hello.');
    });
    const { logger: log, lines } = logSink();
    const llm = new OpenAiCompatibleLlm({ baseUrl: base, model: 'm', logger: log, retries: 0 });
    const events = await collect(llm, [timeTool]);
    expect(events).toEqual([{ type: 'text', text: 'Hello.' }, { type: 'done', finishReason: 'stop' }]);
    expect(bodies.map((b) => b.tools !== undefined)).toEqual([true, false]);
    expect(lines.some((l) => l.level === 50 && /--enable-auto-tool-choice/.test(String(l.msg)))).toBe(true);
    // Remembered: the next turn does not pay for the refused request again.
    await collect(llm, [timeTool]);
    expect(bodies.length).toBe(3);
    expect(bodies[2].tools).toBeUndefined();
  });

  it('fails over to the second server when the first is gone, before any token, and marks it down', async () => {
    const dead = await http(() => undefined);
    await closeServer(dead.server);
    const alive = await http((_req, res) => sseReply(res, 'From the second server.'));
    const llm = new OpenAiCompatibleLlm({ baseUrls: [dead.base, alive.base], model: 'm', logger, retries: 0, timeoutMs: 2000 });
    expect(await collect(llm)).toContainEqual({ type: 'text', text: 'From the second server.' });
    const [first, second] = llm.backends.stats();
    expect(first).toMatchObject({ up: false, failures: 1 });
    expect(second).toMatchObject({ up: true, requests: 1 });
    // While it is down the first server is not asked first.
    await collect(llm);
    expect(llm.backends.stats()[0].requests).toBe(1);
    // Per-backend series for /metrics.
    const registry = new Registry();
    registerBackendMetrics(registry, [llm, { name: 'embedded' }]);
    const text = await registry.metrics();
    expect(text).toContain(`voice_agent_backend_up{stage="llm",backend="${dead.base}/chat/completions"} 0`);
    expect(text).toContain(`voice_agent_backend_requests{stage="llm",backend="${alive.base}/chat/completions"} 2`);
    expect(text).toContain(`voice_agent_backend_failures{stage="llm",backend="${dead.base}/chat/completions"} 1`);
  });

  it('does not ask vLLM for verbose_json for a Voxtral model, and drops it when a server refuses it', async () => {
    const formats: string[] = [];
    const { base } = await http((req, res, body) => {
      const format = /name="response_format"\r\n\r\n([a-z_]+)/.exec(body)?.[1] ?? '';
      formats.push(format);
      if (format === 'verbose_json') {
        res.writeHead(400, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ object: 'error', message: 'Currently do not support verbose_json for this model: no segment timestamps', code: 400 }));
        return;
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ text: ' What time is it?' }));
    });
    const clip = speech.subarray(0, 8000);
    const voxtral = new OpenAiBatchAsr({ baseUrl: base, model: 'mistralai/Voxtral-Mini-3B-2507', responseFormat: 'verbose_json', logger });
    const s1 = voxtral.createStream({ language: 'en' });
    s1.push(clip);
    expect((await s1.finalize()).text).toBe('What time is it?');
    expect(formats).toEqual(['json']);

    const other = new OpenAiBatchAsr({ baseUrl: base, model: 'some-asr', responseFormat: 'verbose_json', logger, retries: 0 });
    const s2 = other.createStream({ language: 'en' });
    s2.push(clip);
    expect((await s2.finalize()).text).toBe('What time is it?');
    expect(formats).toEqual(['json', 'verbose_json', 'json']);
  });
});

type SpeechMode = 'stream' | 'die-mid-reply' | 'unavailable';

/** An OpenAI-compatible /v1/audio/speech server streaming 24 kHz PCM16 in chunks as it "synthesizes". */
async function speechServer(mode: SpeechMode, requests: Array<Record<string, unknown>> = [], aborted = { count: 0, endedAt: 0 }) {
  return http((_req, res, body) => {
    requests.push(JSON.parse(body) as Record<string, unknown>);
    if (mode === 'unavailable') {
      res.writeHead(503, { 'content-type': 'application/json' }).end('{"error":"model is loading"}');
      return;
    }
    res.writeHead(200, { 'content-type': 'audio/pcm', 'transfer-encoding': 'chunked' });
    const bytes = Buffer.from(reply24k.buffer, reply24k.byteOffset, reply24k.byteLength);
    // 4801 bytes: chunk borders fall mid-sample, as they do on the wire.
    const chunks: Buffer[] = [];
    for (let off = 0; off < bytes.length; off += 4801) chunks.push(bytes.subarray(off, off + 4801));
    let i = 0;
    let finished = false;
    res.on('close', () => {
      if (!finished) aborted.count++;
    });
    const timer = setInterval(() => {
      if (res.destroyed) return clearInterval(timer);
      if (mode === 'die-mid-reply' && i === 2) {
        clearInterval(timer);
        res.socket?.destroy(); // the server process died mid-reply
        return;
      }
      const chunk = chunks[i++];
      if (!chunk) {
        clearInterval(timer);
        finished = true;
        aborted.endedAt = performance.now();
        res.end();
        return;
      }
      res.write(chunk);
    }, 15);
  });
}

describe('openai-speech remote TTS', () => {
  it('streams PCM as it arrives, resampled to 16 kHz, with the voice of the language', async () => {
    const requests: Array<Record<string, unknown>> = [];
    const server = { count: 0, endedAt: 0 };
    const { base } = await speechServer('stream', requests, server);
    const tts = new OpenAiSpeechTts({ baseUrl: base, model: 'hexgrad/Kokoro-82M', voices: { en: 'af_heart', fr: 'ff_siwis' }, sampleRate: 24_000, logger });
    expect(tts.languages).toEqual(['en', 'fr']);
    await tts.load();
    // Twice: the first request also pays for the HTTP client's first connection.
    for (const round of ['cold', 'warm']) {
      const t0 = performance.now();
      let firstAt = 0;
      let total = 0;
      for await (const chunk of tts.synthesize('Il est trois heures dix.', { language: 'fr-FR' })) {
        if (total === 0) firstAt = performance.now();
        total += chunk.length;
      }
      const firstMs = firstAt - t0;
      const allMs = performance.now() - t0;
      expect(Math.abs(total - (reply24k.length * 2) / 3)).toBeLessThan(64);
      // The first audio came with the first bytes, before the server had finished sending.
      expect(firstAt).toBeLessThan(server.endedAt);
      console.log(`remote TTS (${round}): first audio ${firstMs.toFixed(1)} ms after the request (server's first chunk at 15 ms), whole reply ${allMs.toFixed(1)} ms (${((total / INTERNAL_SAMPLE_RATE) * 1000).toFixed(0)} ms of audio)`);
    }
    expect(requests[0]).toMatchObject({ model: 'hexgrad/Kokoro-82M', input: 'Il est trois heures dix.', voice: 'ff_siwis', response_format: 'pcm', stream: true });
  });

  it('aborts the HTTP request on barge-in', async () => {
    const aborted = { count: 0, endedAt: 0 };
    const { base } = await speechServer('stream', [], aborted);
    const tts = new OpenAiSpeechTts({ baseUrl: base, model: 'm', voices: { en: 'af_heart' }, logger });
    const ctl = new AbortController();
    let chunks = 0;
    for await (const _chunk of tts.synthesize('It is ten past three.', { language: 'en', signal: ctl.signal })) {
      chunks++;
      ctl.abort();
    }
    expect(chunks).toBe(1);
    for (let i = 0; i < 50 && aborted.count === 0; i++) await sleep(10);
    expect(aborted.count).toBe(1);
  });

  it('fails over before any audio; a server dying mid-reply is a clear, prompt error', async () => {
    const down = await speechServer('unavailable');
    const up = await speechServer('stream');
    const tts = new OpenAiSpeechTts({ baseUrls: [down.base, up.base], model: 'm', voices: { en: 'af_heart' }, logger });
    let total = 0;
    for await (const chunk of tts.synthesize('It is ten past three.', { language: 'en' })) total += chunk.length;
    expect(total).toBeGreaterThan(INTERNAL_SAMPLE_RATE / 2);
    expect(tts.backends.stats().map((s) => s.up)).toEqual([false, true]);

    const dying = await speechServer('die-mid-reply');
    const alone = new OpenAiSpeechTts({ baseUrl: dying.base, model: 'm', voices: { en: 'af_heart' }, logger, idleTimeoutMs: 1000 });
    const t0 = performance.now();
    const drain = async () => {
      for await (const _c of alone.synthesize('It is ten past three.', { language: 'en' }));
    };
    await expect(drain()).rejects.toThrow(/mid-reply, after audio started/);
    expect(performance.now() - t0).toBeLessThan(1000);
  });

  it.skipIf(noEspeak)('speaks with the embedded TTS when the remote cannot start, and straight away while it is down', async () => {
    const dead = await http(() => undefined);
    await closeServer(dead.server);
    const tts = createTtsProvider({ provider: 'openai-speech', baseUrl: dead.base, model: 'm', voices: { en: 'af_heart' }, embeddedFallback: 'espeak', espeakEngine: 'process' }, logger);
    await tts.load();
    for (let turn = 0; turn < 2; turn++) {
      let total = 0;
      for await (const chunk of tts.synthesize('It is ten past three.', { language: 'en' })) total += chunk.length;
      expect(total).toBeGreaterThan(INTERNAL_SAMPLE_RATE / 2);
    }
    await tts.close?.();
  });
});

describe('a call whose voice is remote', () => {
  let service: TestServer | undefined;
  afterAll(async () => {
    await service?.stop();
  });

  it.skipIf(noEspeak)('the server dies mid-reply: the turn ends with tts_failed, never hangs, and the next reply is spoken by the embedded TTS', async () => {
    const dying = await speechServer('die-mid-reply');
    service = await startTestServer({
      // Text turns: the recogniser is not used, so none of its grammars are compiled.
      providers: { asr: { provider: 'pocketsphinx', grammar: 'off', spareDecoders: 1 }, tts: { provider: 'openai-speech', baseUrl: dying.base, model: 'm', voices: { en: 'af_heart' }, embeddedFallback: 'espeak', espeakEngine: 'process', idleTimeoutMs: 1000 } },
    });
    const caller = new TextCaller(service.wsUrl, { apiKey: TEST_API_KEY }, { spoken: true });
    await caller.open();
    const t0 = performance.now();
    const first = await caller.say('What time is it?');
    expect(first.events.some((e) => e.type === 'error' && e.code === 'tts_failed' && /mid-reply/.test(String(e.message)))).toBe(true);
    expect(performance.now() - t0).toBeLessThan(8000);
    // The server is marked down: the next reply goes to the embedded voice at once.
    const second = await caller.say('What time is it?');
    expect(second.events.some((e) => e.type === 'response.audio.started')).toBe(true);
    expect(second.events.some((e) => e.type === 'error')).toBe(false);
    await caller.close();
  });
});

describe('BackendPool', () => {
  it('orders up backends first, rotates with round-robin, backs off exponentially and recovers', () => {
    let now = 0;
    const pool = new BackendPool({ stage: 't', urls: ['a', 'b', 'c'], strategy: 'round-robin', downMs: 100, maxDownMs: 250, now: () => now });
    expect([pool.candidates()[0], pool.candidates()[0], pool.candidates()[0]]).toEqual(['a', 'b', 'c']);
    pool.failed('b', 'ECONNREFUSED');
    expect(pool.candidates().slice(-1)).toEqual(['b']);
    now = 150;
    expect(pool.isUp('b')).toBe(true);
    pool.failed('b', 'ECONNREFUSED');
    now = 349;
    expect(pool.isUp('b')).toBe(false); // 150 + 200
    now = 350;
    expect(pool.isUp('b')).toBe(true);
    pool.failed('b', 'ECONNREFUSED');
    now = 599;
    expect(pool.isUp('b')).toBe(false); // capped at 250
    now = 600;
    expect(pool.isUp('b')).toBe(true);
    pool.succeeded('b');
    expect(pool.stats().find((s) => s.url === 'b')).toMatchObject({ up: true, failures: 3, consecutiveFailures: 0 });
  });
});
