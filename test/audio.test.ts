import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import wavefile from 'wavefile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CodecSpecError,
  createInboundDecoder,
  createOutboundEncoder,
  validateCodecSpec,
  type CodecSpec,
} from '../src/audio/codec.js';
import { FRAME_SAMPLES, type AudioFrame } from '../src/audio/format.js';
import { Framer, concatPcm, splitIntoFrames } from '../src/audio/framer.js';
import { decodeAlaw, decodeMulaw, encodeAlaw, encodeMulaw } from '../src/audio/g711.js';
import { OpusDecodeError, OpusDecoder, OpusEncodeError, OpusEncoder } from '../src/audio/opus.js';
import {
  StreamingResampler,
  float32ToInt16,
  resampleOnce,
  type ResamplerQuality,
} from '../src/audio/resample.js';
import { encodeWav, parseWav, readWav, writeWav, WavFormatError } from '../src/audio/wav.js';

// ---------- signal helpers ----------

function sine(freq: number, rate: number, samples: number, amplitude = 0.5): Int16Array {
  const out = new Int16Array(samples);
  for (let i = 0; i < samples; i++) out[i] = Math.round(amplitude * 32767 * Math.sin((2 * Math.PI * freq * i) / rate));
  return out;
}

/** Frequency from positive-going zero crossings (linear interpolation between samples). */
function zeroCrossingHz(x: Int16Array, rate: number): number {
  let first = -1;
  let last = -1;
  let count = 0;
  for (let i = 1; i < x.length; i++) {
    if (x[i - 1] < 0 && x[i] >= 0) {
      const t = i - 1 + -x[i - 1] / (x[i] - x[i - 1]);
      if (first < 0) first = t;
      else count++;
      last = t;
    }
  }
  return count > 0 ? (count * rate) / (last - first) : 0;
}

function rms(x: Int16Array): number {
  let s = 0;
  for (let i = 0; i < x.length; i++) s += x[i] * x[i];
  return Math.sqrt(s / Math.max(1, x.length));
}

function db(a: number, b: number): number {
  return 20 * Math.log10(a / b);
}

/** Trim `ms` from both ends (codec/filter start-up and tail). */
function middle(x: Int16Array, rate: number, ms = 100): Int16Array {
  const k = Math.round((rate * ms) / 1000);
  return x.subarray(k, x.length - k);
}

/** Deterministic chunk sizes, including 1-sample and larger-than-frame chunks. */
function oddChunks(total: number, seed = 1): number[] {
  const sizes: number[] = [];
  let s = seed;
  let left = total;
  while (left > 0) {
    s = (s * 1103515245 + 12345) & 0x7fffffff;
    const n = Math.min(left, [1, 7, 113, 333, 1001, 47, 640][s % 7]);
    sizes.push(n);
    left -= n;
  }
  return sizes;
}

function streamThrough(r: StreamingResampler, input: Int16Array, sizes: number[]): Int16Array {
  const parts: Int16Array[] = [];
  let off = 0;
  for (const n of sizes) {
    parts.push(r.process(input.subarray(off, off + n)));
    off += n;
  }
  parts.push(r.flush());
  return concatPcm(parts);
}

// ---------- resampler ----------

