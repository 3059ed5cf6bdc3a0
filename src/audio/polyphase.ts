/**
 * Polyphase FIR resampling for the small rational ratios the edges use every 20 ms (8↔16 kHz for phone lines,
 * 48↔16 kHz for WebRTC): a Kaiser-windowed sinc designed once per ratio, applied one phase per output sample, in
 * plain JS. libsamplerate's sinc converters handle any ratio by interpolating their filter table per sample; for a
 * fixed small ratio that is 3–4× the work (BENCHMARKS.md "A resampler for the edges' ratios"; test/audio.test.ts
 * logs it), and at 50 frames a second per call and direction it was half of a SIP call's main-thread CPU.
 *
 * Design: pass band to 85 % of the lower rate's Nyquist (3.4 kHz for 8 kHz, 6.8 kHz for 16 kHz: the telephone band,
 * and the top of the recognisers' mel filters), stop band from 115 % of it, 70 dB down. Whatever the transition
 * band folds lands above the pass band.
 *
 * The filter's delay (~1 ms at 16 kHz, ~2 ms at 8 kHz) is either taken back by dropping its first outputs, so output
 * sample n is input time n / toRate, as with libsamplerate, and `flush()` pushes the held-back tail out (`aligned`:
 * whole files); or left in the signal (`live`): then each output leaves with the input that completes it, a chunk
 * of n inputs gives n × toRate / fromRate outputs from the first chunk on, and a 20 ms frame cut after the resampler
 * is complete when the chunk that ends it arrives, not one chunk later for want of a few held-back samples.
 */

import { concatPcm, convertInBlocks } from './framer.js';

/**
 * `live`: outputs leave as soon as their inputs are in, the filter's delay in the signal (real-time streams);
 * `aligned`: output n is input time n / toRate, the delay held back until flush() (whole files).
 */
export type ResamplerTiming = 'live' | 'aligned';

/** Largest up or down factor (after reducing the ratio) served here; other ratios go to libsamplerate. */
const MAX_POLYPHASE_FACTOR = 6;
const PASS_EDGE = 0.85;
const STOP_EDGE = 1.15;
const STOP_ATTENUATION_DB = 70;
/** Input samples converted per pass (1 s at 48 kHz); longer inputs go through in blocks. */
const BLOCK = 48_000;

function gcd(a: number, b: number): number {
  while (b !== 0) [a, b] = [b, a % b];
  return a;
}

/** The reduced up/down factors of a rate change, or undefined when either is over MAX_POLYPHASE_FACTOR. */
export function polyphaseFactors(fromRate: number, toRate: number): { up: number; down: number } | undefined {
  const g = gcd(fromRate, toRate);
  const up = toRate / g;
  const down = fromRate / g;
  return up <= MAX_POLYPHASE_FACTOR && down <= MAX_POLYPHASE_FACTOR ? { up, down } : undefined;
}

/** Modified Bessel function of the first kind, order 0 (power series; converges fast for the β used here). */
function besselI0(x: number): number {
  let sum = 1;
  let term = 1;
  for (let k = 1; k < 50; k++) {
    term *= (x / (2 * k)) ** 2;
    sum += term;
    if (term < sum * 1e-12) break;
  }
  return sum;
}

/**
 * One phase's taps, zeros left out: an output of this phase is Σ coefs[k] · x[newest − ages[k]]. With the cut-off at
 * the lower Nyquist, every up-th tap of the prototype (counted from its centre) is zero: one phase of an
 * interpolator is the input itself, and a decimator skips every down-th tap.
 */
interface Phase {
  ages: Int32Array;
  coefs: Float64Array;
  /** The ages are consecutive (ages[k] = ages[0] + k). */
  dense: boolean;
  /** Mirrored taps (k and n−1−k) are equally far from the phase's centre and share a coefficient. */
  symmetric: boolean;
}

interface Design {
  phases: Phase[];
  /** Inputs a phase can reach back (the longest phase's span). */
  taps: number;
  /** Outputs to drop at the start: the filter's delay in output samples. */
  delay: number;
}

const designs = new Map<string, Design>();

