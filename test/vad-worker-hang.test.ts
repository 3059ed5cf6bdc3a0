import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Worker } from 'node:worker_threads';
import { Registry } from 'prom-client';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { SileroVad } from '../src/providers/vad/silero/index.js';
import type { WorkerHangInjection } from '../src/providers/vad/silero/worker-runner.js';
import { FallbackVad } from '../src/providers/vad/execution-providers.js';
import { registerVadWorkerMetrics } from '../src/providers/vad/metrics.js';
import type { VadProvider } from '../src/providers/vad/types.js';
import { speak } from './helpers/speech.js';
import { alone, capturingLogger, frameAt, frameCount, maxDiff, mix, type LogLine } from './helpers/vad-audio.js';

/**
 * A VAD worker that stays alive but stops answering must not leave every call deaf: past the batch deadline it is
 * replaced and the batch runs again, so each call gets exactly the probabilities it would have had, late by at most
 * the deadline plus a restart. The hangs are real (the worker thread blocks in Atomics.wait, through the runner's
 * fault-injection hook); the model, the worker thread and the speech are real.
 */

const TOLERANCE = 1e-4;
/** Short, so that three hangs in a row stay within a few seconds. */
const DEADLINE_MS = 400;
/** A restart (spawn + model load) measured ~0.3–0.45 s here; generous for a loaded 2-core machine. */
const RESTART_ALLOWANCE_MS = 2500;
/** Where the hang is injected: well before call A's speech starts (~0.3 s into the calls, speech at 1.2 s). */
const HANG_AT_BATCH = 10;

interface Fixtures {
  /** Call A: speech from 1.2 s (after the hang); call B: other speech from 0.2 s (across it). */
  inputs: Int16Array[];
  /** Each call alone on the main thread, one window per run. */
  reference: number[][];
}

let fixtures: Fixtures;

beforeAll(async () => {
  const [a, b] = await Promise.all([speak('I would like to check my account balance', { padMs: 0 }), speak('yes please, that is right', { padMs: 0 })]);
  const inputs = [mix(a, 1200, 3000, 11), mix(b, 200, 3000, 12)];
  const single = new SileroVad({ maxBatch: 1, worker: false });
  await single.load();
  fixtures = { inputs, reference: await alone(single, inputs) };
  await single.close();
}, 60_000);

/** Both calls fed together, one 20 ms frame per tick; how long each tick waited for both answers. */
async function drive(vad: VadProvider): Promise<{ probs: number[][]; tickMs: number[] }> {
  const { inputs } = fixtures;
  const streams = inputs.map(() => vad.createStream());
  const probs: number[][] = inputs.map(() => []);
  const tickMs: number[] = [];
  for (let t = 0; t < frameCount(inputs[0]); t++) {
    const t0 = performance.now();
    await Promise.all(streams.map(async (s, i) => probs[i].push(await s.process(frameAt(inputs[i], t)))));
    tickMs.push(performance.now() - t0);
  }
  for (const s of streams) s.close();
  return { probs, tickMs };
}

function hangingVad(hang: WorkerHangInjection, logs: LogLine[]): SileroVad {
  return new SileroVad({ workerDeadlineMs: DEADLINE_MS, workerHangInjection: hang, logger: capturingLogger(logs) });
}

function exitOf(thread: Worker): Promise<{ code: number; at: number }> {
  return new Promise((resolve) => thread.once('exit', (code) => resolve({ code, at: performance.now() })));
}

function hangLogs(logs: LogLine[]): LogLine[] {
  return logs.filter((l) => l.level === 50 && /hung/.test(l.msg));
}