describe('StreamingResampler', () => {
  it('16k → 48k → 16k keeps a 440 Hz sine (frequency and level within 1 dB)', async () => {
    const x = sine(440, 16000, 16000);
    const up = await StreamingResampler.create(16000, 48000);
    const down = await StreamingResampler.create(48000, 16000);
    const mid: Int16Array[] = [];
    const back: Int16Array[] = [];
    for (let off = 0; off < x.length; off += FRAME_SAMPLES) {
      const u = up.process(x.subarray(off, off + FRAME_SAMPLES));
      mid.push(u);
      back.push(down.process(u));
    }
    const m = concatPcm(mid);
    const y = concatPcm(back);
    up.destroy();
    down.destroy();
    expect(Math.abs(m.length - 48000)).toBeLessThan(64);
    expect(Math.abs(y.length - 16000)).toBeLessThan(64);
    expect(zeroCrossingHz(middle(m, 48000), 48000)).toBeCloseTo(440, 0);
    expect(zeroCrossingHz(middle(y, 16000), 16000)).toBeCloseTo(440, 0);
    expect(Math.abs(db(rms(middle(m, 48000)), rms(middle(x, 16000))))).toBeLessThan(1);
    expect(Math.abs(db(rms(middle(y, 16000)), rms(middle(x, 16000))))).toBeLessThan(1);
  });

  it('streaming in odd-sized chunks equals one-shot conversion', async () => {
    const x = sine(440, 16000, 16000, 0.8);
    const oneShot = await resampleOnce(x, 16000, 48000);
    const r = await StreamingResampler.create(16000, 48000, { timing: 'aligned' });
    const streamed = streamThrough(r, x, oddChunks(x.length));
    r.destroy();
    expect(oneShot.length).toBe(48000);
    expect(streamed.length).toBe(48000);
    let maxDiff = 0;
    for (let i = 0; i < streamed.length; i++) maxDiff = Math.max(maxDiff, Math.abs(streamed[i] - oneShot[i]));
    expect(maxDiff).toBeLessThanOrEqual(2);
  });

  it('8 kHz ↔ 16 kHz keeps speech-band tones and filters what 8 kHz cannot carry', async () => {
    const up = await resampleOnce(sine(440, 8000, 8000), 8000, 16000);
    expect(up.length).toBe(16000);
    expect(zeroCrossingHz(middle(up, 16000), 16000)).toBeCloseTo(440, 0);
    expect(Math.abs(db(rms(middle(up, 16000)), rms(sine(440, 16000, 16000))))).toBeLessThan(1);

    const down = await resampleOnce(sine(1000, 16000, 16000), 16000, 8000);
    expect(down.length).toBe(8000);
    expect(zeroCrossingHz(middle(down, 8000), 8000)).toBeCloseTo(1000, 0);
    // 5 kHz is above the 4 kHz Nyquist of 8 kHz: the anti-alias filter must remove it, not fold it to 3 kHz.
    const aliased = await resampleOnce(sine(5000, 16000, 16000), 16000, 8000);
    expect(db(rms(middle(aliased, 8000)), rms(sine(5000, 16000, 16000)))).toBeLessThan(-40);
  });

  it('clips instead of wrapping when the filter overshoots full scale', async () => {
    expect(Array.from(float32ToInt16(Float32Array.from([1.5, -1.5, 0.5, -1])))).toEqual([32767, -32768, 16384, -32768]);
    const square = new Int16Array(16000);
    for (let i = 0; i < square.length; i++) square[i] = Math.floor(i / 80) % 2 === 0 ? 32767 : -32768;
    const y = await resampleOnce(square, 16000, 48000);
    let maxJump = 0;
    for (let i = 1; i < y.length; i++) maxJump = Math.max(maxJump, Math.abs(y[i] - y[i - 1]));
    expect(maxJump).toBeLessThan(45000); // a wrapped overshoot jumps by ~65000
  });

  it('passes through when rates are equal and refuses a sync backend-less construction', async () => {
    const r = await StreamingResampler.create(16000, 16000);
    const x = sine(440, 16000, 320);
    const y = r.process(x);
    expect(y).toEqual(x);
    expect(y).not.toBe(x);
    expect(r.flush().length).toBe(0);
    r.destroy();
    expect(() => r.process(x)).toThrow(/after destroy/);
    expect(() => new StreamingResampler(16000, 8000)).toThrow(/StreamingResampler.create/);
    await expect(StreamingResampler.create(16000, 0)).rejects.toThrow(RangeError);
  });

  it('re-uses pooled converters without carrying state or the old ratio', async () => {
    // 'medium' keeps these on libsamplerate's pooled WASM converters ('fastest' takes the polyphase FIR here).
    const a = await StreamingResampler.create(8000, 48000, { quality: 'medium' });
    a.process(sine(440, 8000, 8000));
    a.destroy();
    const b = await StreamingResampler.create(48000, 16000, { quality: 'medium', timing: 'aligned' }); // likely the pooled instance from `a`
    const y = streamThrough(b, sine(440, 48000, 48000), oddChunks(48000, 3));
    b.destroy();
    expect(y.length).toBe(16000);
    expect(zeroCrossingHz(middle(y, 16000), 16000)).toBeCloseTo(440, 0);
    // First samples must be the new stream's start (a sine starting at 0), not the old stream's tail.
    expect(Math.abs(y[0])).toBeLessThan(1000);
  });

  // A live stream's frames must not wait for the next chunk: with the filter's delay held back, a phone line's 20 ms
  // packet gave 20 ms less a few samples, and the frame it ended was complete only on the next packet's arrival.
  it('live: each chunk gives its whole length at once, the signal being the aligned one delayed by the filter', async () => {
    const cases: Array<[number, number, ResamplerQuality]> = [
      [8000, 16000, 'fastest'],
      [16000, 8000, 'fastest'],
      [48000, 16000, 'fastest'],
      [24000, 16000, 'fastest'],
      [48000, 16000, 'medium'],
      [8000, 16000, 'medium'],
    ];
    for (const [from, to, quality] of cases) {
      const x = sine(440, from, from / 2, 0.5);
      const chunk = from / 100; // 10 ms: WebRTC's chunks; a phone line's 20 ms packets are two of them
      const live = await StreamingResampler.create(from, to, { quality });
      const parts: Int16Array[] = [];
      for (let off = 0; off < x.length; off += chunk) parts.push(live.process(x.subarray(off, off + chunk)));
      expect(
        parts.map((p) => p.length),
        `${from}→${to} ${quality}`,
      ).toEqual(parts.map(() => to / 100));
      // Framed after the resampler, a 20 ms frame is complete with the chunk that ends it.
      const framer = new Framer({ frameSamples: (to / 1000) * 20 });
      expect(parts.map((p) => framer.push(p, 0).length)).toEqual(parts.map((_, i) => (i % 2 === 1 ? 1 : 0)));
      const tail = live.flush();
      const aligned = await resampleOnce(x, from, to, { quality });
      const streamed = concatPcm([...parts, tail]);
      // The same sound, later by the filter's delay (a few samples), and whole: the tail comes out on flush().
      const delay = streamed.length - aligned.length;
      expect(delay, `${from}→${to} ${quality}`).toBeGreaterThan(0);
      expect(delay, `${from}→${to} ${quality}`).toBeLessThan((to / 1000) * (quality === 'fastest' ? 3 : 8));
      let maxDiff = 0;
      for (let i = 0; i < aligned.length; i++) maxDiff = Math.max(maxDiff, Math.abs(streamed[i + delay] - aligned[i]));
      expect(maxDiff, `${from}→${to} ${quality}`).toBeLessThanOrEqual(quality === 'fastest' ? 0 : 2);
      live.destroy();
    }
  });

  it('measures cost per 20 ms frame', async () => {
    const cases: Array<[number, number, ResamplerQuality]> = [
      [16000, 48000, 'fastest'],
      [48000, 16000, 'fastest'],
      [8000, 16000, 'fastest'],
      [16000, 8000, 'fastest'],
      [24000, 16000, 'fastest'],
      [16000, 48000, 'medium'],
      [48000, 16000, 'medium'],
    ];
    const lines: string[] = [];
    for (const [from, to, quality] of cases) {
      const r = await StreamingResampler.create(from, to, { quality });
      const frame = sine(440, from, from / 50);
      for (let i = 0; i < 200; i++) r.process(frame); // warm up the JIT
      const n = 2000;
      const t0 = performance.now();
      for (let i = 0; i < n; i++) r.process(frame);
      const us = ((performance.now() - t0) / n) * 1000;
      r.destroy();
      lines.push(`${from}→${to} ${quality}: ${us.toFixed(1)} µs/frame`);
      expect(us).toBeLessThan(5000);
    }
    const t0 = performance.now();
    const fresh = await StreamingResampler.create(11025, 16000); // pool may be warm: both paths are cheap
    const createMs = performance.now() - t0;
    fresh.destroy();
    console.log(`[resampler] ${lines.join('; ')}; create ${createMs.toFixed(1)} ms`);
  });
});

