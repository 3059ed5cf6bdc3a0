/**
 * Streaming sample-rate conversion for PCM16: a fixed polyphase FIR for the edges' small ratios at the default
 * quality (polyphase.ts: 8↔16 kHz phone lines, 48→16 kHz WebRTC, 24→16 kHz), libsamplerate (WASM build) for
 * any other ratio or quality.
 *
 * One StreamingResampler per direction per call: both keep filter history between calls, so chunks can be any
 * size and the output has no clicks at chunk borders.
 */
import LibSampleRate from '@alexanderolsen/libsamplerate-js';
import { convertInBlocks } from './framer.js';
import { PolyphaseResampler, polyphaseFactors, type ResamplerTiming } from './polyphase.js';

export type { ResamplerTiming } from './polyphase.js';

type SrcBackend = Awaited<ReturnType<typeof LibSampleRate.create>>;
type ConverterTypeValue = SrcBackend['converterType'];

/**
 * libsamplerate converters. Measured per 20 ms frame on one core (Node 20, x64, shared box):
 * 16k↔48k fastest 0.2–0.28 ms, medium 0.37–0.6 ms, best ≈1.3 ms, linear ≈0.02 ms;
 * 8k↔16k fastest 0.06–0.09 ms. 'fastest' (≈97 dB SNR, 80 % passband) is far beyond what speech
 * needs; 'linear' is cheap but aliases on downsampling. 'fastest' between rates whose ratio is small
 * (8↔16↔48 kHz, 24→16 kHz: polyphase.ts) uses a fixed polyphase FIR instead, 3–4× cheaper per frame.
 */
export type ResamplerQuality = 'fastest' | 'medium' | 'best' | 'linear';

const CONVERTER: Record<ResamplerQuality, ConverterTypeValue> = {
  best: LibSampleRate.ConverterType.SRC_SINC_BEST_QUALITY,
  medium: LibSampleRate.ConverterType.SRC_SINC_MEDIUM_QUALITY,
  fastest: LibSampleRate.ConverterType.SRC_SINC_FASTEST,
  linear: LibSampleRate.ConverterType.SRC_LINEAR,
};

export interface StreamingResamplerOptions {
  /** Default 'fastest'. */
  quality?: ResamplerQuality;
  /**
   * Default 'live': every output sample leaves with the input that completes it (the filter's ~1–2 ms delay is in
   * the signal), so a 20 ms chunk gives a whole 20 ms of output and the frame it ends is complete on its arrival.
   * 'aligned' (resampleOnce, files): output sample n is input time n / toRate, the filter's delay held back as a few
   * samples that flush() pushes out; on a live stream those few samples made each frame cut downstream wait for
   * the next chunk (20 ms on a phone line, 10 ms on WebRTC's 10 ms chunks).
   */
  timing?: ResamplerTiming;
}

/**
 * Every libsamplerate-js `create()` instantiates (and compiles) its own WASM module, which blocks
 * the event loop for ~10–60 ms. Destroyed converters are therefore kept and re-initialised for the
 * next call instead; the cap bounds the idle memory (~2.5 MB RSS each).
 */
const POOL_MAX = 16;
/** Input samples per WASM call (1 s at 48 kHz); see process(). */
const MAX_CHUNK = 48_000;
const idlePool: SrcBackend[] = [];

async function acquireBackend(from: number, to: number, type: ConverterTypeValue): Promise<SrcBackend> {
  const pooled = idlePool.pop();
  if (pooled === undefined) {
    return LibSampleRate.create(1, from, to, { converterType: type });
  }
  // Each setter re-runs src_new, so this also clears the previous call's filter history.
  pooled.converterType = type;
  pooled.inputSampleRate = from;
  pooled.outputSampleRate = to;
  // The rate setters do not refresh `ratio`, which the wrapper uses to size its buffers.
  pooled.ratio = to / from;
  return pooled;
}

function releaseBackend(src: SrcBackend): void {
  if (idlePool.length < POOL_MAX) idlePool.push(src);
  else src.destroy();
}