/** The prototype low-pass at up × the input rate, split into its `up` phases (cached per ratio). */
function design(up: number, down: number): Design {
  const key = `${up}/${down}`;
  const cached = designs.get(key);
  if (cached) return cached;
  // Frequencies as fractions of the upsampled rate; the lower of the two Nyquists is 0.5 / max(up, down).
  const nyquist = 0.5 / Math.max(up, down);
  const transition = (STOP_EDGE - PASS_EDGE) * nyquist;
  const beta = 0.1102 * (STOP_ATTENUATION_DB - 8.7);
  // Kaiser's length estimate, rounded up to whole phases.
  const estimate = Math.ceil((STOP_ATTENUATION_DB - 8) / (2.285 * 2 * Math.PI * transition)) + 1;
  const taps = Math.ceil(estimate / up);
  // An odd length puts the centre on a sample, where the sinc's zeros fall on whole taps.
  const length = taps * up - ((taps * up) % 2 === 0 ? 1 : 0);
  const centre = (length - 1) / 2;
  const cutoff = nyquist; // the middle of the transition band
  const i0Beta = besselI0(beta);
  const h = new Float64Array(taps * up);
  for (let n = 0; n < length; n++) {
    const t = n - centre;
    const sinc = t === 0 ? 2 * cutoff : Math.sin(2 * Math.PI * cutoff * t) / (Math.PI * t);
    const r = t / centre;
    const window = besselI0(beta * Math.sqrt(Math.max(0, 1 - r * r))) / i0Beta;
    // × up: zero-stuffing leaves 1/up of the energy in each phase.
    h[n] = sinc * window * up;
  }
  const peak = Math.max(...h.map(Math.abs));
  const phases = Array.from({ length: up }, (_, p): Phase => {
    const ages: number[] = [];
    const coefs: number[] = [];
    for (let k = 0; k < taps; k++) {
      const c = h[p + k * up];
      if (Math.abs(c) > peak * 1e-9) {
        ages.push(k);
        coefs.push(c);
      }
    }
    const n = ages.length;
    const symmetric = ages.every((a, k) => a + ages[n - 1 - k] === ages[0] + ages[n - 1] && Math.abs(coefs[k] - coefs[n - 1 - k]) <= peak * 1e-12);
    return { ages: Int32Array.from(ages), coefs: Float64Array.from(coefs), dense: ages.every((a, k) => a === ages[0] + k), symmetric };
  });
  const result = { phases, taps, delay: Math.round(centre / down) };
  designs.set(key, result);
  return result;
}

/** PCM16 in, PCM16 out (rounded and clipped), any chunk sizes, state kept between chunks. */
export class PolyphaseResampler {
  readonly up: number;
  readonly down: number;
  private readonly design: Design;
  /** The last taps−1 inputs, then the chunk being converted. */
  private history: Float64Array;
  /** Index in `history` of the newest input the next output uses, and that output's phase. */
  private next: number;
  private phase = 0;
  private toSkip: number;
  private samplesIn = 0;
  private samplesOut = 0;
  /**
   * Zero samples at the end of the input so far. Once every input a block's outputs reach back to is zero (digital
   * silence: an agent between replies, a line with nothing on it), its outputs are zero with no filtering.
   */
  private trailingZeros: number;
  /** Outputs dropped at the start of a stream: the filter's delay when aligned, none when live. */
  private readonly skipAtStart: number;

  constructor(fromRate: number, toRate: number, timing: ResamplerTiming = 'aligned') {
    const factors = polyphaseFactors(fromRate, toRate);
    if (!factors) throw new RangeError(`PolyphaseResampler: ${fromRate}→${toRate} Hz is not a small rational ratio`);
    this.up = factors.up;
    this.down = factors.down;
    this.design = design(this.up, this.down);
    this.history = new Float64Array(this.design.taps - 1 + 1024);
    this.next = this.design.taps - 1;
    this.skipAtStart = timing === 'aligned' ? this.design.delay : 0;
    this.toSkip = this.skipAtStart;
    this.trailingZeros = this.design.taps - 1;
  }

  process(input: Int16Array): Int16Array {
    // A whole file goes through in blocks: its float history would otherwise be all of it (1 GB for a 1 h upload).
    return convertInBlocks(input, BLOCK, (block) => this.processBlock(block));
  }