// ---------- G.711 ----------

describe('G.711', () => {
  const x = sine(440, 8000, 8000, 0.5);
  for (const [name, enc, dec] of [
    ['µ-law', encodeMulaw, decodeMulaw],
    ['A-law', encodeAlaw, decodeAlaw],
  ] as const) {
    it(`${name} round trip keeps ~38 dB SNR`, () => {
      const bytes = enc(x);
      expect(bytes).toBeInstanceOf(Uint8Array);
      expect(bytes.length).toBe(x.length);
      const y = dec(bytes);
      expect(y).toBeInstanceOf(Int16Array);
      const err = new Int16Array(x.length);
      for (let i = 0; i < x.length; i++) err[i] = x[i] - y[i];
      expect(db(rms(x), rms(err))).toBeGreaterThan(30);
      // Full-scale and silence survive.
      expect(Math.abs(dec(enc(Int16Array.from([0])))[0])).toBeLessThanOrEqual(8);
      expect(dec(enc(Int16Array.from([32767, -32768])))[0]).toBeGreaterThan(32000);
    });
  }
});

// ---------- Opus ----------

describe('Opus', () => {
  for (const rate of [16000, 48000] as const) {
    it(`encode/decode round trip of a sine at ${rate} Hz keeps frequency and energy`, () => {
      const enc = new OpusEncoder(rate);
      const dec = new OpusDecoder(rate);
      const x = sine(440, rate, rate, 0.3);
      const n = enc.frameSamples(20);
      const out: Int16Array[] = [];
      let bytes = 0;
      for (let off = 0; off < x.length; off += n) {
        const pkt = enc.encode(x.subarray(off, off + n));
        bytes += pkt.length;
        const pcm = dec.decode(pkt);
        expect(pcm.length).toBe(n);
        out.push(pcm);
      }
      const y = concatPcm(out);
      expect(bytes * 8).toBeLessThan(40_000); // ~24 kbit/s configured
      expect(zeroCrossingHz(middle(y, rate), rate)).toBeCloseTo(440, 0);
      expect(Math.abs(db(rms(middle(y, rate)), rms(middle(x, rate))))).toBeLessThan(1.5);
    });
  }

  it('decodes any packet at either rate (48 kHz stream decoded straight to 16 kHz)', () => {
    const enc = new OpusEncoder(48000);
    const dec = new OpusDecoder(16000);
    const x = sine(440, 48000, 48000, 0.3);
    const out: Int16Array[] = [];
    for (let off = 0; off < x.length; off += 960) out.push(dec.decode(enc.encode(x.subarray(off, off + 960))));
    const y = concatPcm(out);
    expect(y.length).toBe(16000);
    expect(zeroCrossingHz(middle(y, 16000), 16000)).toBeCloseTo(440, 0);
  });

  it('corrupt packets throw a catchable OpusDecodeError and the decoder keeps working', () => {
    const enc = new OpusEncoder(16000);
    const dec = new OpusDecoder(16000);
    const good = enc.encode(sine(440, 16000, 320, 0.3));
    // TOC code 3 with a zero frame count is invalid by RFC 6716.
    expect(() => dec.decode(Uint8Array.from([0x03, 0x00]))).toThrow(OpusDecodeError);
    expect(() => dec.decode(new Uint8Array(0))).toThrow(/conceal/);
    // mulberry32: a plain LCG's low bits are too regular to look like garbage.
    let seed = 42;
    const rnd = (): number => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return (t ^ (t >>> 14)) >>> 0;
    };
    let threw = 0;
    let decoded = 0;
    for (let i = 0; i < 1000; i++) {
      const pkt = new Uint8Array(1 + (rnd() % 300));
      for (let k = 0; k < pkt.length; k++) pkt[k] = rnd() & 0xff;
      try {
        const pcm = dec.decode(pkt);
        expect(pcm).toBeInstanceOf(Int16Array);
        decoded++;
      } catch (err) {
        expect(err).toBeInstanceOf(OpusDecodeError);
        expect((err as Error).message).toMatch(/cannot decode/);
        threw++;
      }
    }
    // Random bytes are often valid Opus syntax; what matters is that nothing escapes or aborts.
    expect(threw).toBeGreaterThan(0);
    expect(threw + decoded).toBe(1000);
    expect(dec.decode(good).length).toBe(320);
  });

  it('rejects illegal frame sizes instead of letting the binding abort the process', () => {
    const enc = new OpusEncoder(16000);
    expect(() => enc.encode(new Int16Array(100))).toThrow(OpusEncodeError);
    expect(() => enc.encode(new Int16Array(0))).toThrow(OpusEncodeError);
    expect(enc.encode(new Int16Array(640)).length).toBeGreaterThan(0); // 40 ms is legal
    expect(() => new OpusDecoder(24000 as 16000)).toThrow(RangeError);
  });

  it('conceals a lost packet with the requested duration', () => {
    const enc = new OpusEncoder(16000);
    const dec = new OpusDecoder(16000);
    const x = sine(440, 16000, 3200, 0.3);
    for (let off = 0; off < x.length; off += 320) dec.decode(enc.encode(x.subarray(off, off + 320)));
    const plc = dec.conceal(20);
    expect(plc.length).toBe(320);
    expect(rms(plc)).toBeGreaterThan(100); // extrapolates the tone rather than going silent at once
    expect(dec.decode(enc.encode(sine(440, 16000, 320, 0.3))).length).toBe(320);
  });
});

