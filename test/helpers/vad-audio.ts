/** Shared by the Silero VAD tests: 20 ms frames of real audio, speech over noise, streams run alone, polling, captured logs. */
import { pino, type Logger } from 'pino';
import { expect } from 'vitest';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../../src/audio/format.js';
import { seededNoise } from '../../loadtest/voices.js';
import type { SileroVad } from '../../src/providers/vad/silero/index.js';

/** Speech at `atMs` over a noise floor, `totalMs` long. */
export function mix(speech: Int16Array, atMs: number, totalMs: number, seed: number): Int16Array {
  const sr = INTERNAL_SAMPLE_RATE;
  const out = seededNoise(Math.round((totalMs * sr) / 1000), seed, 100);
  const at = Math.round((atMs * sr) / 1000);
  for (let i = 0; i < speech.length && at + i < out.length; i++) out[at + i] = Math.max(-32768, Math.min(32767, out[at + i] + speech[i]));
  return out;
}

export function frameAt(audio: Int16Array, f: number): Int16Array {
  return audio.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES);
}

export function frameCount(audio: Int16Array): number {
  return Math.floor(audio.length / FRAME_SAMPLES);
}

/** Each stream alone, one after the other, one window per inference. */
export async function alone(vad: SileroVad, inputs: Int16Array[]): Promise<number[][]> {
  const out: number[][] = [];
  for (const audio of inputs) {
    const stream = vad.createStream();
    const probs: number[] = [];
    for (let f = 0; f < frameCount(audio); f++) probs.push(await stream.process(frameAt(audio, f)));
    stream.close();
    out.push(probs);
  }
  return out;
}

export function maxDiff(a: number[], b: number[]): number {
  expect(a.length).toBe(b.length);
  return Math.max(...a.map((x, i) => Math.abs(x - b[i])));
}

/** Poll (each turn of the event loop) until `ready()`, or fail after `ms`. */
export async function until(ready: () => boolean, ms = 10_000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!ready()) {
    if (performance.now() > deadline) throw new Error('timed out waiting');
    await new Promise((r) => setImmediate(r));
  }
}

export interface LogLine {
  level: number;
  msg: string;
  [field: string]: unknown;
}

/** A pino logger whose lines (error and above) land in `lines`. */
export function capturingLogger(lines: LogLine[]): Logger {
  return pino({ level: 'error' }, { write: (line: string) => lines.push(JSON.parse(line) as LogLine) });
}
