import { describe, expect, it } from 'vitest';
import { concatPcm } from '../src/audio/framer.js';
import { PolyphaseResampler, polyphaseFactors } from '../src/audio/polyphase.js';
import { StreamingResampler, resampleOnce } from '../src/audio/resample.js';

function sine(freq: number, rate: number, samples: number, amplitude = 0.5): Int16Array {
  const out = new Int16Array(samples);
  for (let i = 0; i < samples; i++) out[i] = Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / rate));
  return out;
}

function rms(x: Int16Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s / Math.max(1, x.length));
}

/** Level of `y` against a full-length sine of the same amplitude, in dB, away from the start-up and tail. */
function gainDb(y: Int16Array, rate: number, amplitude = 0.5): number {
  const k = Math.round(rate / 10);
  const ref = (amplitude * 32767) / Math.SQRT2;
  return 20 * Math.log10(rms(y.subarray(k, y.length - k)) / ref);
}

/** Deterministic noise (LCG). */
function noise(samples: number, seed = 7): Int16Array {
  let s = seed;
  return Int16Array.from({ length: samples }, () => {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    return (s % 20000) - 10000;
  });
}

/** `x` through `r` in a pattern of chunk sizes (1 sample to more than a frame), then its flush. */
function streamed(r: PolyphaseResampler, x: Int16Array): Int16Array {
  const sizes = [1, 160, 7, 320, 333, 2, 960, 45];
  const parts: Int16Array[] = [];
  for (let off = 0, i = 0; off < x.length; i++) {
    const n = sizes[i % sizes.length];
    parts.push(r.process(x.subarray(off, off + n)));
    off += n;
  }
  parts.push(r.flush());
  return concatPcm(parts);
}

