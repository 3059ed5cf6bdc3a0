import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { ErrorCode, TurnMetrics, TurnStages } from '../session/events.js';

const LATENCY_BUCKETS_MS = [5, 10, 20, 30, 50, 75, 100, 150, 200, 250, 300, 400, 500, 750, 1000, 1500, 2000, 3000, 5000];

const STAGE_NAMES: Record<keyof TurnStages, string> = {
  endpointMs: 'endpoint',
  asrFinalMs: 'asr_final',
  llmFirstTokenMs: 'llm_first_token',
  ttsFirstAudioMs: 'tts_first_audio',
  toolsMs: 'tools',
  serverV2vMs: 'server_v2v',
};

import type { MetricsSink } from '../session/ports.js';

/** The session defines what it reports (src/session/ports.ts); re-exported for the modules that import it here. */
export type { MetricsSink };

/** Prometheus metrics on a registry of its own, so several servers can live in one process (tests). */
export class Metrics implements MetricsSink {
  readonly registry = new Registry();
  private readonly stageLatency: Histogram<'stage'>;
  private readonly sessions: Gauge<'transport'>;
  private readonly sessionsTotal: Counter<'transport'>;
  private readonly turns: Counter<'preemptive'>;
  private readonly interruptions: Counter;
  private readonly errors: Counter<'code'>;
  private readonly dropped: Counter<'transport'>;

  constructor() {
    collectDefaultMetrics({ register: this.registry, prefix: 'voice_agent_' });
    this.stageLatency = new Histogram({
      name: 'voice_agent_stage_latency_ms',
      help: 'Per-turn latency of each pipeline stage, milliseconds (server_v2v: last caller voice in → first agent audio out)',
      labelNames: ['stage'],
      buckets: LATENCY_BUCKETS_MS,
      registers: [this.registry],
    });
    this.sessions = new Gauge({ name: 'voice_agent_sessions_active', help: 'Calls in progress', labelNames: ['transport'], registers: [this.registry] });
    this.sessionsTotal = new Counter({ name: 'voice_agent_sessions_total', help: 'Calls started', labelNames: ['transport'], registers: [this.registry] });
    this.turns = new Counter({ name: 'voice_agent_turns_total', help: 'Caller turns answered', labelNames: ['preemptive'], registers: [this.registry] });
    this.interruptions = new Counter({ name: 'voice_agent_interruptions_total', help: 'Agent replies cut off by the caller (barge-in)', registers: [this.registry] });
    this.dropped = new Counter({ name: 'voice_agent_audio_frames_dropped_total', help: 'Agent audio frames dropped because the client read too slowly', labelNames: ['transport'], registers: [this.registry] });
    this.errors = new Counter({ name: 'voice_agent_errors_total', help: 'Errors reported to clients, by code', labelNames: ['code'], registers: [this.registry] });
  }

  sessionOpened(transport: string): void {
    this.sessions.inc({ transport });
    this.sessionsTotal.inc({ transport });
  }

  sessionClosed(transport: string): void {
    this.sessions.dec({ transport });
  }

  turnCompleted(metrics: TurnMetrics): void {
    this.turns.inc({ preemptive: String(metrics.preemptive) });
    for (const [key, value] of Object.entries(metrics.stages) as [keyof TurnStages, number | undefined][]) {
      if (value !== undefined) this.stageLatency.observe({ stage: STAGE_NAMES[key] }, value);
    }
  }

  interruption(): void {
    this.interruptions.inc();
  }

  error(code: ErrorCode): void {
    this.errors.inc({ code });
  }

  droppedAudio(transport: string): void {
    this.dropped.inc({ transport });
  }
}