  private processBlock(input: Int16Array): Int16Array {
    const { taps, phases } = this.design;
    const held = taps - 1;
    const end = held + input.length;
    if (this.history.length < end) {
      const grown = new Float64Array(end);
      grown.set(this.history.subarray(0, held));
      this.history = grown;
    }
    const x = this.history;
    let lastNonZero = -1;
    for (let i = 0; i < input.length; i++) {
      x[held + i] = input[i] / 32768;
      if (input[i] !== 0) lastNonZero = i;
    }
    // Every output of this block reads inputs from x[0] on (next − the oldest tap's age ≥ 0): all zero, all silent.
    const silent = lastNonZero < 0 && this.trailingZeros >= held;
    this.trailingZeros = lastNonZero < 0 ? this.trailingZeros + input.length : input.length - 1 - lastNonZero;
    // Outputs whose newest input is in this chunk: about input × up / down, plus one.
    const out = new Int16Array(Math.ceil(((end - this.next) * this.up) / this.down) + 1);
    let written = 0;
    let next = this.next;
    let phase = this.phase;
    let toSkip = this.toSkip;
    const up = this.up;
    const down = this.down;
    if (silent) {
      // The same steps as below with every output 0 (`out` starts zeroed).
      while (next < end) {
        if (toSkip > 0) toSkip--;
        else written++;
        phase += down;
        while (phase >= up) {
          phase -= up;
          next++;
        }
      }
    } else {
      while (next < end) {
        const { ages, coefs, dense, symmetric } = phases[phase];
        const n = coefs.length;
        let acc = 0;
        if (symmetric) {
          // A linear-phase filter's mirrored taps share a coefficient: one multiply per pair.
          const half = n >> 1;
          if (dense) {
            const newest = next - ages[0];
            const oldest = next - ages[n - 1];
            for (let k = 0; k < half; k++) acc += coefs[k] * (x[newest - k] + x[oldest + k]);
          } else for (let k = 0; k < half; k++) acc += coefs[k] * (x[next - ages[k]] + x[next - ages[n - 1 - k]]);
          if (n & 1) acc += coefs[half] * x[next - ages[half]];
        } else if (dense) {
          // Consecutive taps (an interpolator's phases): no index table to read.
          const newest = next - ages[0];
          for (let k = 0; k < n; k++) acc += coefs[k] * x[newest - k];
        } else for (let k = 0; k < n; k++) acc += coefs[k] * x[next - ages[k]];
        if (toSkip > 0) toSkip--;
        else {
          const v = Math.round(acc * 32768);
          out[written++] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
        }
        phase += down;
        while (phase >= up) {
          phase -= up;
          next++;
        }
      }
    }
    this.toSkip = toSkip;
    // Keep the last taps−1 inputs for the next chunk.
    x.copyWithin(0, end - held, end);
    this.next = next - input.length;
    this.phase = phase;
    this.samplesIn += input.length;
    this.samplesOut += written;
    // A view of a fresh buffer a sample or two longer: no second copy on the audio path.
    return out.subarray(0, written);
  }

  /**
   * The held-back tail (fed silence), so the whole output is input × toRate / fromRate long (aligned), or that plus
   * the filter's delay (live: the signal's last samples were still in the filter); then reset.
   */
  flush(): Int16Array {
    const expected = Math.round((this.samplesIn * this.up) / this.down) + this.design.delay - this.skipAtStart;
    const missing = expected - this.samplesOut;
    const parts: Int16Array[] = [];
    let got = 0;
    const zeros = new Int16Array(this.design.taps);
    for (let round = 0; got < missing && round < 8; round++) {
      const part = this.process(zeros);
      parts.push(part);
      got += part.length;
    }
    const tail = new Int16Array(Math.max(0, missing));
    tail.set(concatPcm(parts).subarray(0, tail.length));
    this.reset();
    return tail;
  }

  /** Forget the filter's history (a new stream, or a discontinuity). */
  reset(): void {
    this.history.fill(0, 0, this.design.taps - 1);
    this.next = this.design.taps - 1;
    this.phase = 0;
    this.toSkip = this.skipAtStart;
    this.samplesIn = 0;
    this.samplesOut = 0;
    this.trailingZeros = this.design.taps - 1;
  }
}
