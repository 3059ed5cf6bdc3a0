import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import ort from 'onnxruntime-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { loadConfig } from '../src/config.js';
import { SileroBatcher, SileroVad, SileroVadStream, defaultSileroModelPath, type SileroRunner } from '../src/providers/vad/silero/index.js';
import { speak } from './helpers/speech.js';
import { seededNoise } from '../loadtest/voices.js';
import { alone, capturingLogger, frameAt, frameCount, maxDiff, mix, until, type LogLine } from './helpers/vad-audio.js';

/**
 * Silero VAD batched across calls (one inference per tick for every stream with a window ready) must give each
 * stream exactly what it would get alone: same probabilities, its own recurrent state, unaffected by the others
 * closing or by a failed run it was not part of.
 */

const TOLERANCE = 1e-4;
const SR = INTERNAL_SAMPLE_RATE;

interface Fixtures {
  inputs: Int16Array[];
  /** Which inputs carry speech (the rest are noise only). */
  hasSpeech: boolean[];
  /** Each input alone, one window per run, on this thread (the old way). */
  reference: number[][];
}

let fixtures: Promise<Fixtures> | null = null;

/** 12 streams: speech at different times and in different words, noise at two levels; 3 s each (built once). */
function getFixtures(): Promise<Fixtures> {
  fixtures ??= (async () => {
    const phrases = ['I would like to check my account balance', 'yes please', 'can you transfer fifty pounds to my savings'];
    const voices = await Promise.all(phrases.map((text) => speak(text, { padMs: 0 })));
    const inputs: Int16Array[] = [];
    const hasSpeech: boolean[] = [];
    for (let i = 0; i < 12; i++) {
      if (i % 3 === 2) {
        inputs.push(seededNoise(3 * SR, 1000 + i, i % 2 === 0 ? 100 : 1500));
        hasSpeech.push(false);
      } else {
        inputs.push(mix(voices[i % voices.length], 200 + 90 * i, 3000, 2000 + i));
        hasSpeech.push(true);
      }
    }
    // Every window inferred (no quiet windows skipped): the batch counts below are of every window (vad-quiet.test.ts
    // checks batching with quiet windows skipped).
    const single = new SileroVad({ maxBatch: 1, worker: false, quietWindows: null });
    await single.load();
    const reference = await alone(single, inputs);
    await single.close();
    return { inputs, hasSpeech, reference };
  })();
  return fixtures;
}

