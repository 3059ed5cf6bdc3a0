/**
 * Silero's batched inference in a worker thread.
 *
 * onnxruntime-node's `session.run` is a setImmediate around a synchronous native run: on the main thread every
 * batch blocks the event loop that carries every call's audio (at 150 calls the VAD was over half of its busy
 * time). Here the session lives in one worker; the batcher posts one message per batch (the input and state
 * buffers are transferred, not copied) and gets the probabilities and next states back the same way.
 *
 * The streams' recurrent states stay on the main thread (each SileroVadStream holds its own) and travel with
 * each batch: 1 KB per window against the window's own 2.3 KB, while the worker stays stateless, so reset()
 * and close() need no message and a worker that dies loses nothing: the batch it held is run again, with the
 * same states, on a fresh worker (WorkerLostError), and every call's decisions are the same as if it had not died.
 * After MAX_CONSECUTIVE_DEATHS deaths with no batch answered in between, the runner stops restarting and runs the
 * model on the main thread (logged): slower under load, but every call keeps getting decisions.
 *
 * A worker that stays alive but stops answering (stuck in native code, a deadlock, a loop) would leave every call's
 * VAD waiting forever. So a worker holding a batch gets `deadlineMs` to answer (each answer restarts the clock: the
 * batch behind it in the pipeline starts when the one before ends); past it the worker counts as hung, which is
 * handled as a death: its batches fail with WorkerLostError and run again on a fresh worker with the same states
 * (the streams' states never left the main thread, so a hang loses no call's state either, exactly as for a death),
 * and hangs count toward MAX_CONSECUTIVE_DEATHS. A call loses at most the deadline plus a restart (0.2–0.45 s
 * measured), no frame. A restarted worker that never finishes loading its model is a hang too (LOAD_DEADLINES).
 *
 * Stopping a hung thread needs care: terminate() while onnxruntime-node is inside a run aborts the whole process
 * (its binding throws a C++ exception into the dying thread: measured, about one kill in three during runs). The
 * worker counts its runs in progress in a shared Int32Array; the main thread swaps 0 → -1 (no run, and none may
 * start) before it terminates; a worker found inside a run is left, unref'd, to exit by itself when the run ends.
 * One stuck inside onnxruntime for good is leaked (one thread and its session), never killed under the process.
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import type { VadWorkerStats } from '../types.js';

/** Thrown when the worker died with a batch in flight: the batch can be run again as it was. */
export class WorkerLostError extends Error {
  override readonly name = 'WorkerLostError';
}

/** Deaths in a row (no batch answered in between; hangs count) before giving up on workers for this session. */
export const MAX_CONSECUTIVE_DEATHS = 3;

/** The default of `workerDeadlineMs` (options.ts says why 1 s). */
export const DEFAULT_WORKER_DEADLINE_MS = 1000;

/**
 * A restarted worker gets this many batch deadlines to load its model (5 s by default; a restart took 0.2–0.45 s
 * measured): one stuck loading would otherwise hold every call's batch as surely as one stuck in a run.
 */
const LOAD_DEADLINES = 5;

/**
 * FAULT INJECTION, for tests only: the worker blocks on its `atBatch`-th batch (1 = the first; 0: before it loads its
 * model) for `ms` (default forever), in its message handler, or, with `insideRun`, while counted as inside
 * onnxruntime's run (standing for a native run that is stuck or very slow: the thread must not be killed there).
 */
export interface WorkerHang {
  atBatch: number;
  ms?: number;
  insideRun?: boolean;
}

/** FAULT INJECTION, tests only (off unless set): the hang, if any, of worker number `index` (0 = the first). */
export type WorkerHangInjection = (index: number) => WorkerHang | null;

/** The feeds the batcher gives a run: `input` [B, 576], `state` [2, B, 128] float32, `sr` (onnxruntime's own type). */
export type SileroFeeds = ort.InferenceSession.FeedsType;

/** The model's declared names (checked by the caller against what Silero v5 needs). */
export interface ModelIo {
  inputNames: readonly string[];
  outputNames: readonly string[];
}

