/**
 * A call whose booking service is slow: the caller hears "one moment" after agent.toolHoldMs, then the form's clear
 * failure line and the read-back again (never a crash, never silence); their second "yes" re-sends the same
 * Idempotency-Key, so the booking the slow service made on receipt is the only one.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_API_KEY, type TestServer } from './helpers/server.js';
import { startAgentWithOperator, type OperatorService } from './helpers/operator.js';
import { TextCaller } from './helpers/text-caller.js';

describe('a call whose booking service is too slow', () => {
  let ops: OperatorService;
  let server: TestServer;
  let stop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    ({ ops, server, stop } = await startAgentWithOperator({ toolTimeoutMs: 900, overrides: { agent: { toolHoldMs: 400 } } }));
  }, 60_000);
  afterAll(async () => {
    await stop?.();
  });

  it('a slow service: "one moment", then the failure line; the second yes books once with the same key', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    await caller.open();
    const before = ops.bookings.length;
    await caller.say('book a table for four tomorrow at seven pm, the name is Carlos');
    ops.slow(1500);
    const t0 = performance.now();
    const failed = await caller.say('yes');
    const elapsed = performance.now() - t0;
    expect(failed.text).toBe('One moment, please. The booking system did not answer. 4 at 7 PM, Carlos. Book it?');
    // It booked on receipt (a slow backend), but the caller was told it did not go through: the retry must not book again.
    expect(ops.bookings.length).toBe(before + 1);
    expect(elapsed).toBeGreaterThan(900);
    const firstKey = ops.requests.at(-1)?.headers['idempotency-key'];
    const retried = await caller.say('yes');
    expect(ops.bookings.length).toBe(before + 1);
    expect(ops.requests.at(-1)?.headers['idempotency-key']).toBe(firstKey);
    expect(retried.text).toBe(`Booked for 4, reference ${ops.bookings.at(-1)?.reference}.`);
    await caller.close();
  }, 20_000);
});