// ---------- Framer ----------

describe('Framer', () => {
  it('emits exact frames with sequence numbers and first-sample arrival timestamps', () => {
    const total = 10_000;
    const input = new Int16Array(total);
    for (let i = 0; i < total; i++) input[i] = (i % 2000) - 1000;
    const sizes = oddChunks(total, 7);
    const framer = new Framer({ startSeq: 5 });
    const frames: AudioFrame[] = [];
    const chunkStart: number[] = [];
    let off = 0;
    sizes.forEach((n, k) => {
      chunkStart.push(off);
      frames.push(...framer.push(input.subarray(off, off + n), 1000 + k));
      off += n;
    });
    expect(frames.length).toBe(Math.floor(total / FRAME_SAMPLES));
    expect(framer.pendingSamples).toBe(total % FRAME_SAMPLES);
    frames.forEach((f, i) => {
      expect(f.samples.length).toBe(FRAME_SAMPLES);
      expect(f.seq).toBe(5 + i);
      // Index of the chunk holding this frame's first sample.
      const first = i * FRAME_SAMPLES;
      let k = 0;
      while (k + 1 < chunkStart.length && chunkStart[k + 1] <= first) k++;
      expect(f.timestampMs).toBe(1000 + k);
    });
    expect(concatPcm(frames.map((f) => f.samples))).toEqual(input.subarray(0, frames.length * FRAME_SAMPLES));

    const tail = framer.flush();
    expect(tail).not.toBeNull();
    expect(tail?.samples.length).toBe(FRAME_SAMPLES);
    expect(tail?.seq).toBe(5 + frames.length);
    expect(Array.from(tail?.samples.subarray(0, total % FRAME_SAMPLES) ?? [])).toEqual(
      Array.from(input.subarray(frames.length * FRAME_SAMPLES)),
    );
    expect(tail?.samples[FRAME_SAMPLES - 1]).toBe(0);
    expect(framer.flush()).toBeNull();
  });

  it('frames are independent copies of the input', () => {
    const framer = new Framer();
    const chunk = new Int16Array(FRAME_SAMPLES).fill(7);
    const [f] = framer.push(chunk, 1);
    chunk.fill(9);
    expect(f.samples[0]).toBe(7);
  });

  it('splitIntoFrames pads or returns the remainder', () => {
    const pcm = new Int16Array(FRAME_SAMPLES * 2 + 10).fill(3);
    const padded = splitIntoFrames(pcm);
    expect(padded.frames.length).toBe(3);
    expect(padded.frames.every((f) => f.length === FRAME_SAMPLES)).toBe(true);
    expect(padded.frames[2][9]).toBe(3);
    expect(padded.frames[2][10]).toBe(0);
    const exact = splitIntoFrames(pcm, { padLast: false });
    expect(exact.frames.length).toBe(2);
    expect(exact.remainder.length).toBe(10);
  });
});

