/**
 * Silero VAD cost per call: N streams fed like N live calls (every 20 ms tick each stream gets one frame, all
 * concurrently), as fast as the model allows, for --seconds of audio per stream. Input: a noise floor with real
 * speech mixed in (espeak-ng when installed). Reports CPU per call as a share of one core at real time, and the
 * wall time of one tick (how late a call's VAD answer is when all N frames arrive together).
 *
 * `mainThreadMsPerWindow` is the CPU the calling (event-loop) thread spent per window: with the VAD's worker
 * thread on (--worker on, the default) the model runs elsewhere and this is what stays on the loop.
 *
 *   npx tsx loadtest/vad-bench.ts --streams 100 --seconds 5 [--worker on|off]
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { FRAME_MS, FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { resampleOnce } from '../src/audio/resample.js';
import { parseWav } from '../src/audio/wav.js';
import { SileroVad } from '../src/providers/vad/silero/index.js';
import { seededNoise } from './voices.js';
import { processCpuS } from './proc-stat.js';

const get = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const streams = Number(get('streams') ?? 50);
const seconds = Number(get('seconds') ?? 5);
const worker = (get('worker') ?? 'on') === 'on';

async function speech(): Promise<Int16Array | null> {
  const dir = mkdtempSync(path.join(tmpdir(), 'vad-bench-'));
  try {
    const file = path.join(dir, 's.wav');
    execFileSync('espeak-ng', ['-v', 'en-us', '-w', file, 'I would like to check the balance of my account please'], { stdio: 'ignore' });
    const wav = parseWav(readFileSync(file));
    return await resampleOnce(wav.samples, wav.sampleRate, INTERNAL_SAMPLE_RATE);
  } catch {
    return null;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const frames = Math.round((seconds * 1000) / FRAME_MS);
  const audio = seededNoise(frames * FRAME_SAMPLES, 11);
  const voice = await speech();
  // Speech in about a third of the audio, the rest noise floor.
  if (voice) for (let at = INTERNAL_SAMPLE_RATE; at < audio.length; at += voice.length * 3) for (let i = 0; i < voice.length && at + i < audio.length; i++) audio[at + i] += voice[i];
  const vad = new SileroVad({ worker });
  await vad.load();
  const all = Array.from({ length: streams }, () => vad.createStream());
  // Each stream starts at its own offset so the batch mixes speech and silence.
  const offset = (s: number, f: number) => ((f + s * 37) % frames) * FRAME_SAMPLES;
  // Warm-up: one window per stream.
  for (let f = 0; f < 2; f++) await Promise.all(all.map((st, s) => st.process(audio.subarray(offset(s, f), offset(s, f) + FRAME_SAMPLES))));
  const ticks: number[] = [];
  const cpu0 = process.cpuUsage();
  const main0 = processCpuS(process.pid, process.pid);
  const t0 = performance.now();
  for (let f = 2; f < frames; f++) {
    const t = performance.now();
    await Promise.all(all.map((st, s) => st.process(audio.subarray(offset(s, f), offset(s, f) + FRAME_SAMPLES))));
    ticks.push(performance.now() - t);
  }
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const mainMs = (processCpuS(process.pid, process.pid) - main0) * 1000;
  const cpuMs = (cpu.user + cpu.system) / 1000;
  const audioMsPerStream = (frames - 2) * FRAME_MS;
  ticks.sort((a, b) => a - b);
  const f2 = (n: number) => Math.round(n * 1000) / 1000;
  console.log(
    JSON.stringify({
      streams,
      audioSecondsPerStream: audioMsPerStream / 1000,
      speech: voice !== null,
      cpuPercentOfCorePerCall: f2((cpuMs / streams / audioMsPerStream) * 100),
      cpuMsPerWindow: f2(cpuMs / (streams * audioMsPerStream / 32)),
      worker,
      mainThreadMsPerWindow: f2(mainMs / (streams * audioMsPerStream / 32)),
      realTimeFactor: f2(wallMs / audioMsPerStream),
      tickMs: { p50: f2(ticks[Math.floor(ticks.length / 2)]), p99: f2(ticks[Math.floor(ticks.length * 0.99)]) },
    }),
  );
  for (const st of all) st.close();
  await vad.close();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