export interface WorkerRunnerOptions {
  modelPath: string;
  sessionOptions: ort.InferenceSession.SessionOptions;
  logger: Logger;
  /** Opens the same model on the main thread, for when workers keep dying. */
  openFallback: () => Promise<ort.InferenceSession>;
  /** A worker holding a batch this long without an answer is hung (default DEFAULT_WORKER_DEADLINE_MS). */
  deadlineMs?: number;
  /** Tests only: see WorkerHangInjection. */
  hangInjection?: WorkerHangInjection;
}

/** Why a worker was given up on when it hung. */
interface Hang {
  waitedMs: number;
  /** Batches it held. */
  batches: number;
  /** Whether it was inside onnxruntime, in a run or loading the model (left to exit by itself, not terminated). */
  insideRun: boolean;
  /** Hung before its model loaded (a restart), rather than on a batch. */
  loading: boolean;
}

/**
 * The slots of the Int32Array a worker shares with the main thread. RUNS: runs in progress in the worker (the model's
 * load counts as one), or -1 once the main thread may terminate it. ABANDONED: 1 once the main thread gave up on it:
 * it starts no run and exits when the last one ends.
 */
const SLOT = { RUNS: 0, ABANDONED: 1 } as const;

/**
 * Runs inside the worker (CommonJS eval code, like the eSpeak TTS's workers: the same under tsx, vitest and
 * compiled JS, where a separate .ts worker file would need a loader). Messages: ready | fatal once, then
 * run → result | error.
 */
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
const control = new Int32Array(workerData.control);
function enterRun() {
  if (Atomics.load(control, ${SLOT.ABANDONED}) === 1) return false;
  for (;;) {
    const runs = Atomics.load(control, ${SLOT.RUNS});
    if (runs < 0) return false;
    if (Atomics.compareExchange(control, ${SLOT.RUNS}, runs, runs + 1) === runs) return true;
  }
}
function leaveRun() {
  if (Atomics.sub(control, ${SLOT.RUNS}, 1) === 1 && Atomics.load(control, ${SLOT.ABANDONED}) === 1) process.exit(0);
}
// FAULT INJECTION (tests only; null unless WorkerHangInjection picked this worker).
const hang = workerData.hang;
let batches = 0;
function block() {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, hang.ms === undefined ? Infinity : hang.ms);
}
const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(workerData.sampleRate)]), []);
let session = null;
if (hang !== null && hang.atBatch === 0) block();
if (enterRun()) {
  ort.InferenceSession.create(workerData.modelPath, workerData.sessionOptions).then(
    (s) => {
      session = s;
      parentPort.postMessage({ type: 'ready', inputNames: s.inputNames, outputNames: s.outputNames });
    },
    (err) => parentPort.postMessage({ type: 'fatal', message: String((err && err.message) || err) }),
  ).finally(leaveRun);
}
parentPort.on('message', async (msg) => {
  if (msg.type !== 'run') return;
  const hangHere = hang !== null && ++batches === hang.atBatch;
  if (hangHere && !hang.insideRun) block();
  if (!enterRun()) return;
  try {
    if (hangHere && hang.insideRun) block();
    const out = await session.run({
      input: new ort.Tensor('float32', msg.input, msg.inputDims),
      state: new ort.Tensor('float32', msg.state, msg.stateDims),
      sr,
    });
    const output = out.output.data;
    const stateN = out.stateN.data;
    if (!(output instanceof Float32Array) || !(stateN instanceof Float32Array)) throw new Error('outputs are not float32');
    parentPort.postMessage({ type: 'result', id: msg.id, output, stateN }, [output.buffer, stateN.buffer]);
  } catch (err) {
    parentPort.postMessage({ type: 'error', id: msg.id, message: String((err && err.message) || err) });
  } finally {
    leaveRun();
  }
});
`;

type FromWorker =
  | { type: 'ready'; inputNames: string[]; outputNames: string[] }
  | { type: 'fatal'; message: string }
  | { type: 'result'; id: number; output: Float32Array; stateN: Float32Array }
  | { type: 'error'; id: number; message: string };

interface InFlight {
  id: number;
  dims: { output: readonly number[]; stateN: readonly number[] };
  resolve: (out: ort.InferenceSession.OnnxValueMapType) => void;
  reject: (err: Error) => void;
}

/** One worker thread holding one session. */
class SileroWorker {
  readonly worker: Worker;
  readonly ready: Promise<ModelIo>;
  private readonly inFlight = new Map<number, InFlight>();
  private closing = false;
  dead = false;
  /** Whether its session ever loaded (a first worker that never did is a load error, not a death). */
  wasReady = false;
  /** Shared with the thread, indexed by SLOT. */
  private readonly control = new Int32Array(new SharedArrayBuffer(2 * Int32Array.BYTES_PER_ELEMENT));
  private watchdog: NodeJS.Timeout | null = null;
  /** When it was last given a batch while idle, or last answered one. */
  private progressAt = 0;
  private rejectReady: (err: Error) => void = () => {};

  /** `loadDeadlineMs`: how long it may take to load its model (null: no limit, for the first worker). */
  constructor(
    options: WorkerRunnerOptions,
    sampleRate: number,
    private readonly deadlineMs: number,
    loadDeadlineMs: number | null,
    hang: WorkerHang | null,
    private readonly onDeath: (err: Error, hang?: Hang) => void,
  ) {
    const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { ortPath, modelPath: options.modelPath, sessionOptions: options.sessionOptions, sampleRate, control: this.control.buffer, hang },
    });
    // Held only while a batch is in flight: an idle VAD never keeps the process alive.
    this.worker.unref();
    this.ready = new Promise((resolve, reject) => {
      this.rejectReady = reject;
      this.worker.on('message', (msg: FromWorker) => {
        if (msg.type === 'ready') {
          this.wasReady = true;
          resolve({ inputNames: msg.inputNames, outputNames: msg.outputNames });
        }
        else if (msg.type === 'fatal') {
          const err = new Error(msg.message);
          reject(err);
          this.die(err);
          this.closing = true;
          void this.worker.terminate();
        } else this.answer(msg);
      });
      // Without an 'error' listener an uncaught exception in the worker would be rethrown in the main thread.
      this.worker.on('error', (err) => {
        reject(err);
        this.die(err);
      });
      this.worker.on('exit', (code) => {
        const err = new WorkerLostError(`Silero VAD worker exited (code ${code})`);
        reject(err);
        this.die(err);
      });
    });
    if (loadDeadlineMs !== null) {
      const started = performance.now();
      const timer = setTimeout(() => {
        if (this.wasReady || this.dead) return;
        const waitedMs = performance.now() - started;
        this.giveUp(`Silero VAD worker hung loading its model: not ready in ${Math.round(waitedMs)} ms`, waitedMs, true);
      }, loadDeadlineMs);
      timer.unref();
      const stop = (): void => clearTimeout(timer);
      this.ready.then(stop, stop);
    }
  }

  run(id: number, input: Float32Array, inputDims: readonly number[], state: Float32Array, stateDims: readonly number[]): Promise<ort.InferenceSession.OnnxValueMapType> {
    if (this.dead) return Promise.reject(new WorkerLostError('Silero VAD worker is dead'));
    const n = inputDims[0];
    return new Promise((resolve, reject) => {
      if (this.inFlight.size === 0) this.progress();
      this.inFlight.set(id, { id, dims: { output: [n, 1], stateN: stateDims }, resolve, reject });
      this.worker.ref();
      // Transferred: the batcher built these buffers for this run alone.
      this.worker.postMessage({ type: 'run', id, input, inputDims, state, stateDims }, [input.buffer as ArrayBuffer, state.buffer as ArrayBuffer]);
    });
  }

  get busy(): boolean {
    return this.inFlight.size > 0;
  }

  terminate(): Promise<number> {
    this.closing = true;
    return this.worker.terminate();
  }

  private answer(msg: Extract<FromWorker, { id: number }>): void {
    const run = this.inFlight.get(msg.id);
    if (run === undefined) return;
    this.inFlight.delete(msg.id);
    if (this.inFlight.size === 0) {
      this.worker.unref();
      this.stopWatchdog();
    } else this.progress();
    if (msg.type === 'error') run.reject(new Error(`SileroVad: ${msg.message}`));
    else {
      run.resolve({
        output: new ort.Tensor('float32', msg.output, run.dims.output),
        stateN: new ort.Tensor('float32', msg.stateN, run.dims.stateN),
      });
    }
  }

  /** The worker moved (took a batch while idle, or answered one): it has deadlineMs again for what it holds. */
  private progress(): void {
    this.progressAt = performance.now();
    this.stopWatchdog();
    this.watchdog = setTimeout(() => this.check(), this.deadlineMs);
    this.watchdog.unref();
  }

  private stopWatchdog(): void {
    if (this.watchdog !== null) clearTimeout(this.watchdog);
    this.watchdog = null;
  }

  /**
   * The deadline passed. Decided in the next check phase, after the poll phase has delivered any answer already
   * posted: a main thread that was itself blocked past the deadline must not take the late delivery for a hang.
   */
  private check(): void {
    this.watchdog = null;
    setImmediate(() => {
      if (this.dead || this.inFlight.size === 0 || this.watchdog !== null) return;
      const waitedMs = performance.now() - this.progressAt;
      this.giveUp(`Silero VAD worker hung: no answer in ${Math.round(waitedMs)} ms`, waitedMs, false);
    });
  }

  /** Hung: its batches (and whoever waits for it to load) get WorkerLostError, and the thread is stopped or left. */
  private giveUp(reason: string, waitedMs: number, loading: boolean): void {
    // From here it starts no run; terminate() only where no run is in progress (else the process would abort).
    Atomics.store(this.control, SLOT.ABANDONED, 1);
    const insideRun = Atomics.compareExchange(this.control, SLOT.RUNS, 0, -1) !== 0;
    const err = new WorkerLostError(reason);
    this.rejectReady(err);
    this.die(err, { waitedMs, batches: this.inFlight.size, insideRun, loading });
    this.closing = true;
    // Never keeps the process alive, even if it never comes back from onnxruntime.
    this.worker.unref();
    if (!insideRun) void this.worker.terminate();
  }

  private die(err: Error, hang?: Hang): void {
    if (this.dead) return;
    this.dead = true;
    this.stopWatchdog();
    const lost = err instanceof WorkerLostError ? err : new WorkerLostError(`Silero VAD worker failed: ${err.message}`, { cause: err });
    for (const run of this.inFlight.values()) run.reject(lost);
    this.inFlight.clear();
    if (!this.closing) this.onDeath(err, hang);
  }
}

/**
 * The batcher's runner when the VAD runs in a worker: restarts a dead worker on the next batch, and after
 * MAX_CONSECUTIVE_DEATHS falls back to a main-thread session.
 */
export class SileroWorkerRunner {
  private worker: SileroWorker | null = null;
  private fallback: Promise<ort.InferenceSession> | null = null;
  private nextId = 1;
  private consecutiveDeaths = 0;
  private closed = false;
  /** Workers started so far (the hang injection is told which one it is). */
  private spawned = 0;
  private readonly deadlineMs: number;
  /** Workers started after the first (restarts), for logs and tests. */
  restarts = 0;
  private deaths = 0;
  private hangs = 0;

  private constructor(private readonly options: WorkerRunnerOptions, private readonly sampleRate: number) {
    this.deadlineMs = options.deadlineMs ?? DEFAULT_WORKER_DEADLINE_MS;
  }

  /** Start the worker and load the model in it; rejects (and leaves nothing running) if the model cannot load. */
  static async start(options: WorkerRunnerOptions, sampleRate: number): Promise<{ runner: SileroWorkerRunner; io: ModelIo }> {
    const runner = new SileroWorkerRunner(options, sampleRate);
    const worker = runner.spawn(true);
    try {
      const io = await worker.ready;
      return { runner, io };
    } catch (err) {
      await runner.release();
      throw err;
    }
  }

  /** The live worker thread (null before a restart or after the fallback): for tests that kill it. */
  get thread(): Worker | null {
    return this.worker?.dead === false ? this.worker.worker : null;
  }

  /** Whether the worker holds a batch now. */
  get busy(): boolean {
    return this.worker?.busy ?? false;
  }

  /** True once workers kept dying and the model runs on the main thread. */
  get onMainThread(): boolean {
    return this.fallback !== null;
  }

  get stats(): VadWorkerStats {
    return { restarts: this.restarts, deaths: this.deaths, hangs: this.hangs, onMainThread: this.onMainThread };
  }

  async run(feeds: SileroFeeds): Promise<ort.InferenceSession.OnnxValueMapType> {
    if (this.closed) throw new Error('SileroVad: closed');
    if (this.fallback !== null) return (await this.fallback).run(feeds);
    const { input, state } = feeds;
    // Own (not shared) float32 buffers: they are transferred to the worker.
    if (!(input?.data instanceof Float32Array) || !(state?.data instanceof Float32Array) || !(input.data.buffer instanceof ArrayBuffer) || !(state.data.buffer instanceof ArrayBuffer)) {
      throw new TypeError('SileroVad: float32 input and state in their own buffers expected');
    }
    let worker = this.worker;
    if (worker === null || worker.dead) {
      worker = this.spawn(false);
      this.restarts++;
    }
    // Also for the second batch of the pipeline that finds the new worker still loading its model.
    if (!worker.wasReady) {
      try {
        await worker.ready;
      } catch (err) {
        throw err instanceof WorkerLostError ? err : new WorkerLostError(`Silero VAD worker failed to restart: ${(err as Error).message}`, { cause: err });
      }
    }
    const out = await worker.run(this.nextId++, input.data, input.dims, state.data, state.dims);
    this.consecutiveDeaths = 0;
    return out;
  }

  async release(): Promise<void> {
    this.closed = true;
    const worker = this.worker;
    this.worker = null;
    if (worker !== null && !worker.dead) await worker.terminate();
    const fallback = this.fallback;
    this.fallback = null;
    if (fallback !== null) await (await fallback.catch(() => null))?.release();
  }

  private spawn(first: boolean): SileroWorker {
    const hang = this.options.hangInjection?.(this.spawned) ?? null;
    this.spawned++;
    // The first worker's load is load()'s to wait for (the service is not ready yet); a restart's holds the calls.
    const loadDeadlineMs = first ? null : LOAD_DEADLINES * this.deadlineMs;
    const worker = new SileroWorker(this.options, this.sampleRate, this.deadlineMs, loadDeadlineMs, hang, (err, hung) => {
      // The first worker failing to load the model is load()'s error to report, not a death to restart from.
      if (first && !worker.wasReady) return;
      this.onDeath(worker, err, hung);
    });
    this.worker = worker;
    return worker;
  }

  private onDeath(worker: SileroWorker, err: Error, hang?: Hang): void {
    if (this.worker === worker) this.worker = null;
    this.consecutiveDeaths++;
    const log = this.options.logger;
    if (hang === undefined) this.deaths++;
    else {
      this.hangs++;
      log.error(
        {
          waitedMs: Math.round(hang.waitedMs),
          deadlineMs: this.deadlineMs,
          batches: hang.batches,
          insideRun: hang.insideRun,
          loading: hang.loading,
          hangs: this.hangs,
          inARow: this.consecutiveDeaths,
        },
        `Silero VAD worker hung ${hang.loading ? 'loading its model' : 'on a batch'}; ` +
          (hang.insideRun ? 'left inside onnxruntime (it exits when that call returns)' : 'terminated') +
          ' and replaced, its batches run again',
      );
    }
    if (this.consecutiveDeaths < MAX_CONSECUTIVE_DEATHS) {
      if (hang === undefined) log.error({ err, deaths: this.consecutiveDeaths }, 'Silero VAD worker died; restarting it (its batch runs again)');
      return;
    }
    log.error({ err, deaths: this.consecutiveDeaths }, 'Silero VAD worker keeps dying; running the VAD on the main thread from now on');
    this.fallback = this.options.openFallback();
    // A failed fallback surfaces on each run (as the batch's error), never as an unhandled rejection.
    this.fallback.catch((e: unknown) => log.error({ err: e }, 'Silero VAD: main-thread session failed to start too'));
  }
}
