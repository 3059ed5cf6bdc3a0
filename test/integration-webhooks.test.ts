/**
 * Events out: a call's webhooks (call.started, tool.executed, call.transfer, call.ended) reach a real receiver
 * on loopback that drops the first attempts and refuses the next: retried with back-off, received in order per
 * call, every one signed, while the call itself goes on undisturbed. The dispatcher's bounds: a full queue drops
 * and counts, a receiver that never recovers is given up after maxAttempts and counted, nothing throws.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Registry } from 'prom-client';
import { silentLogger } from '../src/core/logger.js';
import { WebhookDispatcher, DEFAULT_WEBHOOKS, type WebhookEvent } from '../src/integration/webhooks.js';
import type { WebhooksConfig } from '../src/integration/options.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { startOperatorService, type OperatorService } from './helpers/operator.js';
import { TextCaller } from './helpers/text-caller.js';

const SECRET_ENV = 'TEST_WEBHOOK_SECRET';
const SECRET = 'webhook-shared-secret-for-tests';

async function metricValue(registry: Registry, name: string, labels: Record<string, string>): Promise<number> {
  const metric = (await registry.getMetricsAsJSON()).find((m) => m.name === name);
  const values = (metric?.values ?? []) as { value: number; labels: Record<string, string | number> }[];
  return values.filter((v) => Object.entries(labels).every(([k, l]) => String(v.labels[k]) === l)).reduce((a, v) => a + v.value, 0);
}

describe('webhook dispatcher bounds', () => {
  let receiver: OperatorService;
  beforeAll(async () => {
    receiver = await startOperatorService(SECRET);
  });
  afterAll(() => receiver.close());

  it('a receiver that stays down: given up after maxAttempts, counted, the next call\'s events still flow', async () => {
    const registry = new Registry();
    const hooks = new WebhookDispatcher(
      { ...DEFAULT_WEBHOOKS, url: `${receiver.url}/events`, secretEnv: SECRET_ENV, maxAttempts: 3, backoffMs: 20, maxBackoffMs: 40 },
      silentLogger(),
      registry,
      { [SECRET_ENV]: SECRET },
    );
    receiver.down(100);
    hooks.emit('a', 'call.started', {});
    expect(await hooks.idle(5000)).toBe(true);
    expect(await metricValue(registry, 'voice_agent_webhook_events_total', { result: 'failed' })).toBe(1);
    expect(await metricValue(registry, 'voice_agent_webhook_attempts_total', { outcome: 'http_503' })).toBe(3);
    receiver.down(0);
    hooks.emit('b', 'call.started', {});
    expect(await hooks.idle(5000)).toBe(true);
    expect(await metricValue(registry, 'voice_agent_webhook_events_total', { result: 'delivered' })).toBe(1);
    await hooks.close();
  });

  it('a receiver URL without its secret in the environment stops start-up with the variable\'s name', () => {
    expect(() => new WebhookDispatcher({ ...DEFAULT_WEBHOOKS, url: `${receiver.url}/events`, secretEnv: 'NOT_SET_ANYWHERE' }, silentLogger(), new Registry(), {})).toThrow(
      /NOT_SET_ANYWHERE must hold the signing secret/,
    );
  });

  it('past maxQueue waiting events, new ones are dropped and counted; emit never waits', async () => {
    const registry = new Registry();
    const hooks = new WebhookDispatcher(
      { ...DEFAULT_WEBHOOKS, url: `${receiver.url}/events`, secretEnv: SECRET_ENV, maxQueue: 2, backoffMs: 20 },
      silentLogger(),
      registry,
      { [SECRET_ENV]: SECRET },
    );
    receiver.slow(300, 1);
    const t0 = performance.now();
    for (let i = 0; i < 5; i++) hooks.emit('c', 'tool.executed', { i });
    expect(performance.now() - t0).toBeLessThan(50);
    expect(await hooks.idle(5000)).toBe(true);
    expect(await metricValue(registry, 'voice_agent_webhook_events_total', { result: 'dropped' })).toBe(3);
    expect(await metricValue(registry, 'voice_agent_webhook_events_total', { result: 'delivered' })).toBe(2);
    await hooks.close();
  });
});

/** A signing receiver, and a test server whose webhooks (with these settings) go to it. */
async function startWithReceiver(webhooks: Partial<WebhooksConfig>): Promise<{ receiver: OperatorService; server: TestServer }> {
  process.env[SECRET_ENV] = SECRET;
  const receiver = await startOperatorService(SECRET);
  const server = await startTestServer({
    providers: { asr: { provider: 'pocketsphinx', grammar: 'off' } },
    integration: { webhooks: { url: `${receiver.url}/events`, secretEnv: SECRET_ENV, ...webhooks } },
  });
  return { receiver, server };
}

