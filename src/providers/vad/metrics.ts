/** The VAD worker's health and its batching on /metrics, read from the VAD at each scrape (as registerBackendMetrics does for pools). */
import { Gauge, type Registry } from 'prom-client';
import type { VadBatchStats, VadWorkerStats } from './types.js';

/** A VAD that can run in a worker thread (SileroVad, and FallbackVad for the VAD it wraps); null: none runs. */
export interface HasVadWorkerStats {
  readonly workerStats: VadWorkerStats | null;
}

export function hasVadWorkerStats(value: unknown): value is HasVadWorkerStats {
  return typeof value === 'object' && value !== null && 'workerStats' in value;
}

/** A VAD that batches windows across calls (SileroVad, and FallbackVad for the VAD it wraps); null before load. */
export interface HasVadBatchStats {
  readonly batchStats: Readonly<VadBatchStats> | null;
}

export function hasVadBatchStats(value: unknown): value is HasVadBatchStats {
  return typeof value === 'object' && value !== null && 'batchStats' in value;
}

/** One gauge read from `stats()` at each scrape; nothing is set while it gives null. */
function scraped<S>(registry: Registry, stats: () => S | null, name: string, help: string, value: (s: S) => number): void {
  new Gauge({
    name,
    help,
    registers: [registry],
    collect() {
      const s = stats();
      if (s !== null) this.set(value(s));
    },
  });
}

/**
 * `voice_agent_vad_worker_restarts`, `_deaths`, `_hangs` (counts since start) and `voice_agent_vad_worker_fallback`
 * (1 once workers kept failing and the VAD runs on the event loop's thread). A VAD without a worker is skipped.
 */
export function registerVadWorkerMetrics(registry: Registry, vad: unknown): void {
  if (!hasVadWorkerStats(vad)) return;
  const series = (name: string, help: string, value: (s: VadWorkerStats) => number): void => scraped(registry, () => vad.workerStats, name, help, value);
  series('voice_agent_vad_worker_restarts', 'VAD worker threads started after the first (after a death or a hang)', (s) => s.restarts);
  series('voice_agent_vad_worker_deaths', 'VAD worker threads that exited or failed', (s) => s.deaths);
  series('voice_agent_vad_worker_hangs', 'VAD worker threads that held a batch past providers.vad.workerDeadlineMs and were replaced', (s) => s.hangs);
  series('voice_agent_vad_worker_fallback', 'VAD runs on the event loop thread because its workers kept dying or hanging (1) or not (0)', (s) => (s.onMainThread ? 1 : 0));
}

/**
 * `voice_agent_vad_batches`, `_batch_windows` and `_batch_run_seconds` (totals since start; windows over batches is
 * the mean batch) and `voice_agent_vad_batch_largest`. How many calls share an inference is what the VAD's cost per
 * call depends on (BENCHMARKS.md); a VAD that does not batch is skipped.
 */
export function registerVadBatchMetrics(registry: Registry, vad: unknown): void {
  if (!hasVadBatchStats(vad)) return;
  const series = (name: string, help: string, value: (s: Readonly<VadBatchStats>) => number): void => scraped(registry, () => vad.batchStats, name, help, value);
  series('voice_agent_vad_batches', 'VAD inferences run since start, each over every window ready across calls', (s) => s.runs);
  series('voice_agent_vad_batch_windows', 'VAD windows (32 ms of one call) inferred since start', (s) => s.windows);
  series('voice_agent_vad_batch_run_seconds', 'Wall time of the VAD inferences since start, as the event loop saw them', (s) => s.totalRunMs / 1000);
  series('voice_agent_vad_behind', 'The VAD is behind real time (1: answers took 32 ms or more for 200 ms, until none took 16 ms for 3 s; quiet lines then skip the model after 0.5 s instead of 3 s) or not (0)', (s) => (s.behind ? 1 : 0));
  series('voice_agent_vad_behind_seconds', 'Time the VAD spent behind real time since start', (s) => s.behindMs / 1000);
  series('voice_agent_vad_quiet_windows_skipped', 'VAD windows not inferred since start: three seconds into a stretch under providers.vad.quietWindowDbfs or steady at the line noise floor', (s) => s.skippedQuietWindows);
  series('voice_agent_vad_batch_largest', 'Most windows in one VAD inference since start', (s) => s.maxBatchSize);
}