describe('a hung Silero VAD worker', () => {
  it('blocked in its message handler: terminated at the deadline and replaced; the batch runs again, both calls get their exact probabilities, speech after the hang is heard, the delay stays bounded', async () => {
    const logs: LogLine[] = [];
    const vad = hangingVad((w) => (w === 0 ? { atBatch: HANG_AT_BATCH } : null), logs);
    await vad.load();
    const first = vad.workerRunner!.thread!;
    const exited = exitOf(first);
    const { probs, tickMs } = await drive(vad);
    const { reference } = fixtures;

    // No frame lost, no state lost: each call's every probability is what it gets alone.
    probs.forEach((p, i) => expect(maxDiff(p, reference[i]), `call ${i}`).toBeLessThan(TOLERANCE));
    const hangTick = tickMs.indexOf(Math.max(...tickMs));
    // The hang really held the calls (up to the deadline), then only as long as a restart.
    expect(tickMs[hangTick]).toBeGreaterThanOrEqual(DEADLINE_MS - 5);
    expect(tickMs[hangTick]).toBeLessThan(DEADLINE_MS + RESTART_ALLOWANCE_MS);
    expect(tickMs.filter((_, t) => t !== hangTick).every((ms) => ms < DEADLINE_MS)).toBe(true);
    // Call A's speech comes after the hang and is heard; it was silent before.
    expect(Math.max(...probs[0].slice(0, hangTick + 1))).toBeLessThan(0.5);
    expect(Math.max(...probs[0].slice(hangTick + 1))).toBeGreaterThan(0.8);
    // Call B, speaking across the hang, is heard too.
    expect(Math.max(...probs[1])).toBeGreaterThan(0.8);

    expect(vad.workerStats).toEqual({ restarts: 1, deaths: 0, hangs: 1, onMainThread: false });
    expect(vad.workerRunner!.thread).not.toBe(first);
    // The hung thread itself was terminated (code 1), not left behind.
    expect((await exited).code).toBe(1);
    const [line, ...others] = hangLogs(logs);
    expect(others).toHaveLength(0);
    expect(line).toMatchObject({ deadlineMs: DEADLINE_MS, insideRun: false, loading: false, batches: 1, hangs: 1 });
    expect(line.waitedMs).toBeGreaterThanOrEqual(DEADLINE_MS);
    expect(logs.filter((l) => /died|keeps dying/.test(l.msg))).toHaveLength(0);
    await vad.close();
  });

  it('stuck inside an inference: not terminated (that would abort the process) but abandoned and replaced; it exits by itself when its run ends', async () => {
    const logs: LogLine[] = [];
    const blockMs = 3 * DEADLINE_MS;
    const vad = hangingVad((w) => (w === 0 ? { atBatch: HANG_AT_BATCH, ms: blockMs, insideRun: true } : null), logs);
    await vad.load();
    const exited = exitOf(vad.workerRunner!.thread!);
    const started = performance.now();
    const { probs, tickMs } = await drive(vad);
    probs.forEach((p, i) => expect(maxDiff(p, fixtures.reference[i]), `call ${i}`).toBeLessThan(TOLERANCE));
    expect(Math.max(...tickMs)).toBeLessThan(DEADLINE_MS + RESTART_ALLOWANCE_MS);
    expect(vad.workerStats).toMatchObject({ restarts: 1, hangs: 1, onMainThread: false });
    const [line] = hangLogs(logs);
    expect(line).toMatchObject({ insideRun: true, loading: false });
    // Its own process.exit(0) once its run was over (terminate() gives 1), after the block ended.
    const exit = await exited;
    expect(exit.code).toBe(0);
    expect(exit.at - started).toBeGreaterThanOrEqual(blockMs);
    await vad.close();
  });

  it('a replacement stuck loading its model is given up on too (after 5 deadlines), and the next one takes the batch', async () => {
    const logs: LogLine[] = [];
    const vad = hangingVad((w) => (w === 0 ? { atBatch: HANG_AT_BATCH } : w === 1 ? { atBatch: 0 } : null), logs);
    await vad.load();
    const { probs, tickMs } = await drive(vad);
    probs.forEach((p, i) => expect(maxDiff(p, fixtures.reference[i]), `call ${i}`).toBeLessThan(TOLERANCE));
    const worst = Math.max(...tickMs);
    // One batch deadline, five load deadlines, then a restart that loads.
    expect(worst).toBeGreaterThanOrEqual(DEADLINE_MS + 5 * DEADLINE_MS - 5);
    expect(worst).toBeLessThan(6 * DEADLINE_MS + RESTART_ALLOWANCE_MS);
    expect(vad.workerStats).toEqual({ restarts: 2, deaths: 0, hangs: 2, onMainThread: false });
    expect(hangLogs(logs).map((l) => l.loading)).toEqual([false, true]);
    await vad.close();
  });

  it('hanging again and again: after three hangs in a row the VAD runs on the main thread; no call loses a frame, and /metrics says so', async () => {
    const logs: LogLine[] = [];
    // As the service builds it (FallbackVad around SileroVad), so /metrics reads through the wrapper.
    const vad = new FallbackVad(() => hangingVad((w) => (w < 3 ? { atBatch: 1 } : null), logs), ['cpu'], capturingLogger(logs));
    await vad.load();
    const { probs, tickMs } = await drive(vad);
    probs.forEach((p, i) => expect(maxDiff(p, fixtures.reference[i]), `call ${i}`).toBeLessThan(TOLERANCE));
    expect(Math.max(...probs[0])).toBeGreaterThan(0.8);
    // The first batch waited through three deadlines and two restarts, and the rest ran on the main thread.
    expect(Math.max(...tickMs)).toBeLessThan(3 * DEADLINE_MS + 2 * RESTART_ALLOWANCE_MS);
    expect(vad.workerStats).toEqual({ restarts: 2, deaths: 0, hangs: 3, onMainThread: true });
    expect(hangLogs(logs)).toHaveLength(3);
    expect(logs.filter((l) => /keeps dying/.test(l.msg))).toHaveLength(1);

    const registry = new Registry();
    registerVadWorkerMetrics(registry, vad);
    const text = await registry.metrics();
    expect(text).toMatch(/^voice_agent_vad_worker_hangs 3$/m);
    expect(text).toMatch(/^voice_agent_vad_worker_restarts 2$/m);
    expect(text).toMatch(/^voice_agent_vad_worker_deaths 0$/m);
    expect(text).toMatch(/^voice_agent_vad_worker_fallback 1$/m);
    await vad.close();
  });
});

describe('providers.vad.workerDeadlineMs in the config', () => {
  it('takes a deadline of 100 ms or more and refuses a shorter one, naming the key', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vad-deadline-config-'));
    const write = (ms: number): string => {
      const file = path.join(dir, `c-${ms}.json`);
      writeFileSync(file, JSON.stringify({ providers: { vad: { provider: 'silero', workerDeadlineMs: ms } } }));
      return file;
    };
    try {
      expect(loadConfig(['--config', write(2000)], {}).providers.vad).toMatchObject({ provider: 'silero', workerDeadlineMs: 2000 });
      expect(() => loadConfig(['--config', write(10)], {})).toThrow(/workerDeadlineMs/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
