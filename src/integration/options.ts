/** The `integration` section (the operator's systems: signed webhooks out, docs/integration.md): options, defaults, type. */
import { common, defaultsOf, t, type Resolved } from '../core/options.js';

export const WEBHOOK_EVENTS = ['call.started', 'call.ended', 'tool.executed', 'call.transfer', 'call.turn'] as const;
export type WebhookEventType = (typeof WEBHOOK_EVENTS)[number];
/** Sent unless `events` says otherwise: `call.turn` (one per turn, with what was said) only when asked for. */
export const DEFAULT_WEBHOOK_EVENTS: WebhookEventType[] = WEBHOOK_EVENTS.filter((e) => e !== 'call.turn');

export const WEBHOOKS_OPTIONS = t.object({
  /** Receiver URL; empty: webhooks are off. */
  url: t.default(t.string({ pattern: '^(https?://.+)?$' }), ''),
  /** Env var holding the HMAC secret (never the secret itself in a file). */
  secretEnv: t.default(t.string({ pattern: '^[A-Z_][A-Z0-9_]*$' }), 'VOICE_AGENT_WEBHOOK_SECRET'),
  /** Which events to send (default: all but `call.turn`). */
  events: t.default(t.array(t.enum(WEBHOOK_EVENTS)), [...DEFAULT_WEBHOOK_EVENTS]),
  /** Per attempt. */
  timeoutMs: t.default(common.ms(100), 5000),
  /** Attempts per event before it is given up (counted as failed). */
  maxAttempts: t.default(t.integer(1, 50), 8),
  /** First retry delay; doubles each attempt up to maxBackoffMs (±20 % jitter). */
  backoffMs: t.default(common.ms(1), 500),
  maxBackoffMs: t.default(common.ms(1), 30_000),
  /** Events waiting across all calls; beyond it new events are dropped. */
  maxQueue: t.default(t.integer(1), 10_000),
});
export type WebhooksConfig = Resolved<typeof WEBHOOKS_OPTIONS>;
export const DEFAULT_WEBHOOKS: WebhooksConfig = defaultsOf(WEBHOOKS_OPTIONS);

/** HTTP tools live in the agent file, not here. */
export const INTEGRATION_OPTIONS = t.object({ webhooks: t.default(WEBHOOKS_OPTIONS, DEFAULT_WEBHOOKS) });
/** After the merge `webhooks` is always there with every key (its own defaults fill what the file leaves out). */
export interface IntegrationConfig {
  webhooks: WebhooksConfig;
}
export const INTEGRATION_DEFAULTS: IntegrationConfig = { webhooks: DEFAULT_WEBHOOKS };
