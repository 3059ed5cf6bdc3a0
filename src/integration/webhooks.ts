/**
 * Events out: signed webhooks (signing.ts) for what happens on a call (call.started, tool.executed,
 * call.transfer, call.ended), delivered in order per call, with retries and exponential back-off. `emit` only
 * queues (never awaits, never throws): the audio path never waits on a receiver, and a receiver that is down is
 * logged and counted, never a reason to drop a call. The queue is bounded: past `maxQueue` events waiting, new
 * ones are dropped (counted) rather than growing memory without end.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { Counter, Gauge, type Registry } from 'prom-client';
import { IDEMPOTENCY_HEADER, secretFromEnv, signatureHeaders } from './signing.js';

/** Declared in ./options.ts (`integration.webhooks`). */
export { DEFAULT_WEBHOOK_EVENTS, DEFAULT_WEBHOOKS, WEBHOOK_EVENTS, type WebhookEventType, type WebhooksConfig } from './options.js';
import type { WebhookEventType, WebhooksConfig } from './options.js';

/** The JSON body a receiver gets. `seq` counts per call from 1: with `id` it detects gaps and duplicates. */
export interface WebhookEvent {
  id: string;
  type: WebhookEventType;
  call_id: string;
  seq: number;
  created_at: string;
  data: Record<string, unknown>;
}

interface CallQueue {
  events: WebhookEvent[];
  seq: number;
  running: boolean;
  /** call.ended queued: the entry goes once its queue is empty. */
  ended: boolean;
}

export class WebhookDispatcher {
  private readonly secret: string;
  private readonly calls = new Map<string, CallQueue>();
  private readonly wanted: ReadonlySet<string>;
  private queued = 0;
  private closed = false;
  private readonly idleWaiters: (() => void)[] = [];
  private readonly deliveries: Counter<'type' | 'result'>;
  private readonly attempts: Counter<'outcome'>;
  private readonly depth: Gauge;

  constructor(
    private readonly config: WebhooksConfig,
    private readonly log: Logger,
    registry: Registry,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.secret = secretFromEnv(config.secretEnv, 'integration.webhooks.secretEnv', env);
    this.wanted = new Set(config.events);
    this.deliveries = new Counter({
      name: 'voice_agent_webhook_events_total',
      help: 'Webhook events by final result: delivered, failed (attempts exhausted), dropped (queue full or shutdown)',
      labelNames: ['type', 'result'],
      registers: [registry],
    });
    this.attempts = new Counter({
      name: 'voice_agent_webhook_attempts_total',
      help: 'Webhook delivery attempts by outcome (ok, http_<status>, timeout, network)',
      labelNames: ['outcome'],
      registers: [registry],
    });
    this.depth = new Gauge({ name: 'voice_agent_webhook_queue_depth', help: 'Webhook events waiting for delivery', registers: [registry] });
  }

  /** Queue an event for this call. Synchronous and cheap: safe from the audio path. */
  emit(callId: string, type: WebhookEventType, data: Record<string, unknown>): void {
    if (this.closed || !this.wanted.has(type)) return;
    let queue = this.calls.get(callId);
    if (!queue) {
      queue = { events: [], seq: 0, running: false, ended: false };
      this.calls.set(callId, queue);
    }
    queue.seq++;
    if (type === 'call.ended') queue.ended = true;
    if (this.queued >= this.config.maxQueue) {
      this.deliveries.inc({ type, result: 'dropped' });
      this.log.warn({ callId, type, maxQueue: this.config.maxQueue }, 'webhook queue full: event dropped');
      return;
    }
    queue.events.push({ id: randomUUID(), type, call_id: callId, seq: queue.seq, created_at: new Date().toISOString(), data });
    this.queued++;
    this.depth.set(this.queued);
    if (!queue.running) {
      // Marked now, started on a later turn of the event loop: the request's setup never runs in the caller's tick.
      queue.running = true;
      const q = queue;
      setImmediate(() => void this.drain(callId, q));
    }
  }

  /** Resolves when nothing is waiting (tests, graceful shutdown), or after timeoutMs. */
  async idle(timeoutMs = 10_000): Promise<boolean> {
    if (this.queued === 0) return true;
    return new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), timeoutMs);
      timer.unref();
      this.idleWaiters.push(() => {
        clearTimeout(timer);
        resolve(true);
      });
    });
  }

  /** Stop: what is still queued is dropped (counted) after `graceMs` of trying. */
  async close(graceMs = 2000): Promise<void> {
    await this.idle(graceMs);
    this.closed = true;
    for (const q of this.calls.values()) for (const e of q.events) this.deliveries.inc({ type: e.type, result: 'dropped' });
    this.calls.clear();
    this.queued = 0;
    this.depth.set(0);
  }

  /** One call's events, one at a time and in order: the next waits until this one is delivered or given up. */
  private async drain(callId: string, queue: CallQueue): Promise<void> {
    try {
      while (queue.events.length > 0 && !this.closed) {
        const event = queue.events[0];
        const delivered = await this.deliver(event);
        if (this.closed) return;
        queue.events.shift();
        this.queued--;
        this.depth.set(this.queued);
        this.deliveries.inc({ type: event.type, result: delivered ? 'delivered' : 'failed' });
      }
    } finally {
      queue.running = false;
      if (queue.ended && queue.events.length === 0) this.calls.delete(callId);
      if (this.queued === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  private async deliver(event: WebhookEvent): Promise<boolean> {
    const body = JSON.stringify(event);
    for (let attempt = 1; attempt <= this.config.maxAttempts; attempt++) {
      if (this.closed) return false;
      let outcome: string;
      try {
        const res = await fetch(this.config.url, {
          method: 'POST',
          signal: AbortSignal.timeout(this.config.timeoutMs),
          headers: {
            'content-type': 'application/json',
            'x-agent-event': event.type,
            // The receiver answers a repeated id with 2xx and does nothing: a retry after a lost answer is harmless.
            [IDEMPOTENCY_HEADER]: event.id,
            ...signatureHeaders(this.secret, body),
          },
          body,
        });
        await res.arrayBuffer().catch(() => undefined);
        if (res.ok) {
          this.attempts.inc({ outcome: 'ok' });
          return true;
        }
        outcome = `http_${res.status}`;
      } catch (err) {
        outcome = err instanceof Error && (err.name === 'TimeoutError' || err.name === 'AbortError') ? 'timeout' : 'network';
      }
      this.attempts.inc({ outcome });
      const last = attempt >= this.config.maxAttempts;
      this.log.warn({ callId: event.call_id, type: event.type, seq: event.seq, attempt, outcome, giveUp: last }, last ? 'webhook delivery failed: event given up' : 'webhook delivery failed: will retry');
      if (last) return false;
      const delay = Math.min(this.config.maxBackoffMs, this.config.backoffMs * 2 ** (attempt - 1)) * (0.8 + Math.random() * 0.4);
      await new Promise<void>((resolve) => setTimeout(resolve, delay).unref());
    }
    return false;
  }
}
