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
 */
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';

/** Thrown when the worker died with a batch in flight: the batch can be run again as it was. */
export class WorkerLostError extends Error {
  override readonly name = 'WorkerLostError';
}

/** Deaths in a row (no batch answered in between) before giving up on workers for this session. */
export const MAX_CONSECUTIVE_DEATHS = 3;

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
}

/**
 * Runs inside the worker (CommonJS eval code, like the eSpeak TTS's workers: the same under tsx, vitest and
 * compiled JS, where a separate .ts worker file would need a loader). Messages: ready | fatal once, then
 * run → result | error.
 */
const WORKER_SOURCE = String.raw`
const { parentPort, workerData } = require('node:worker_threads');
const ort = require(workerData.ortPath);
const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(workerData.sampleRate)]), []);
let session = null;
ort.InferenceSession.create(workerData.modelPath, workerData.sessionOptions).then(
  (s) => {
    session = s;
    parentPort.postMessage({ type: 'ready', inputNames: s.inputNames, outputNames: s.outputNames });
  },
  (err) => parentPort.postMessage({ type: 'fatal', message: String((err && err.message) || err) }),
);
parentPort.on('message', async (msg) => {
  if (msg.type !== 'run') return;
  try {
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

  constructor(options: WorkerRunnerOptions, sampleRate: number, private readonly onDeath: (err: Error) => void) {
    const ortPath = createRequire(import.meta.url).resolve('onnxruntime-node');
    this.worker = new Worker(WORKER_SOURCE, {
      eval: true,
      workerData: { ortPath, modelPath: options.modelPath, sessionOptions: options.sessionOptions, sampleRate },
    });
    // Held only while a batch is in flight: an idle VAD never keeps the process alive.
    this.worker.unref();
    this.ready = new Promise((resolve, reject) => {
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
  }

  run(id: number, input: Float32Array, inputDims: readonly number[], state: Float32Array, stateDims: readonly number[]): Promise<ort.InferenceSession.OnnxValueMapType> {
    if (this.dead) return Promise.reject(new WorkerLostError('Silero VAD worker is dead'));
    const n = inputDims[0];
    return new Promise((resolve, reject) => {
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
    if (this.inFlight.size === 0) this.worker.unref();
    if (msg.type === 'error') run.reject(new Error(`SileroVad: ${msg.message}`));
    else {
      run.resolve({
        output: new ort.Tensor('float32', msg.output, run.dims.output),
        stateN: new ort.Tensor('float32', msg.stateN, run.dims.stateN),
      });
    }
  }

  private die(err: Error): void {
    if (this.dead) return;
    this.dead = true;
    const lost = err instanceof WorkerLostError ? err : new WorkerLostError(`Silero VAD worker failed: ${err.message}`, { cause: err });
    for (const run of this.inFlight.values()) run.reject(lost);
    this.inFlight.clear();
    if (!this.closing) this.onDeath(err);
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
  /** Workers started after the first (restarts), for logs and tests. */
  restarts = 0;

  private constructor(private readonly options: WorkerRunnerOptions, private readonly sampleRate: number) {}

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
    const worker = new SileroWorker(this.options, this.sampleRate, (err) => {
      // The first worker failing to load the model is load()'s error to report, not a death to restart from.
      if (first && !worker.wasReady) return;
      this.onDeath(worker, err);
    });
    this.worker = worker;
    return worker;
  }

  private onDeath(worker: SileroWorker, err: Error): void {
    if (this.worker === worker) this.worker = null;
    this.consecutiveDeaths++;
    const log = this.options.logger;
    if (this.consecutiveDeaths < MAX_CONSECUTIVE_DEATHS) {
      log.error({ err, deaths: this.consecutiveDeaths }, 'Silero VAD worker died; restarting it (its batch runs again)');
      return;
    }
    log.error({ err, deaths: this.consecutiveDeaths }, 'Silero VAD worker keeps dying; running the VAD on the main thread from now on');
    this.fallback = this.options.openFallback();
    // A failed fallback surfaces on each run (as the batch's error), never as an unhandled rejection.
    this.fallback.catch((e: unknown) => log.error({ err: e }, 'Silero VAD: main-thread session failed to start too'));
  }
}