/** Both ways the batch can run: in the VAD's worker thread (the default) and on the calling thread. */
describe.each([
  { where: 'in a worker thread', worker: true },
  { where: 'on the calling thread', worker: false },
])('Silero VAD batched across streams, $where', ({ worker }) => {
  let batched: SileroVad;
  let inputs: Int16Array[];
  let reference: number[][];
  let hasSpeech: boolean[];

  beforeAll(async () => {
    ({ inputs, hasSpeech, reference } = await getFixtures());
    batched = new SileroVad({ worker, quietWindows: null });
    await batched.load();
  }, 60_000);

  afterAll(async () => {
    await batched?.close();
  });

  it('runs where it was asked to', () => {
    expect(batched.workerRunner !== null).toBe(worker);
  });

  it('the reference itself tells speech from noise (so equality below means something)', () => {
    reference.forEach((probs, i) => {
      if (hasSpeech[i]) expect(Math.max(...probs)).toBeGreaterThan(0.8);
      else expect(Math.max(...probs)).toBeLessThan(0.3);
    });
  });

  it('N concurrent streams, joining at different ticks, give each stream its own unbatched probabilities', async () => {
    const runsBefore = batched.batchStats!.runs;
    const windowsBefore = batched.batchStats!.windows;
    const streams = inputs.map(() => batched.createStream());
    const probs: number[][] = inputs.map(() => []);
    // Stream i starts at tick 2i: batches hold different mixes of streams at different points of their audio.
    const start = (i: number) => 2 * i;
    const ticks = Math.max(...inputs.map((a, i) => start(i) + frameCount(a)));
    for (let t = 0; t < ticks; t++) {
      await Promise.all(
        streams.map(async (stream, i) => {
          const f = t - start(i);
          if (f < 0 || f >= frameCount(inputs[i])) return;
          probs[i].push(await stream.process(frameAt(inputs[i], f)));
        }),
      );
    }
    for (const s of streams) s.close();
    inputs.forEach((_, i) => expect(maxDiff(probs[i], reference[i]), `stream ${i}`).toBeLessThan(TOLERANCE));
    const stats = batched.batchStats!;
    // Really batched: far fewer runs than windows. Streams fill their 512-sample windows on different 20 ms
    // frames (they joined at different ticks), so not every run holds all of them.
    expect(stats.maxBatchSize).toBeGreaterThanOrEqual(inputs.length / 2);
    expect(stats.runs - runsBefore).toBeLessThan((stats.windows - windowsBefore) / 4);
  });

  it('a stream closed mid-call (its window already queued) leaves the others exactly right', async () => {
    const streams = inputs.map(() => batched.createStream());
    const probs: number[][] = inputs.map(() => []);
    const victim = 4;
    const closeAt = 40;
    const ticks = Math.max(...inputs.map(frameCount));
    for (let t = 0; t < ticks; t++) {
      const pending = streams.map(async (stream, i) => {
        if (i === victim && t >= closeAt) return;
        if (t >= frameCount(inputs[i])) return;
        probs[i].push(await stream.process(frameAt(inputs[i], t)));
      });
      // Closed synchronously, after its frame went in and before the batch runs: its window is dropped.
      if (t === closeAt - 1) streams[victim].close();
      await Promise.all(pending);
    }
    for (const s of streams) s.close();
    inputs.forEach((_, i) => {
      if (i === victim) {
        expect(probs[i]).toHaveLength(closeAt);
        expect(maxDiff(probs[i].slice(0, closeAt - 2), reference[i].slice(0, closeAt - 2))).toBeLessThan(TOLERANCE);
      } else {
        expect(maxDiff(probs[i], reference[i]), `stream ${i}`).toBeLessThan(TOLERANCE);
      }
    });
    await expect(streams[victim].process(frameAt(inputs[victim], 0))).rejects.toThrow(/after close/);
  });

  it('reset() in one stream gives it a fresh state without touching the others', async () => {
    const [a, b] = [batched.createStream(), batched.createStream()];
    const pa: number[] = [];
    const pb: number[] = [];
    const n = frameCount(inputs[0]);
    const half = 60;
    for (let t = 0; t < n; t++) {
      if (t === half) a.reset();
      // After the reset, stream a replays input 1 from its start: it must match input 1 alone.
      const fa = t < half ? frameAt(inputs[0], t) : frameAt(inputs[1], t - half);
      const [x, y] = await Promise.all([a.process(fa), b.process(frameAt(inputs[0], t))]);
      pa.push(x);
      pb.push(y);
    }
    a.close();
    b.close();
    expect(maxDiff(pb, reference[0])).toBeLessThan(TOLERANCE);
    expect(maxDiff(pa.slice(0, half), reference[0].slice(0, half))).toBeLessThan(TOLERANCE);
    expect(maxDiff(pa.slice(half), reference[1].slice(0, n - half))).toBeLessThan(TOLERANCE);
  });
});

