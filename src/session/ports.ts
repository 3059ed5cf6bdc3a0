/**
 * What a session needs from the service around it, defined here by the session (the implementations live in
 * src/metrics/ and src/recording/ and depend on these, not the other way round). ToolExecutor, the third, is
 * in ./reply.ts next to the reply that calls it.
 */
import type { ErrorCode, TurnMetrics } from './events.js';

/** What a session reports; the Prometheus implementation (src/metrics/metrics.ts) is the only one outside tests. */
export interface MetricsSink {
  sessionOpened(transport: string): void;
  sessionClosed(transport: string): void;
  turnCompleted(metrics: TurnMetrics): void;
  interruption(): void;
  error(code: ErrorCode): void;
}

/** Where a recorded call's audio goes (src/recording/recorder.ts), and the two things that stop it. */
export interface RecordingTap {
  caller(samples: Int16Array): void;
  agent(samples: Int16Array): void;
  /** True while the agent collects a sensitive answer (card, PIN): nothing is recorded, as PCI DSS asks. */
  sensitive(on: boolean): void;
  /** The caller's answer to the consent line: a refusal discards everything recorded and records nothing more. */
  consent(given: boolean): void;
}
