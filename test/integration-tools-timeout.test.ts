/**
 * A call whose booking service is slow: the caller hears "one moment" after agent.toolHoldMs, then the form's clear
 * failure line and the read-back again (never a crash, never silence); their second "yes" re-sends the same
 * Idempotency-Key, so the booking the slow service made on receipt is the only one.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { restaurantAgentWithHttpBooking, startOperatorService, type OperatorService } from './helpers/operator.js';
import { TextCaller } from './helpers/text-caller.js';

const SECRET_ENV = 'TEST_OPERATOR_TOOLS_SECRET';
const SECRET = 'operator-shared-secret-for-tests';

describe('a call whose booking service is too slow', () => {
  let ops: OperatorService;
  let server: TestServer;
  let dir: string;
  beforeAll(async () => {
    process.env[SECRET_ENV] = SECRET;
    ops = await startOperatorService(SECRET);
    dir = await mkdtemp(path.join(tmpdir(), 'agent-'));
    const rulesPath = await restaurantAgentWithHttpBooking(path.join(dir, 'agent.json'), ops.url, { secretEnv: SECRET_ENV, timeoutMs: 900 });
    // Typed turns: no grammar to compile for the recogniser (seconds saved).
    server = await startTestServer({
      providers: { llm: { provider: 'rules', rulesPath }, asr: { provider: 'pocketsphinx', grammar: 'off' } },
      agent: { toolHoldMs: 400 },
    });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await ops?.close();
    await rm(dir, { recursive: true, force: true });
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