describe('a failed batched inference', () => {
  let session: ort.InferenceSession;

  beforeAll(async () => {
    session = await ort.InferenceSession.create(defaultSileroModelPath(), { intraOpNumThreads: 1, interOpNumThreads: 1 });
  });

  afterAll(async () => {
    await session?.release();
  });

  it('fails only the windows in that run; a window queued behind it, and later windows of the failed streams, succeed', async () => {
    let failNext = false;
    const runs: number[] = [];
    // The real session, with one run made to fail after taking some time (so another window queues behind it).
    const runner: SileroRunner = {
      run: (async (feeds: ort.InferenceSession.FeedsType) => {
        runs.push(feeds.input.dims[0]);
        if (failNext) {
          failNext = false;
          await new Promise((r) => setTimeout(r, 30));
          throw new Error('inference failed (injected)');
        }
        return session.run(feeds);
      }) as SileroRunner['run'],
    };
    const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(SR)]), []);
    const batcher = new SileroBatcher(runner, sr);
    const refBatcher = new SileroBatcher(session, sr);
    const audio = seededNoise(SR, 77, 1500);
    const [a, b, c] = [new SileroVadStream(batcher), new SileroVadStream(batcher), new SileroVadStream(batcher)];
    const ref = new SileroVadStream(refBatcher);
    // The first frame of each stream fills no window (320 of 512 samples): no inference yet.
    await Promise.all([a, b, c, ref].map((s) => s.process(frameAt(audio, 0))));
    expect(runs).toHaveLength(0);

    failNext = true;
    const pa = a.process(frameAt(audio, 1));
    const pb = b.process(frameAt(audio, 1));
    await new Promise((r) => setTimeout(r, 10));
    // Submitted while the failing run is in flight: goes into the next run.
    const pc = c.process(frameAt(audio, 1));
    await expect(pa).rejects.toThrow(/injected/);
    await expect(pb).rejects.toThrow(/injected/);
    const expected = await ref.process(frameAt(audio, 1));
    expect(Math.abs((await pc) - expected)).toBeLessThan(TOLERANCE);
    expect(runs).toEqual([2, 1]);

    // The failed streams go on (that window is lost, their state is the one before it).
    for (let f = 2; f < 10; f++) {
      const [x, y] = await Promise.all([a.process(frameAt(audio, f)), b.process(frameAt(audio, f))]);
      expect(x).toBeGreaterThanOrEqual(0);
      expect(x).toBeLessThanOrEqual(1);
      expect(Math.abs(x - y)).toBeLessThan(TOLERANCE);
    }
    await batcher.close();
    await refBatcher.close();
    // After close: frame 10 completes no window (still answers), frame 11 does and is refused.
    await expect(a.process(frameAt(audio, 10))).resolves.toBeTypeOf('number');
    await expect(a.process(frameAt(audio, 11))).rejects.toThrow(/closed/);
  });
});

describe('a VAD behind real time', () => {
  it('is behind once answers take a window (32 ms) for 200 ms, caught up after 3 s of answers under 16 ms, and says for how long (fake clock)', async () => {
    const session = await ort.InferenceSession.create(defaultSileroModelPath(), { intraOpNumThreads: 1, interOpNumThreads: 1 });
    let clock = 0;
    let runMs = 40;
    const runner: SileroRunner = {
      run: (async (feeds: ort.InferenceSession.FeedsType) => {
        clock += runMs;
        return session.run(feeds);
      }) as SileroRunner['run'],
    };
    const sr = new ort.Tensor('int64', BigInt64Array.from([BigInt(SR)]), []);
    const batcher = new SileroBatcher(runner, sr, undefined, 1, () => clock);
    const stream = new SileroVadStream(batcher, null);
    const audio = seededNoise(SR * 5, 5, 1500);
    let frame = 0;
    const next = async (): Promise<void> => {
      await stream.process(frameAt(audio, frame++ % 250));
      clock += 20;
    };
    // 20 ms frames: the second completes the first window. One slow answer (a GC pause) is not behind.
    await next();
    await next();
    expect(batcher.behind).toBe(false);
    runMs = 5;
    for (let i = 0; i < 10; i++) await next();
    expect(batcher.behind).toBe(false);
    // Answers of 40 ms, one after another: behind 200 ms after the first.
    runMs = 40;
    const lateFrom = clock;
    while (!batcher.behind) await next();
    expect(clock - lateFrom).toBeGreaterThanOrEqual(200);
    expect(clock - lateFrom).toBeLessThan(300);
    expect(batcher.stats.behindEpisodes).toBe(1);
    // Answers of 20 ms: not slow enough to fall behind, too slow to count as caught up.
    runMs = 20;
    for (let i = 0; i < 200; i++) await next();
    expect(batcher.behind).toBe(true);
    // Answers of 5 ms: caught up three seconds after the last slow one.
    runMs = 5;
    const caughtUpFrom = clock;
    while (batcher.behind) await next();
    expect(clock - caughtUpFrom).toBeGreaterThanOrEqual(3000);
    expect(clock - caughtUpFrom).toBeLessThan(3100);
    expect(batcher.stats.behindEpisodes).toBe(1);
    expect(batcher.stats.behindMs).toBeGreaterThan(6000);
    expect(batcher.stats.behindMs).toBeLessThanOrEqual(clock);
    await batcher.close();
    await session.release();
  });
});