describe('a call\'s webhooks against a receiver that is down at first', () => {
  let receiver: OperatorService;
  let server: TestServer;
  beforeAll(async () => {
    ({ receiver, server } = await startWithReceiver({ timeoutMs: 5000, backoffMs: 100, maxBackoffMs: 800, maxAttempts: 12 }));
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await receiver?.close();
  });

  it('all events arrive, in order, signed, after the receiver comes back; the call was never held up', async () => {
    // The receiver hangs on the first event past the dispatcher's timeout, then drops connections three times.
    receiver.slow(6000, 1);
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const openedAt = Date.now();
    const callId = await caller.open();
    const time = await caller.say('what time is it');
    expect(time.text).toMatch(/^It is /);
    // The call went on while its first event was still stuck at the receiver.
    expect(receiver.requests.filter((r) => r.status === 200)).toHaveLength(0);
    receiver.down(3, 'reset');
    const transfer = await caller.say('transfer me to an agent');
    expect(transfer.events.some((e) => e.type === 'call.action' && e.action === 'transfer')).toBe(true);
    await caller.close();
    const callSeconds = (Date.now() - openedAt) / 1000;
    const hooks = server.server.service.webhooks;
    expect(hooks).not.toBeNull();
    // call.ended is emitted once the server has closed the session.
    await untilDelivered(receiver, 'call.ended', hooks);
    // A receiver keeps the first of each event id (a late answer to a timed-out attempt may deliver one twice).
    const firsts = new Map<string, (typeof receiver.requests)[number]>();
    for (const r of receiver.requests) {
      const e = r.json as WebhookEvent;
      if (r.status === 200 && e.call_id === callId && !firsts.has(e.id)) firsts.set(e.id, r);
    }
    const delivered = [...firsts.values()];
    const events = delivered.map((r) => r.json as WebhookEvent);
    expect(events.map((e) => e.type)).toEqual(['call.started', 'tool.executed', 'tool.executed', 'call.transfer', 'call.ended']);
    expect(events.map((e) => e.seq)).toEqual([1, 2, 3, 4, 5]);
    expect(delivered.every((r) => r.signed)).toBe(true);
    expect(new Set(events.map((e) => e.id)).size).toBe(5);
    expect(delivered.every((r, i) => r.headers['idempotency-key'] === events[i].id && r.headers['x-agent-event'] === events[i].type)).toBe(true);
    expect(events[0].data).toMatchObject({ transport: 'ws', caller: { transport: 'ws' } });
    expect(events[1].data).toMatchObject({ name: 'get_current_time', ok: true });
    expect(events[2].data).toMatchObject({ name: 'transfer_to_human', ok: true, action: 'transfer' });
    expect(events[4].data).toMatchObject({ turns: 2 });
    expect(typeof events[4].data.reason).toBe('string');
    // The call's length in tenths of a second: a text call of two turns can take under 50 ms (0.0).
    expect(events[4].data.duration_s).toBeGreaterThanOrEqual(0);
    expect(events[4].data.duration_s).toBeLessThanOrEqual(Math.ceil(callSeconds * 10) / 10 + 0.1);
    // The failed attempts were counted where an operator looks.
    const metrics = await (await fetch(`${server.httpUrl}/metrics`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).text();
    expect(metrics).toMatch(/voice_agent_webhook_attempts_total\{outcome="timeout"\} 1/);
    expect(metrics).toMatch(/voice_agent_webhook_attempts_total\{outcome="network"\} 3/);
  }, 25_000);
});

/** Waits (up to ~15 s) until the receiver has accepted an event of `type`; the dispatcher's queue may be empty meanwhile. */
async function untilDelivered(receiver: OperatorService, type: string, hooks: WebhookDispatcher | null | undefined): Promise<void> {
  const delivered = (): boolean => receiver.requests.some((r) => r.status === 200 && (r.json as WebhookEvent).type === type);
  for (let i = 0; i < 150 && !delivered(); i++) {
    await new Promise((r) => setTimeout(r, 50));
    await hooks?.idle(200);
  }
}

describe('turn events (opt-in)', () => {
  let server: TestServer;
  let receiver: OperatorService;
  beforeAll(async () => {
    ({ receiver, server } = await startWithReceiver({ events: ['call.started', 'call.turn', 'call.ended'] }));
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await receiver?.close();
  });

  it('each finished turn goes out with what the caller said and what the agent answered, in order', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const callId = await caller.open();
    const time = await caller.say('what time is it');
    await caller.say('thanks, goodbye');
    await caller.close();
    const hooks = server.server.service.webhooks;
    // call.ended is emitted only once the server has seen the socket close; idle() alone returns at once before that.
    await untilDelivered(receiver, 'call.ended', hooks);
    const events = receiver.requests.map((r) => r.json as WebhookEvent).filter((e) => e.call_id === callId);
    expect(events.map((e) => e.type)).toEqual(['call.started', 'call.turn', 'call.turn', 'call.ended']);
    expect(events[1].data).toMatchObject({ turn: 1, caller_text: 'what time is it', agent_text: time.text, status: 'completed', language: 'en' });
    expect(events[2].data).toMatchObject({ turn: 2, caller_text: 'thanks, goodbye' });
    expect(receiver.requests.every((r) => r.signed)).toBe(true);
  }, 25_000);
});