function assertRate(rate: number, what: string): void {
  if (!Number.isInteger(rate) || rate < 1 || rate > 192_000) {
    throw new RangeError(`StreamingResampler: ${what} must be an integer in 1..192000, got ${rate}`);
  }
}

/** PCM16 → float in [-1, 1). */
export function int16ToFloat32(input: Int16Array, out = new Float32Array(input.length)): Float32Array {
  for (let i = 0; i < input.length; i++) out[i] = input[i] / 32768;
  return out;
}

/** Float → PCM16 with rounding and clipping (sinc filters overshoot near full scale). */
export function float32ToInt16(input: Float32Array, out = new Int16Array(input.length)): Int16Array {
  for (let i = 0; i < input.length; i++) {
    const v = Math.round(input[i] * 32768);
    out[i] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
  }
  return out;
}

export class StreamingResampler {
  readonly fromRate: number;
  readonly toRate: number;
  readonly quality: ResamplerQuality;
  readonly timing: ResamplerTiming;
  private src: SrcBackend | null;
  /** The fixed-ratio FIR that replaces `src` for small ratios at 'fastest'. */
  private fir: PolyphaseResampler | null;
  private destroyed = false;
  private scratch = new Float32Array(0);
  private samplesIn = 0;
  private samplesOut = 0;
  /** libsamplerate, live: zeros put out at the start of the stream in place of what the converter held back. */
  private leadZeros = 0;

  /**
   * Synchronous construction only works for passthrough (equal rates): the WASM backend loads
   * asynchronously, so use `StreamingResampler.create()` in general. `backend` is for that factory.
   */
  constructor(fromRate: number, toRate: number, options: StreamingResamplerOptions = {}, backend?: SrcBackend | PolyphaseResampler) {
    assertRate(fromRate, 'fromRate');
    assertRate(toRate, 'toRate');
    this.fromRate = fromRate;
    this.toRate = toRate;
    this.quality = options.quality ?? 'fastest';
    this.timing = options.timing ?? 'live';
    this.fir = backend instanceof PolyphaseResampler ? backend : null;
    if (this.fir !== null) {
      this.src = null;
      return;
    }
    if (fromRate !== toRate && backend === undefined) {
      throw new Error(
        `StreamingResampler ${fromRate}→${toRate} Hz needs the WASM backend: use await StreamingResampler.create()`,
      );
    }
    this.src = fromRate === toRate ? null : ((backend as SrcBackend | undefined) ?? null);
  }

  static async create(
    fromRate: number,
    toRate: number,
    options: StreamingResamplerOptions = {},
  ): Promise<StreamingResampler> {
    assertRate(fromRate, 'fromRate');
    assertRate(toRate, 'toRate');
    const quality = options.quality ?? 'fastest';
    if (!Object.hasOwn(CONVERTER, quality)) throw new RangeError(`StreamingResampler: unknown quality "${quality}"`);
    if (fromRate === toRate) return new StreamingResampler(fromRate, toRate, options);
    if (quality === 'fastest' && polyphaseFactors(fromRate, toRate)) {
      return new StreamingResampler(fromRate, toRate, options, new PolyphaseResampler(fromRate, toRate, options.timing ?? 'live'));
    }
    const backend = await acquireBackend(fromRate, toRate, CONVERTER[quality]);
    return new StreamingResampler(fromRate, toRate, options, backend);
  }

  get isPassthrough(): boolean {
    return this.fromRate === this.toRate;
  }

  /**
   * Convert the next chunk of the stream. Output length is ≈ input × toRate/fromRate but varies by a
   * sample or so per call (the filter holds back a few samples of look-ahead until more input comes).
   * Always returns a new array.
   */
  process(input: Int16Array): Int16Array {
    this.assertLive();
    if (this.fir !== null) return this.fir.process(input);
    if (this.src === null) return input.slice();
    if (input.length === 0) return new Int16Array(0);
    // Whole files: keep each WASM call far below the wrapper's fixed 1M-sample transfer buffers.
    return convertInBlocks(input, MAX_CHUNK, (chunk) => this.processChunk(chunk));
  }

