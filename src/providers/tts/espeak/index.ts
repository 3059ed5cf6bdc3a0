/**
 * eSpeak NG TTS from the npm WASM build `@echogarden/espeak-ng-emscripten` (voices inside its
 * espeak-ng.data): the fallback that works on any fresh machine, ~100 languages.
 *
 * That build's synth call is synchronous for a whole text (it is wasm2js: ~7–40 ms per second of
 * audio once warm, ~10x that on a cold JIT), with a callback per ~100 ms chunk. Running it on the main
 * thread would stall every other call's audio, so it runs in worker threads: the callback posts each
 * chunk at once (true streaming) and reads a shared abort flag so a barge-in stops it mid-text.
 * Output is 22050 Hz; the main thread resamples to 16 kHz with src/audio/resample.ts (libsamplerate).
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { availableParallelism } from 'node:os';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { Logger } from 'pino';
import { silentLogger } from '../../../core/logger.js';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import { StreamingResampler } from '../../../audio/resample.js';
import type { TtsOptions, TtsProvider } from '../types.js';

export interface EspeakTtsOptions {
  logger?: Logger;
  /** Worker threads, each with its own engine; concurrent calls beyond this queue. Default min(2, cores). */
  workers?: number;
  /** Speaking rate in words per minute (eSpeak default 175). */
  rate?: number;
  /** Output gain in dB. Default 0 (eSpeak peaks well below full scale). */
  gainDb?: number;
}

/** A voice in espeak-ng.data, as listed by the engine. */
export interface EspeakVoice {
  /** e.g. `gmw/en-US`; also accepted as TtsOptions.voice. */
  identifier: string;
  name: string;
  /** Language names with eSpeak's priority (lower = preferred for that language). */
  languages: Array<{ name: string; priority: number }>;
}

/** Defaults where eSpeak's own priorities pick something else (it prefers en-GB for `en`). */
const PREFERRED_VOICE: Record<string, string> = { en: 'gmw/en-US' };

/**
 * Runs inside each worker (CommonJS eval code: works the same under tsx, vitest and compiled JS,
 * where a separate .ts worker file would not). Messages: init → ready | fatal; synth → audio* → done | error.
 */
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
let engine = null;
let currentVoice = '';
let currentRate = -1;
const ready = import(workerData.moduleUrl)
  .then((mod) => mod.default({ print() {}, printErr() {} }))
  .then((m) => {
    engine = new m.eSpeakNGWorker();
    const voices = engine.list_voices();
    // Warm the JIT so the first real call is fast (the first synth of a cold wasm2js build is ~20x slower).
    for (const [voice, text] of [['roa/fr', 'Bonjour, un deux trois.'], ['gmw/de', 'Guten Tag, eins zwei drei.'], ['gmw/en-US', 'Hello, how can I help you today? One, two, three.']]) {
      engine.set_voice(voice);
      engine.synthesize(text, () => false);
    }
    currentVoice = 'gmw/en-US';
    parentPort.postMessage({ type: 'ready', sampleRate: engine.samplerate, voices });
  });
