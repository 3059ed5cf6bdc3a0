import { Registry } from 'prom-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { loadConfig } from '../src/config.js';
import { registerVadBatchMetrics } from '../src/providers/vad/metrics.js';
import { SileroVad, type SileroVadStream } from '../src/providers/vad/silero/index.js';
import { DEFAULT_QUIET_WINDOWS, QuietWindowGate, quietWindowsOf } from '../src/providers/vad/quiet-windows.js';
import { seededNoise } from '../loadtest/voices.js';
import { speak } from './helpers/speech.js';
import { frameAt, frameCount, maxDiff } from './helpers/vad-audio.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';

/**
 * Quiet windows (providers.vad.quietWindowDbfs, quietOverFloorDb): three seconds into a stretch under -60 dBFS or
 * steady at the line's noise floor, Silero is not run and its state and probability are held. What a call must still get: every utterance after the quiet, no later than
 * when every window runs; no click, tone or burst of noise taken for speech; a speech tail run until the model
 * itself calls it silence; windows over the line always run; batched streams still equal to each alone.
 */

const SR = INTERNAL_SAMPLE_RATE;
/** The default quiet windows, with no shorter settle when the VAD falls behind (a loaded test machine). */
const UNLOADED = { ...DEFAULT_QUIET_WINDOWS, behindSettleWindows: DEFAULT_QUIET_WINDOWS.settleWindows };
const SPEECH = 0.5;
const PAUSE = 0.35;