// ---------- edge codecs ----------

describe('edge codecs', () => {
  const specs: CodecSpec[] = [
    { codec: 'pcm16', sampleRate: 8000 },
    { codec: 'pcm16', sampleRate: 16000 },
    { codec: 'pcm16', sampleRate: 24000 },
    { codec: 'pcm16', sampleRate: 48000 },
    { codec: 'pcmu', sampleRate: 8000 },
    { codec: 'pcma', sampleRate: 8000 },
    { codec: 'opus', sampleRate: 16000 },
    { codec: 'opus', sampleRate: 48000 },
  ];
  for (const spec of specs) {
    it(`${spec.codec}@${spec.sampleRate}: outbound → inbound loopback keeps a 440 Hz tone`, async () => {
      const enc = await createOutboundEncoder(spec);
      const dec = await createInboundDecoder(spec);
      const x = sine(440, 16000, 16000, 0.3);
      const out: Int16Array[] = [];
      for (let off = 0; off < x.length; off += FRAME_SAMPLES) {
        const payload = enc.encode(x.subarray(off, off + FRAME_SAMPLES));
        const expected =
          spec.codec === 'opus' ? null : ((spec.sampleRate / 50) * (spec.codec === 'pcm16' ? 2 : 1));
        if (expected !== null && off > 0) expect(Math.abs(payload.length - expected)).toBeLessThanOrEqual(8);
        out.push(dec.decode(payload));
      }
      enc.close();
      dec.close();
      const y = concatPcm(out);
      expect(Math.abs(y.length - x.length)).toBeLessThan(200);
      expect(zeroCrossingHz(middle(y, 16000), 16000)).toBeCloseTo(440, 0);
      expect(Math.abs(db(rms(middle(y, 16000)), rms(middle(x, 16000))))).toBeLessThan(1.5);
    });
  }

  it('pcm16 is little-endian and survives payloads split mid-sample', async () => {
    const dec = await createInboundDecoder({ codec: 'pcm16', sampleRate: 16000 });
    const samples = Int16Array.from([1, -2, 300, -32768, 32767]);
    const bytes = new Uint8Array(samples.length * 2);
    const view = new DataView(bytes.buffer);
    samples.forEach((s, i) => view.setInt16(i * 2, s, true));
    const a = dec.decode(bytes.subarray(0, 3));
    const b = dec.decode(bytes.subarray(3));
    expect(Array.from(concatPcm([a, b]))).toEqual(Array.from(samples));
    const enc = await createOutboundEncoder({ codec: 'pcm16', sampleRate: 16000 });
    expect(Array.from(enc.encode(samples))).toEqual(Array.from(bytes));
  });

  it('rejects unsupported specs with clear errors', async () => {
    expect(() => validateCodecSpec({ codec: 'g729', sampleRate: 8000 })).toThrow(/unsupported codec "g729"/);
    expect(() => validateCodecSpec({ codec: 'pcmu', sampleRate: 16000 })).toThrow(/16000 for pcmu; expected 8000/);
    expect(() => validateCodecSpec({ codec: 'opus', sampleRate: 24000 })).toThrow(CodecSpecError);
    expect(() => validateCodecSpec({ codec: 'pcm16', sampleRate: 44100 })).toThrow(/44100/);
    expect(() => validateCodecSpec({ codec: 'pcm16', sampleRate: '16000' })).toThrow(CodecSpecError);
    expect(() => validateCodecSpec(null)).toThrow(CodecSpecError);
    expect(() => validateCodecSpec({ codec: 'toString', sampleRate: 8000 })).toThrow(CodecSpecError);
    await expect(createInboundDecoder({ codec: 'pcma', sampleRate: 48000 })).rejects.toThrow(CodecSpecError);
    await expect(createOutboundEncoder({ codec: 'opus', sampleRate: 8000 })).rejects.toThrow(CodecSpecError);
    expect(validateCodecSpec({ codec: 'opus', sampleRate: 48000, extra: 1 })).toEqual({ codec: 'opus', sampleRate: 48000 });
  });

  it('an opus inbound decoder turns garbage into a catchable error', async () => {
    const dec = await createInboundDecoder({ codec: 'opus', sampleRate: 48000 });
    expect(() => dec.decode(Uint8Array.from([0x03, 0x00]))).toThrow(OpusDecodeError);
  });
});

