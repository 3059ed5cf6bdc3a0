/**
 * Cut a PCM16 stream of arbitrary chunk sizes into exact internal frames.
 */
import { FRAME_SAMPLES, type AudioFrame } from './format.js';

export interface FramerOptions {
  /** Samples per frame. Default FRAME_SAMPLES (20 ms at 16 kHz). */
  frameSamples?: number;
  /** First sequence number. Default 0. */
  startSeq?: number;
}

/**
 * Accumulates PCM16 chunks and emits exact frames.
 *
 * Timestamp rule: a frame is stamped with the arrival time of the chunk that holds its FIRST
 * sample. That is when the frame's audio started to exist at the server, so latency measured from
 * it includes the wait for the rest of the frame; all frames starting inside one chunk share its
 * arrival time.
 */
export class Framer {
  readonly frameSamples: number;
  private pending: Int16Array;
  private fill = 0;
  private pendingTs = 0;
  private nextSeq: number;

  constructor(options: FramerOptions = {}) {
    const n = options.frameSamples ?? FRAME_SAMPLES;
    if (!Number.isInteger(n) || n <= 0) throw new RangeError(`Framer: frameSamples must be a positive integer, got ${n}`);
    this.frameSamples = n;
    this.pending = new Int16Array(n);
    this.nextSeq = options.startSeq ?? 0;
  }

  /** Samples waiting for the rest of their frame. */
  get pendingSamples(): number {
    return this.fill;
  }

  /** Sequence number the next emitted frame will carry. */
  get seq(): number {
    return this.nextSeq;
  }

  /** Add a chunk that arrived at `arrivalMs` (performance.now() clock); returns the frames it completed. */
  push(chunk: Int16Array, arrivalMs: number = performance.now()): AudioFrame[] {
    const frames: AudioFrame[] = [];
    const n = this.frameSamples;
    let off = 0;
    while (off < chunk.length) {
      if (this.fill === 0) this.pendingTs = arrivalMs;
      const take = Math.min(n - this.fill, chunk.length - off);
      this.pending.set(chunk.subarray(off, off + take), this.fill);
      this.fill += take;
      off += take;
      if (this.fill === n) {
        // Hand the buffer itself to the frame (consumers may keep it) and start a fresh one.
        frames.push({ samples: this.pending, timestampMs: this.pendingTs, seq: this.nextSeq++ });
        this.pending = new Int16Array(n);
        this.fill = 0;
      }
    }
    return frames;
  }

  /** End of stream: emit the partial frame zero-padded to full length, or null if nothing is pending. */
  flush(): AudioFrame | null {
    if (this.fill === 0) return null;
    const frame: AudioFrame = { samples: this.pending, timestampMs: this.pendingTs, seq: this.nextSeq++ };
    this.pending = new Int16Array(this.frameSamples);
    this.fill = 0;
    return frame;
  }

  /** Drop pending samples (e.g. barge-in); the sequence keeps counting. */
  clear(): void {
    this.pending.fill(0);
    this.fill = 0;
  }
}

export interface SplitOptions {
  /** Samples per frame. Default FRAME_SAMPLES. */
  frameSamples?: number;
  /** Zero-pad the last partial frame (true, default) or drop it into `remainder`. */
  padLast?: boolean;
}

/**
 * Outbound helper: split one PCM chunk (e.g. a synthesized sentence) into frames. Each frame is a
 * copy, so the caller may reuse `pcm`. With padLast=false the unframed tail is returned in
 * `remainder` for the caller to prepend to its next chunk (or use a Framer for streams).
 */
export function splitIntoFrames(
  pcm: Int16Array,
  options: SplitOptions = {},
): { frames: Int16Array[]; remainder: Int16Array } {
  const n = options.frameSamples ?? FRAME_SAMPLES;
  if (!Number.isInteger(n) || n <= 0) throw new RangeError(`splitIntoFrames: frameSamples must be a positive integer, got ${n}`);
  const padLast = options.padLast ?? true;
  const frames: Int16Array[] = [];
  const whole = Math.floor(pcm.length / n) * n;
  for (let off = 0; off < whole; off += n) frames.push(pcm.slice(off, off + n));
  const tail = pcm.subarray(whole);
  if (tail.length > 0 && padLast) {
    const last = new Int16Array(n);
    last.set(tail);
    frames.push(last);
    return { frames, remainder: new Int16Array(0) };
  }
  return { frames, remainder: tail.slice() };
}

/** Join frames back into one buffer (e.g. to write a WAV of what was played). */
export function concatPcm(chunks: readonly Int16Array[]): Int16Array {
  let total = 0;
  for (const c of chunks) total += c.length;
  const out = new Int16Array(total);
  let off = 0;
  for (const c of chunks) {
    out.set(c, off);
    off += c.length;
  }
  return out;
}

/** `convert` applied to `pcm` `size` samples at a time, the results joined (long buffers through a stateful converter). */
export function convertInBlocks(pcm: Int16Array, size: number, convert: (block: Int16Array) => Int16Array): Int16Array {
  if (pcm.length <= size) return convert(pcm);
  const parts: Int16Array[] = [];
  for (let off = 0; off < pcm.length; off += size) parts.push(convert(pcm.subarray(off, off + size)));
  return concatPcm(parts);
}