function concat(parts: Int16Array[]): Int16Array {
  const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

const silence = (ms: number): Int16Array => new Int16Array(Math.round((ms * SR) / 1000));

/** Frames where a Silero-style hysteresis (0.5 up, 0.35 down) starts speech. */
function onsets(probs: number[]): number[] {
  const out: number[] = [];
  let inSpeech = false;
  probs.forEach((p, i) => {
    if (!inSpeech && p >= SPEECH) {
      inSpeech = true;
      out.push(i);
    } else if (inSpeech && p < PAUSE) inSpeech = false;
  });
  return out;
}

async function run(stream: SileroVadStream, audio: Int16Array): Promise<number[]> {
  const probs: number[] = [];
  for (let f = 0; f < frameCount(audio); f++) probs.push(await stream.process(frameAt(audio, f)));
  stream.close();
  return probs;
}

interface Utterance {
  /** First frame of the words. */
  startFrame: number;
  endFrame: number;
}

let skipping: SileroVad;
let everyWindow: SileroVad;
let audio: Int16Array;
let utterances: Utterance[];
/** Non-speech sounds after a long digital silence: [first frame, last frame]. */
let sounds: [number, number][];

beforeAll(async () => {
  // Decisions that must not depend on this machine's load: the same settle whether the VAD is behind or not.
  skipping = new SileroVad({ worker: false, quietWindows: UNLOADED });
  everyWindow = new SileroVad({ worker: false, quietWindows: null });
  await Promise.all([skipping.load(), everyWindow.load()]);
  const words = await Promise.all([
    speak('what time is it', { padMs: 0 }),
    speak('I would like to book a table for four on friday', { padMs: 0 }),
    speak('yes', { padMs: 0 }),
    speak('stop', { engine: 'espeak', padMs: 0 }),
  ]);
  const tone = Int16Array.from({ length: SR / 2 }, (_, k) => Math.round(3000 * Math.sin((2 * Math.PI * 1000 * k) / SR)));
  const click = new Int16Array(SR / 100);
  click[0] = 20_000;
  click[1] = -15_000;
  const burst = seededNoise(SR / 3, 5, 1500);
  const parts: Int16Array[] = [];
  utterances = [];
  sounds = [];
  let at = 0;
  const push = (p: Int16Array): number => {
    parts.push(p);
    const start = at / 320;
    at += p.length;
    return start;
  };
  // Gaps of digital silence from 0.4 s (under the 3 s that always run: nothing skipped) to 8 s.
  [4000, 8000, 400, 5000].forEach((gap, i) => {
    push(silence(gap));
    const start = push(words[i]);
    utterances.push({ startFrame: start, endFrame: at / 320 });
  });
  for (const sound of [click, tone, burst]) {
    push(silence(4000));
    const start = push(sound);
    sounds.push([start, at / 320]);
  }
  push(silence(4000));
  audio = concat(parts);
}, 120_000);

afterAll(async () => {
  await Promise.all([skipping?.close(), everyWindow?.close()]);
});

describe('Silero VAD, quiet windows', () => {
  it('skips the long silences of a call on digital silence, and hears every utterance no later than running every window', async () => {
    const stream = skipping.createStream();
    const held = await run(stream, audio);
    const all = await run(everyWindow.createStream(), audio);
    const windows = stream.stats.windows + stream.stats.skippedQuietWindows;
    expect(stream.stats.skippedQuietWindows).toBeGreaterThan(windows / 4);
    for (const [probs, name] of [
      [held, 'held'],
      [all, 'every window'],
    ] as const) {
      const found = onsets(probs);
      for (const u of utterances) {
        expect(
          found.some((f) => f >= u.startFrame - 1 && f < u.endFrame),
          `${name}: utterance at frame ${u.startFrame}`,
        ).toBe(true);
      }
      for (const [start, end] of sounds) expect(found.filter((f) => f >= start && f <= end + 10), `${name}: sound at frame ${start}`).toEqual([]);
    }
    for (const u of utterances) {
      const first = (probs: number[]) => onsets(probs).find((f) => f >= u.startFrame - 1)!;
      // Held from 3 s into the quiet, the model rises about as fast as after a longer run of silence.
      expect(first(held), `utterance at frame ${u.startFrame}`).toBeLessThanOrEqual(first(all) + 1);
    }
  });

  it('runs a speech tail until the model calls it silence, and the first 3 s of any quiet', async () => {
    const stream = skipping.createStream();
    const tail = concat([silence(300), await speak('hello there', { padMs: 0 }), silence(5000)]);
    const probs = await run(stream, tail);
    // The quiet after the words (the engine's own trailing silence and 5 s): only windows the gate lets go, after
    // its 94 quiet ones in a row, are skipped (and only once the probability is under 0.1).
    const gate = new QuietWindowGate(DEFAULT_QUIET_WINDOWS);
    let allowed = 0;
    for (let w = 0; (w + 1) * 512 <= tail.length; w++) {
      const x = tail.subarray(w * 512, (w + 1) * 512);
      if (gate.push(x.reduce((sum, v) => sum + (v / 32768) ** 2, 0) / 512)) allowed++;
    }
    expect(allowed).toBeLessThanOrEqual(Math.floor((5 * SR) / 512) - DEFAULT_QUIET_WINDOWS.settleWindows + 20);
    expect(stream.stats.skippedQuietWindows).toBeGreaterThan(0);
    expect(stream.stats.skippedQuietWindows).toBeLessThanOrEqual(allowed);
    expect(Math.max(...probs)).toBeGreaterThan(0.8);
    expect(probs[probs.length - 1]).toBeLessThan(0.1);
  });

  it('with only the absolute level (quietOverFloorDb null), a -55 dBFS line runs every window, exactly as with skipping off', async () => {
    const levelOnly = new SileroVad({ worker: false, quietWindows: { ...UNLOADED, overFloorDb: null } });
    await levelOnly.load();
    try {
      const noisy = concat([seededNoise(2 * SR, 11, 100), await speak('what time is it', { padMs: 0 }), seededNoise(2 * SR, 12, 100)]);
      const stream = levelOnly.createStream();
      const held = await run(stream, noisy);
      expect(stream.stats.skippedQuietWindows).toBe(0);
      expect(maxDiff(held, await run(everyWindow.createStream(), noisy))).toBe(0);
    } finally {
      await levelOnly.close();
    }
  });

  it('skips a steady noise floor (-45 dBFS hiss) 3 s in, runs what changes, and hears speech over it no later', async () => {
    const hiss = (ms: number, seed: number): Int16Array => seededNoise(Math.round((ms * SR) / 1000), seed, 300);
    const words = await speak('I would like to book a table', { padMs: 0 });
    const hum = Int16Array.from({ length: SR }, (_, k) => Math.round(300 * Math.sin((2 * Math.PI * 50 * k) / SR) + (k % 7) - 3));
    const overHiss = (x: Int16Array, seed: number): Int16Array => {
      const n = hiss((x.length * 1000) / SR, seed);
      return Int16Array.from(x, (v, i) => Math.max(-32768, Math.min(32767, v + n[i])));
    };
    const noisy = concat([hiss(5000, 21), overHiss(words, 22), hiss(5000, 23), hum, hiss(1000, 24)]);
    const start = 5000 / 20;
    const stream = skipping.createStream();
    const held = await run(stream, noisy);
    const all = await run(everyWindow.createStream(), noisy);
    expect(stream.stats.skippedQuietWindows).toBeGreaterThan((stream.stats.windows + stream.stats.skippedQuietWindows) / 3);
    const firstHeld = onsets(held).find((f) => f >= start - 1);
    const firstAll = onsets(all).find((f) => f >= start - 1);
    expect(firstAll).toBeDefined();
    expect(firstHeld!).toBeLessThanOrEqual(firstAll! + 1);
    // The hum (10 dB over the hiss) starts a quiet stretch of its own: its first 3 s run.
    expect(onsets(held).filter((f) => f > start + frameCount(words) + 10)).toEqual([]);
  });

  it('batched streams on digital silence equal each alone, and /metrics counts the skipped windows', async () => {
    const batched = new SileroVad({ worker: true, quietWindows: UNLOADED });
    await batched.load();
    try {
      const inputs = [0, 1, 2, 3].map((i) => concat([silence(600 + 400 * i), audio.subarray(0, 14 * SR)]));
      const alone = await Promise.all(inputs.map((a) => run(skipping.createStream(), a)));
      const streams = inputs.map(() => batched.createStream());
      const probs: number[][] = inputs.map(() => []);
      const ticks = Math.max(...inputs.map(frameCount));
      for (let t = 0; t < ticks; t++) {
        await Promise.all(streams.map(async (s, i) => (t < frameCount(inputs[i]) ? probs[i].push(await s.process(frameAt(inputs[i], t))) : 0)));
      }
      inputs.forEach((_, i) => expect(maxDiff(probs[i], alone[i]), `stream ${i}`).toBeLessThan(1e-4));
      const registry = new Registry();
      registerVadBatchMetrics(registry, batched);
      const text = await registry.metrics();
      const skipped = Number(/^voice_agent_vad_quiet_windows_skipped (\d+)/m.exec(text)?.[1]);
      expect(skipped).toBe(streams.reduce((n, s) => n + s.stats.skippedQuietWindows, 0));
      expect(skipped).toBeGreaterThan(0);
    } finally {
      await batched.close();
    }
  });
});

describe('QuietWindowGate', () => {
  const ms = (db: number): number => 10 ** (db / 10);

  it('calls a steady floor quiet after settleWindows, through a dropout of zeros, and not a louder window', () => {
    const gate = new QuietWindowGate(DEFAULT_QUIET_WINDOWS);
    const settle = DEFAULT_QUIET_WINDOWS.settleWindows;
    // A hiss at -45 dBFS, ±1 dB from window to window.
    const hiss = (i: number): number => ms(-45 + Math.sin(i * 1.7));
    const verdicts = Array.from({ length: settle + 20 }, (_, i) => gate.push(hiss(i)));
    expect(verdicts.slice(0, settle)).not.toContain(true);
    expect(verdicts.slice(settle + 1)).not.toContain(false);
    // A packet lost to zeros is quiet and does not sink the floor: the hiss after it is still quiet.
    expect(gate.push(0)).toBe(true);
    expect(Array.from({ length: 50 }, (_, i) => gate.push(hiss(i)))).not.toContain(false);
    // A word (6 dB over the hiss) runs, and the next quiet stretch runs its own settleWindows first.
    expect(gate.push(ms(-39))).toBe(false);
    expect(gate.push(hiss(0))).toBe(false);
  });

  it('while the VAD is behind real time, skips after behindSettleWindows, and at once when the quiet is already that long', () => {
    const { settleWindows, behindSettleWindows } = DEFAULT_QUIET_WINDOWS;
    expect(behindSettleWindows).toBeLessThan(settleWindows);
    const behind = new QuietWindowGate(DEFAULT_QUIET_WINDOWS);
    const verdicts = Array.from({ length: behindSettleWindows + 5 }, () => behind.push(0, true));
    expect(verdicts.slice(0, behindSettleWindows)).not.toContain(true);
    expect(verdicts.slice(behindSettleWindows)).not.toContain(false);
    // Caught up: back to the long settle for the same quiet stretch, so its windows run again until then.
    expect(behind.push(0, false)).toBe(false);
    // A gate 20 windows into a quiet stretch skips the next window as soon as the VAD falls behind.
    const gate = new QuietWindowGate(DEFAULT_QUIET_WINDOWS);
    for (let i = 0; i < 20; i++) expect(gate.push(0, false)).toBe(false);
    expect(gate.push(0, true)).toBe(true);
  });

  it('with overFloorDb null only the absolute level counts', () => {
    const gate = new QuietWindowGate({ ...DEFAULT_QUIET_WINDOWS, overFloorDb: null, settleWindows: 2 });
    expect([ms(-45), ms(-45), ms(-45), ms(-45)].map((m) => gate.push(m))).toEqual([false, false, false, false]);
    expect([ms(-70), ms(-70), ms(-70), 0].map((m) => gate.push(m))).toEqual([false, false, true, true]);
  });
});

describe('providers.vad.quietWindowDbfs in the config', () => {
  it('is -60 unless set, null turns it off, and a level where speech lives is refused', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vad-quiet-'));
    try {
      const write = (value: unknown): string => {
        const file = path.join(dir, `${String(value)}.json`);
        writeFileSync(file, JSON.stringify({ providers: { vad: { provider: 'silero', quietWindowDbfs: value } } }));
        return file;
      };
      expect(loadConfig([], {}).providers.vad).not.toHaveProperty('quietWindowDbfs');
      expect(loadConfig(['--config', write(null)], {}).providers.vad).toMatchObject({ quietWindowDbfs: null });
      expect(loadConfig(['--config', write(-70)], {}).providers.vad).toMatchObject({ quietWindowDbfs: -70 });
      expect(() => loadConfig(['--config', write(-10)], {})).toThrow(/quietWindowDbfs/);
      const overFloor = path.join(dir, 'over-floor.json');
      writeFileSync(overFloor, JSON.stringify({ providers: { vad: { provider: 'silero', quietOverFloorDb: null } } }));
      const vad = loadConfig(['--config', overFloor], {}).providers.vad;
      expect(vad).toMatchObject({ quietOverFloorDb: null });
      expect(quietWindowsOf(vad)).toEqual({ ...DEFAULT_QUIET_WINDOWS, overFloorDb: null });
      expect(quietWindowsOf({ quietWindowDbfs: null })).toBeNull();
      expect(quietWindowsOf({})).toEqual(DEFAULT_QUIET_WINDOWS);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
