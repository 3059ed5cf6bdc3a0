/** The VAD worker's health on /metrics, read from the VAD at each scrape (as registerBackendMetrics does for pools). */
import { Gauge, type Registry } from 'prom-client';
import type { VadWorkerStats } from './types.js';

/** A VAD that can run in a worker thread (SileroVad, and FallbackVad for the VAD it wraps); null: none runs. */
export interface HasVadWorkerStats {
  readonly workerStats: VadWorkerStats | null;
}

export function hasVadWorkerStats(value: unknown): value is HasVadWorkerStats {
  return typeof value === 'object' && value !== null && 'workerStats' in value;
}

/**
 * `voice_agent_vad_worker_restarts`, `_deaths`, `_hangs` (counts since start) and `voice_agent_vad_worker_fallback`
 * (1 once workers kept failing and the VAD runs on the event loop's thread). A VAD without a worker is skipped.
 */
export function registerVadWorkerMetrics(registry: Registry, vad: unknown): void {
  if (!hasVadWorkerStats(vad)) return;
  const series = (name: string, help: string, value: (s: VadWorkerStats) => number): void => {
    new Gauge({
      name,
      help,
      registers: [registry],
      collect() {
        const stats = vad.workerStats;
        if (stats !== null) this.set(value(stats));
      },
    });
  };
  series('voice_agent_vad_worker_restarts', 'VAD worker threads started after the first (after a death or a hang)', (s) => s.restarts);
  series('voice_agent_vad_worker_deaths', 'VAD worker threads that exited or failed', (s) => s.deaths);
  series('voice_agent_vad_worker_hangs', 'VAD worker threads that held a batch past providers.vad.workerDeadlineMs and were replaced', (s) => s.hangs);
  series('voice_agent_vad_worker_fallback', 'VAD runs on the event loop thread because its workers kept dying or hanging (1) or not (0)', (s) => (s.onMainThread ? 1 : 0));
}