describe('PolyphaseResampler', () => {
  it('serves the edges’ small ratios and leaves the others to libsamplerate', () => {
    expect(polyphaseFactors(8000, 16000)).toEqual({ up: 2, down: 1 });
    expect(polyphaseFactors(48000, 16000)).toEqual({ up: 1, down: 3 });
    expect(polyphaseFactors(24000, 16000)).toEqual({ up: 2, down: 3 });
    expect(polyphaseFactors(22050, 16000)).toBeUndefined();
    expect(polyphaseFactors(44100, 16000)).toBeUndefined();
    expect(() => new PolyphaseResampler(44100, 16000)).toThrow(RangeError);
  });

  // The telephone band and the recognisers' mel filters (to 6.8 kHz) pass within 0.5 dB; what the lower rate cannot
  // carry is 60 dB down or more, not folded back into the band.
  const cases: Array<{ from: number; to: number; pass: number[]; stop: number[] }> = [
    { from: 8000, to: 16000, pass: [300, 1000, 2500, 3300], stop: [] },
    { from: 16000, to: 8000, pass: [300, 1000, 2500, 3300], stop: [4800, 6000, 7500] },
    { from: 48000, to: 16000, pass: [300, 2000, 5000, 6700], stop: [9600, 12000, 20000] },
    { from: 16000, to: 48000, pass: [300, 2000, 5000, 6700], stop: [] },
    { from: 24000, to: 16000, pass: [300, 3000, 6700], stop: [9500, 11000] },
  ];
  for (const { from, to, pass, stop } of cases) {
    it(`${from} → ${to} Hz: pass band flat, stop band removed`, () => {
      for (const f of pass) {
        const y = streamed(new PolyphaseResampler(from, to), sine(f, from, from / 2));
        expect(Math.abs(gainDb(y, to)), `${f} Hz`).toBeLessThan(0.5);
      }
      for (const f of stop) {
        const y = streamed(new PolyphaseResampler(from, to), sine(f, from, from / 2));
        expect(gainDb(y, to), `${f} Hz`).toBeLessThan(-60);
      }
    });
  }

  it('images of an upsampled tone are removed', () => {
    // 3 kHz at 8 kHz, upsampled: zero-stuffing images it at 5 kHz; the filter must leave only 3 kHz.
    const y = streamed(new PolyphaseResampler(8000, 16000), sine(3000, 8000, 8000));
    const mid = y.subarray(1600, y.length - 1600);
    // Project onto 5 kHz (the image) and 3 kHz (the tone).
    const power = (f: number): number => {
      let re = 0;
      let im = 0;
      for (let i = 0; i < mid.length; i++) {
        re += mid[i] * Math.cos((2 * Math.PI * f * i) / 16000);
        im += mid[i] * Math.sin((2 * Math.PI * f * i) / 16000);
      }
      return Math.hypot(re, im);
    };
    expect(20 * Math.log10(power(5000) / power(3000))).toBeLessThan(-60);
  });

  it('any chunk sizes give the same samples as one call, and the length is exactly input × ratio', () => {
    for (const [from, to] of [[8000, 16000], [16000, 8000], [48000, 16000], [16000, 48000], [24000, 16000]]) {
      const x = noise(from);
      const one = new PolyphaseResampler(from, to);
      const whole = concatPcm([one.process(x), one.flush()]);
      const pieces = streamed(new PolyphaseResampler(from, to), x);
      expect(whole.length).toBe(to);
      expect(pieces).toEqual(whole);
    }
    // Longer than one pass (1 s at 48 kHz): converted in blocks, the same samples.
    const long = noise(48000 * 2.5, 11);
    const once = new PolyphaseResampler(48000, 16000);
    expect(concatPcm([once.process(long), once.flush()])).toEqual(streamed(new PolyphaseResampler(48000, 16000), long));
  });

  it('digital silence between sounds, taken frame by frame (silent frames not filtered), gives the samples of one call', () => {
    for (const [from, to] of [[8000, 16000], [16000, 8000], [48000, 16000], [16000, 48000]]) {
      // Under one 48,000-sample block, so the single call filters every sample.
      const x = concatPcm([noise(from / 4, 5), new Int16Array(from / 2), noise(from / 4, 6), new Int16Array(from / 4)]);
      const one = new PolyphaseResampler(from, to);
      const whole = concatPcm([one.process(x), one.flush()]);
      const frame = from / 50;
      const r = new PolyphaseResampler(from, to);
      const parts: Int16Array[] = [];
      for (let off = 0; off < x.length; off += frame) parts.push(r.process(x.subarray(off, off + frame)));
      parts.push(r.flush());
      const framed = concatPcm(parts);
      expect(framed, `${from} → ${to}`).toEqual(whole);
      // The zeros a filter length after the first sound are exact zeros out.
      expect(framed.subarray(Math.round(to * 0.3), Math.round(to * 0.7)).every((v) => v === 0)).toBe(true);
    }
  });

  it('takes its filter delay back: output sample n is input time n / toRate', () => {
    // A click at 100 ms comes out at 100 ms at the new rate (within one sample), both ways.
    for (const [from, to] of [[8000, 16000], [16000, 8000], [48000, 16000], [16000, 48000]]) {
      const x = new Int16Array(from / 5);
      x[from / 10] = 30000;
      const r = new PolyphaseResampler(from, to);
      const y = concatPcm([r.process(x), r.flush()]);
      let peak = 0;
      for (let i = 1; i < y.length; i++) if (Math.abs(y[i]) > Math.abs(y[peak])) peak = i;
      expect(Math.abs(peak - to / 10), `${from} → ${to}`).toBeLessThanOrEqual(1);
    }
  });

  it('reset forgets the previous stream', () => {
    const r = new PolyphaseResampler(48000, 16000);
    r.process(sine(440, 48000, 4800, 0.9));
    r.reset();
    const fresh = new PolyphaseResampler(48000, 16000);
    const x = noise(960, 3);
    expect(r.process(x)).toEqual(fresh.process(x));
  });

  it('is what StreamingResampler uses at its default quality for these ratios, libsamplerate otherwise', async () => {
    const x = noise(8000);
    const direct = new PolyphaseResampler(8000, 16000);
    expect(await resampleOnce(x, 8000, 16000)).toEqual(concatPcm([direct.process(x), direct.flush()]));
    // 'medium' stays on libsamplerate: close to the FIR on a speech-band tone, not sample-identical.
    const tone = sine(1000, 8000, 8000);
    const viaLibrary = await resampleOnce(tone, 8000, 16000, { quality: 'medium' });
    expect(viaLibrary.length).toBe(16000);
    expect(Math.abs(gainDb(viaLibrary, 16000))).toBeLessThan(0.5);
    const other = await StreamingResampler.create(22050, 16000);
    expect(other.process(sine(440, 22050, 2205)).length).toBeGreaterThan(1500);
    other.destroy();
  });
});