ready.catch((err) => parentPort.postMessage({ type: 'fatal', message: String((err && err.stack) || err) }));
// Requests sent before init finished wait for it, in order.
parentPort.on('message', (msg) => ready.then(() => handle(msg), () => {}));
function handle(msg) {
  if (msg.type !== 'synth') return;
  const flag = new Int32Array(msg.abort);
  try {
    if (Atomics.load(flag, 0) === 0) {
      if (msg.voice !== currentVoice) {
        currentVoice = '';
        const rc = engine.set_voice(msg.voice);
        if (rc !== 0) throw new Error('set_voice(' + msg.voice + ') returned ' + rc);
        currentVoice = msg.voice;
      }
      if (msg.rate !== currentRate) {
        engine.set_rate(msg.rate);
        currentRate = msg.rate;
      }
      engine.synthesize(msg.text, (samples) => {
        if (Atomics.load(flag, 0) !== 0) return true; // non-zero from the callback aborts synthesis
        if (samples.length > 0) parentPort.postMessage({ type: 'audio', id: msg.id, samples }, [samples.buffer]);
        return false;
      });
    }
    parentPort.postMessage({ type: 'done', id: msg.id });
  } catch (err) {
    parentPort.postMessage({ type: 'error', id: msg.id, message: String((err && err.message) || err) });
  }
}
`;

type WorkerMessage =
  | { type: 'ready'; sampleRate: number; voices: EspeakVoice[] }
  | { type: 'fatal'; message: string }
  | { type: 'audio'; id: number; samples: Int16Array }
  | { type: 'done'; id: number }
  | { type: 'error'; id: number; message: string };

/** Receives one request's chunks; `wake` resumes the generator waiting on them. */
interface RequestSink {
  chunks: Int16Array[];
  done: boolean;
  error: Error | null;
  wake: (() => void) | null;
}

class EspeakWorker {
  readonly worker: Worker;
  readonly ready: Promise<{ sampleRate: number; voices: EspeakVoice[] }>;
  readonly requests = new Map<number, RequestSink>();
  dead = false;
  private closing = false;

  constructor(moduleUrl: string, private readonly logger: Logger) {
    this.worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { moduleUrl } });
    this.worker.unref(); // ref'd only while requests are in flight (see track())
    this.ready = new Promise((resolve, reject) => {
      this.worker.on('message', (msg: WorkerMessage) => {
        if (msg.type === 'ready') resolve({ sampleRate: msg.sampleRate, voices: msg.voices });
        else if (msg.type === 'fatal') {
          const err = new Error(`eSpeak worker failed to start: ${msg.message}`);
          reject(err);
          this.fail(err);
          void this.worker.terminate();
        }
        else this.onRequestMessage(msg);
      });
      this.worker.on('error', (err) => {
        reject(err);
        this.fail(err);
      });
      this.worker.on('exit', (code) => {
        const err = new Error(`eSpeak worker exited (code ${code})`);
        reject(err);
        this.fail(err);
      });
    });
  }

  private onRequestMessage(msg: Exclude<WorkerMessage, { type: 'ready' } | { type: 'fatal' }>): void {
    const sink = this.requests.get(msg.id);
    if (sink === undefined) return;
    if (msg.type === 'audio') {
      sink.chunks.push(msg.samples);
    } else {
      if (msg.type === 'error') sink.error = new Error(`eSpeak: ${msg.message}`);
      sink.done = true;
      this.requests.delete(msg.id);
      if (this.requests.size === 0) this.worker.unref();
    }
    const wake = sink.wake;
    sink.wake = null;
    wake?.();
  }

  track(id: number, sink: RequestSink): void {
    this.requests.set(id, sink);
    this.worker.ref();
  }

  terminate(): Promise<number> {
    this.closing = true;
    return this.worker.terminate();
  }

  private fail(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    if (!this.closing) this.logger.error({ err }, 'eSpeak worker died');
    for (const sink of this.requests.values()) {
      sink.error ??= err;
      sink.done = true;
      const wake = sink.wake;
      sink.wake = null;
      wake?.();
    }
    this.requests.clear();
  }
}

/** Max main-thread time (resampling queued chunks) before yielding to the event loop. */
const SLICE_MS = 4;

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function primaryTag(language: string): string {
  return language.trim().split(/[-_]/)[0].toLowerCase();
}

export class EspeakTts implements TtsProvider {
  readonly name = 'espeak';
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: true };
  private readonly logger: Logger;
  private readonly workerCount: number;
  private readonly rate: number;
  private readonly gain: number;
  private readonly moduleUrl: string;
  private workers: EspeakWorker[] = [];
  private voiceList: EspeakVoice[] = [];
  private languageList: string[] = [];
  private sampleRate = 22_050;
  private nextId = 1;
  private loading: Promise<void> | null = null;

  constructor(options: EspeakTtsOptions = {}) {
    this.logger = (options.logger ?? silentLogger()).child({ provider: 'espeak' });
    this.workerCount = Math.max(1, options.workers ?? Math.min(2, availableParallelism()));
    this.rate = options.rate ?? 175;
    this.gain = Math.pow(10, (options.gainDb ?? 0) / 20);
    // Workers cannot resolve bare specifiers relative to this file, so hand them a file URL.
    this.moduleUrl = pathToFileURL(createRequire(import.meta.url).resolve('@echogarden/espeak-ng-emscripten')).href;
  }

  /** Primary language tags some voice speaks (empty before load()). */
  get languages(): readonly string[] {
    return this.languageList;
  }

  /** All voices in the data file (empty before load()). */
  get voices(): readonly EspeakVoice[] {
    return this.voiceList;
  }

  load(): Promise<void> {
    this.loading ??= this.doLoad().catch((err: unknown) => {
      this.loading = null;
      void this.close();
      throw err;
    });
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    const started = performance.now();
    this.workers = Array.from({ length: this.workerCount }, () => new EspeakWorker(this.moduleUrl, this.logger));
    const [first] = await Promise.all(this.workers.map((w) => w.ready));
    this.sampleRate = first.sampleRate;
    this.voiceList = first.voices;
    const tags = new Set<string>();
    for (const v of this.voiceList) for (const l of v.languages) tags.add(primaryTag(l.name));
    this.languageList = [...tags].sort();
    // Compile and pool a 22050→16000 converter per worker now instead of on first calls (~30 ms each).
    const warm = await Promise.all(this.workers.map(() => StreamingResampler.create(this.sampleRate, INTERNAL_SAMPLE_RATE, { timing: 'aligned' })));
    for (const r of warm) {
      r.process(new Int16Array(2_205));
      r.flush();
      r.destroy();
    }
    this.logger.info(
      { workers: this.workerCount, voices: this.voiceList.length, languages: this.languageList.length, ms: Math.round(performance.now() - started) },
      'eSpeak NG loaded',
    );
  }

  /**
   * eSpeak voice identifier for a request: an explicit voice (identifier or language name), else
   * the exact language tag (`pt-BR`), else the best voice for the primary tag.
   */
  resolveVoice(language: string, voice?: string): string {
    const norm = (s: string): string => s.trim().toLowerCase().replace(/_/g, '-');
    if (voice !== undefined) {
      const v = norm(voice);
      const match = this.voiceList.find((x) => norm(x.identifier) === v || norm(x.name) === v) ?? this.bestFor(v);
      if (match !== undefined) return match.identifier;
      this.logger.debug({ voice, language }, 'unknown eSpeak voice, using the language default');
    }
    const exact = this.bestFor(norm(language));
    if (exact !== undefined) return exact.identifier;
    const primary = primaryTag(language);
    const preferred = PREFERRED_VOICE[primary];
    if (preferred !== undefined && this.voiceList.some((x) => x.identifier === preferred)) return preferred;
    const best = this.bestFor(primary);
    if (best !== undefined) return best.identifier;
    throw new Error(
      `eSpeak has no voice for language '${language}'` +
        (this.voiceList.length === 0 ? ' (not loaded)' : ` (${this.languageList.length} languages available)`),
    );
  }

  /** Voice listing `tag` with the lowest priority; ties go to the voice named after the tag (`roa/fr` for fr). */
  private bestFor(tag: string): EspeakVoice | undefined {
    if (tag === primaryTag(tag) && PREFERRED_VOICE[tag] !== undefined) {
      const preferred = this.voiceList.find((x) => x.identifier === PREFERRED_VOICE[tag]);
      if (preferred !== undefined) return preferred;
    }
    let best: EspeakVoice | undefined;
    let bestScore = Infinity;
    for (const v of this.voiceList) {
      for (const l of v.languages) {
        if (l.name !== tag) continue;
        const score = l.priority * 2 + (v.identifier.toLowerCase().endsWith(`/${tag}`) ? 0 : 1);
        if (score < bestScore) {
          bestScore = score;
          best = v;
        }
      }
    }
    return best;
  }

  synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array> {
    return this.run(text, options);
  }

  private async *run(text: string, options: TtsOptions): AsyncGenerator<Int16Array> {
    if (this.loading === null) throw new Error('EspeakTts: call load() first');
    await this.loading;
    const voice = this.resolveVoice(options.language, options.voice);
    const signal = options.signal;
    const clean = text.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, ' ').replace(/\s+/g, ' ').trim();
    if (clean === '' || signal?.aborted) return;
    // This build parses SSML (`<break time="4s"/>` really pauses): escape LLM text so it is only ever read.
    const escaped = clean.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

    const worker = this.pickWorker();
    const id = this.nextId++;
    const abortFlag = new Int32Array(new SharedArrayBuffer(4));
    const sink: RequestSink = { chunks: [], done: false, error: null, wake: null };
    const onAbort = (): void => {
      Atomics.store(abortFlag, 0, 1); // the worker's callback sees it at the next chunk
      const wake = sink.wake;
      sink.wake = null;
      wake?.();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    worker.track(id, sink);
    worker.worker.postMessage({ type: 'synth', id, text: escaped, voice, rate: this.rate, abort: abortFlag.buffer });

    const resampler = await StreamingResampler.create(this.sampleRate, INTERNAL_SAMPLE_RATE, { timing: 'aligned' });
    let sliceStart = performance.now();
    try {
      for (;;) {
        if (signal?.aborted) return;
        const chunk = sink.chunks.shift();
        if (chunk !== undefined) {
          const out = this.applyGain(resampler.process(chunk));
          if (out.length > 0) yield out;
          // The worker runs far ahead of real time; without this a fast consumer would resample a
          // whole long text inside one macrotask (microtasks only) and stall other calls.
          if (performance.now() - sliceStart >= SLICE_MS) {
            await yieldToEventLoop();
            sliceStart = performance.now();
          }
          continue;
        }
        if (sink.error !== null) throw sink.error;
        if (sink.done) break;
        await new Promise<void>((resolve) => {
          sink.wake = resolve;
        });
      }
      const tail = this.applyGain(resampler.flush());
      if (tail.length > 0) yield tail;
    } finally {
      signal?.removeEventListener('abort', onAbort);
      // Consumer stopped early: stop the worker's synthesis too, so its next request is not delayed.
      if (!sink.done) Atomics.store(abortFlag, 0, 1);
      resampler.destroy();
    }
  }

  /** Least-busy live worker; a dead one is replaced (its calls already failed with its error). */
  private pickWorker(): EspeakWorker {
    for (let i = 0; i < this.workers.length; i++) {
      if (this.workers[i].dead) {
        this.logger.warn('restarting eSpeak worker');
        const fresh = new EspeakWorker(this.moduleUrl, this.logger);
        fresh.ready.catch((err: unknown) => this.logger.error({ err }, 'eSpeak worker restart failed'));
        this.workers[i] = fresh;
      }
    }
    return this.workers.reduce((a, b) => (b.requests.size < a.requests.size ? b : a));
  }

  private applyGain(samples: Int16Array): Int16Array {
    if (this.gain === 1) return samples;
    for (let i = 0; i < samples.length; i++) {
      const v = Math.round(samples[i] * this.gain);
      samples[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
    }
    return samples;
  }

  async close(): Promise<void> {
    const workers = this.workers;
    this.workers = [];
    this.loading = null;
    await Promise.all(workers.map((w) => w.terminate()));
  }
}