  private processChunk(input: Int16Array): Int16Array {
    const src = this.src;
    if (src === null) return input.slice();
    if (this.scratch.length < input.length) this.scratch = new Float32Array(input.length);
    const f = int16ToFloat32(input, this.scratch).subarray(0, input.length);
    // No dataOut: libsamplerate may emit a few more samples than ceil(ratio × n) after a short chunk,
    // and the wrapper would silently drop what does not fit a fixed buffer.
    const out = src.full(f);
    this.samplesIn += input.length;
    this.samplesOut += out.length;
    // Live: what the converter holds back at the start of a stream goes out as leading silence, so each chunk's
    // output is as long as its input and the converter's delay is in the signal. Its first 100 ms settle how much
    // that is (a first chunk of a sample or two shows too little of it).
    const settling = this.timing === 'live' && this.samplesIn - input.length < this.fromRate / 10;
    const lead = settling ? Math.max(0, Math.floor((this.samplesIn * this.toRate) / this.fromRate) - this.samplesOut) : 0;
    if (lead === 0) return float32ToInt16(out);
    this.leadZeros += lead;
    this.samplesOut += lead;
    const led = new Int16Array(lead + out.length);
    float32ToInt16(out, led.subarray(lead));
    return led;
  }

  /**
   * End of stream: push out the samples still held in the filter (by feeding silence) so the total
   * output length matches input × ratio, then reset for reuse.
   */
  flush(): Int16Array {
    this.assertLive();
    if (this.fir !== null) return this.fir.flush();
    if (this.src === null) return new Int16Array(0);
    // Live, the leading zeros stand for samples still in the converter: its tail is that much longer.
    const expected = Math.round((this.samplesIn * this.toRate) / this.fromRate) + this.leadZeros;
    const missing = expected - this.samplesOut;
    const parts: Float32Array[] = [];
    let got = 0;
    const zeros = new Float32Array(Math.max(64, Math.ceil(this.fromRate / 100)));
    // 10 ms of silence per round; the filter delay of every converter type is well under 100 ms.
    for (let round = 0; got < missing && round < 10; round++) {
      const out = this.src.full(zeros);
      parts.push(out);
      got += out.length;
    }
    const tail = new Int16Array(Math.max(0, missing));
    let off = 0;
    for (const p of parts) {
      if (off >= tail.length) break;
      const take = Math.min(p.length, tail.length - off);
      float32ToInt16(p.subarray(0, take), tail.subarray(off, off + take));
      off += take;
    }
    this.reset();
    return tail;
  }

  /** Forget filter history (e.g. on a discontinuity such as barge-in). */
  reset(): void {
    this.assertLive();
    this.fir?.reset();
    if (this.src !== null) this.src.converterType = CONVERTER[this.quality];
    this.samplesIn = 0;
    this.samplesOut = 0;
    this.leadZeros = 0;
  }

  /** Return the WASM converter to the shared pool. Idempotent. */
  destroy(): void {
    if (this.destroyed) return;
    this.destroyed = true;
    if (this.src !== null) releaseBackend(this.src);
    this.src = null;
    this.fir = null;
  }

  private assertLive(): void {
    if (this.destroyed) throw new Error('StreamingResampler used after destroy()');
  }
}

/** One-shot conversion of a whole buffer (files, tests): streaming + flush. */
export async function resampleOnce(
  input: Int16Array,
  fromRate: number,
  toRate: number,
  options: StreamingResamplerOptions = {},
): Promise<Int16Array> {
  if (fromRate === toRate) return input.slice();
  const r = await StreamingResampler.create(fromRate, toRate, { timing: 'aligned', ...options });
  try {
    const head = r.process(input);
    const tail = r.flush();
    const out = new Int16Array(head.length + tail.length);
    out.set(head, 0);
    out.set(tail, head.length);
    return out;
  } finally {
    r.destroy();
  }
}