// ---------- WAV ----------

describe('WAV', () => {
  let dir = '';
  beforeAll(() => {
    dir = mkdtempSync(path.join(tmpdir(), 'audio-test-'));
  });
  afterAll(() => {
    rmSync(dir, { recursive: true, force: true });
  });

  it('write/read round trip (buffer and file)', async () => {
    const x = sine(440, 24000, 2400);
    const bytes = encodeWav(x, 24000);
    expect(bytes.length).toBe(44 + x.length * 2);
    expect(parseWav(bytes)).toEqual({ sampleRate: 24000, channels: 1, samples: x });
    const file = path.join(dir, 'rt.wav');
    await writeWav(file, x, 24000);
    const back = await readWav(file);
    expect(back.sampleRate).toBe(24000);
    expect(back.samples).toEqual(x);
    // wavefile (an independent parser) agrees with what we wrote.
    const wf = new wavefile.WaveFile(readFileSync(file));
    expect(Array.from(wf.getSamples(false, Int16Array))).toEqual(Array.from(x));
  });

  it('reads float32 stereo with a LIST chunk and mixes to mono', () => {
    const left = new Float32Array([0.5, -0.25, 1.5, 0]);
    const right = new Float32Array([0.5, 0.25, 1.5, -1]);
    const wf = new wavefile.WaveFile();
    wf.fromScratch(2, 44100, '32f', [left, right]);
    wf.setTag('ISFT', 'test'); // adds a LIST chunk
    const data = parseWav(wf.toBuffer());
    expect(data.sampleRate).toBe(44100);
    expect(data.channels).toBe(2);
    expect(Array.from(data.samples)).toEqual([16384, 0, 32767, -16384]);
  });

  it('skips unknown and odd-sized chunks before data, and tolerates a streaming data size', () => {
    const pcm = Int16Array.from([1, 2, 3, -4]);
    const canonical = encodeWav(pcm, 8000);
    const junk = new Uint8Array([0x4c, 0x49, 0x53, 0x54, 3, 0, 0, 0, 9, 9, 9, 0]); // 'LIST', size 3 + pad
    const withJunk = new Uint8Array(canonical.length + junk.length);
    withJunk.set(canonical.subarray(0, 36), 0);
    withJunk.set(junk, 36);
    withJunk.set(canonical.subarray(36), 36 + junk.length);
    expect(Array.from(parseWav(withJunk).samples)).toEqual([1, 2, 3, -4]);
    const streaming = canonical.slice();
    new DataView(streaming.buffer).setUint32(40, 0xffffffff, true);
    expect(Array.from(parseWav(streaming).samples)).toEqual([1, 2, 3, -4]);
    expect(() => parseWav(new Uint8Array(10))).toThrow(WavFormatError);
    expect(() => parseWav(canonical.subarray(0, 36))).toThrow(/no data chunk/);
  });

  it('reads a real espeak-ng file (22050 Hz)', async () => {
    const file = path.join(dir, 'espeak.wav');
    execFileSync('espeak-ng', ['-v', 'en-us', '-w', file, 'Testing one two three.']);
    const data = await readWav(file);
    expect(data.sampleRate).toBe(22050);
    expect(data.channels).toBe(1);
    expect(data.samples.length).toBeGreaterThan(22050 * 0.5);
    expect(20 * Math.log10(rms(data.samples) / 32768)).toBeGreaterThan(-40);
    const wf = new wavefile.WaveFile(readFileSync(file));
    expect(Array.from(wf.getSamples(false, Int16Array))).toEqual(Array.from(data.samples));
    // And it resamples into the internal format.
    const internal = await resampleOnce(data.samples, 22050, 16000);
    expect(Math.abs(internal.length - Math.round((data.samples.length * 16000) / 22050))).toBeLessThanOrEqual(1);
    writeFileSync(path.join(dir, 'espeak16.wav'), encodeWav(internal, 16000));
  });
});