describe('the Silero VAD worker dying', () => {
  it('a dead worker is restarted (logged) and a batch caught by a death runs again: every stream still gets its unbatched probabilities; three deaths in a row move the VAD to this thread', async () => {
    const { inputs, reference } = await getFixtures();
    const logs: LogLine[] = [];
    const vad = new SileroVad({ logger: capturingLogger(logs), quietWindows: null });
    await vad.load();
    const runner = vad.workerRunner!;
    expect(runner).not.toBeNull();
    const streams = inputs.map(() => vad.createStream());
    const probs: number[][] = inputs.map(() => []);
    const killOnce = 20;
    const killThrice = 60;
    let killer: Promise<void> = Promise.resolve();
    for (let t = 0; t < frameCount(inputs[0]); t++) {
      const pending = streams.map(async (stream, i) => {
        probs[i].push(await stream.process(frameAt(inputs[i], t)));
      });
      await Promise.all(pending);
      if (t === killOnce || t === killThrice) {
        // Killed between runs: terminate() while onnxruntime-node is inside a native run aborts the whole process
        // (its binding throws a C++ exception into a dying thread), so the kill lands between batches, and the
        // next tick's batch is the one in flight while its new worker starts.
        const restarts = runner.restarts;
        await runner.thread!.terminate();
        if (t === killThrice) {
          // That replacement and the next die while loading the model, with the batch waiting on them, before
          // any batch is answered; meanwhile the calls go on (their batch then runs on the main thread).
          killer = (async () => {
            for (const r of [restarts + 1, restarts + 2]) {
              await until(() => runner.restarts === r && runner.thread !== null);
              await runner.thread!.terminate();
            }
          })();
        }
      }
      if (t === killOnce) expect(runner.onMainThread).toBe(false);
    }
    await killer;
    for (const s of streams) s.close();
    inputs.forEach((_, i) => expect(maxDiff(probs[i], reference[i]), `stream ${i}`).toBeLessThan(TOLERANCE));
    expect(runner.restarts).toBe(3);
    expect(runner.onMainThread).toBe(true);
    expect(logs.filter((l) => l.level === 50 && /died; restarting/.test(l.msg))).toHaveLength(3);
    expect(logs.filter((l) => l.level === 50 && /keeps dying/.test(l.msg))).toHaveLength(1);
    await vad.close();
  });

  it('close() ends the worker thread, and that is not logged as a death', async () => {
    const logs: LogLine[] = [];
    const vad = new SileroVad({ logger: capturingLogger(logs), quietWindows: null });
    await vad.load();
    const thread = vad.workerRunner!.thread!;
    const exited = new Promise<number>((r) => thread.once('exit', r));
    const stream = vad.createStream();
    const audio = seededNoise(SR / 2, 5, 1500);
    for (let f = 0; f < 5; f++) await stream.process(frameAt(audio, f));
    await vad.close();
    await exited;
    expect(logs).toHaveLength(0);
    expect(() => vad.createStream()).toThrow(/load\(\)/);
  });
});

describe('providers.vad.worker in the config', () => {
  it('takes true or false and refuses anything else, naming the key', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'vad-worker-config-'));
    const write = (worker: unknown): string => {
      const file = path.join(dir, `c-${String(worker)}.json`);
      writeFileSync(file, JSON.stringify({ providers: { vad: { provider: 'silero', worker } } }));
      return file;
    };
    try {
      expect(loadConfig(['--config', write(false)], {}).providers.vad).toMatchObject({ provider: 'silero', worker: false });
      expect(loadConfig(['--config', write(true)], {}).providers.vad).toMatchObject({ provider: 'silero', worker: true });
      expect(() => loadConfig(['--config', write('yes')], {})).toThrow(/vad/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
