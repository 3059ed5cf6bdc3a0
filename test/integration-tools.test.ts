/**
 * HTTP tools declared in the agent file, end to end: a caller books a table over the device WebSocket, the
 * rules agent's form calls the operator's booking service (a real HTTP server on loopback) with a signed,
 * idempotent request, and the service's answer is spoken back. A slow service in a call:
 * integration-tools-timeout.test.ts.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { httpTool, idempotencyKey, validateHttpTools, type HttpToolSpec } from '../src/integration/http-tools.js';
import { signPayload, verifySignature } from '../src/integration/signing.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import { createToolExecutor } from '../src/providers/llm/tool-filter.js';
import { validateRulesConfig } from '../src/providers/llm/rules/config.js';
import { TEST_API_KEY, type TestServer } from './helpers/server.js';
import { OPERATOR_SECRET as SECRET, OPERATOR_SECRET_ENV as SECRET_ENV, restaurantAgentWithHttpBooking, startAgentWithOperator, startOperatorService, type OperatorService } from './helpers/operator.js';
import { TextCaller } from './helpers/text-caller.js';


describe('signing', () => {
  it('verifies its own signature, refuses a changed body, a wrong secret and a stale timestamp', () => {
    const now = Date.now();
    const ts = Math.floor(now / 1000);
    const body = '{"party_size":2}';
    const signature = `v1=${signPayload(SECRET, ts, body)}`;
    expect(verifySignature({ secret: SECRET, body, timestamp: String(ts), signature, nowMs: now })).toEqual({ ok: true });
    expect(verifySignature({ secret: SECRET, body: '{"party_size":20}', timestamp: String(ts), signature, nowMs: now })).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifySignature({ secret: 'another-secret-entirely', body, timestamp: String(ts), signature, nowMs: now })).toEqual({ ok: false, reason: 'mismatch' });
    expect(verifySignature({ secret: SECRET, body, timestamp: String(ts), signature, nowMs: now + 301_000 })).toEqual({ ok: false, reason: 'stale' });
    expect(verifySignature({ secret: SECRET, body, timestamp: undefined, signature, nowMs: now })).toEqual({ ok: false, reason: 'missing' });
  });
});

describe('HTTP tool declarations', () => {
  const problems = (tools: unknown, defaults?: unknown): string[] => {
    const out: string[] = [];
    validateHttpTools(tools, defaults, (w, m) => out.push(`${w}: ${m}`));
    return out;
  };
  const base = { name: 'book_table', description: 'Book.', parameters: { type: 'object', properties: { time: { type: 'string' } } }, url: 'https://ops.example/bookings', secretEnv: 'OPS_SECRET' };

  it('accepts a complete declaration and names each problem of a broken one', () => {
    expect(problems([base])).toEqual([]);
    const bad = problems([{ ...base, url: 'ftp://x', method: 'FETCH', secretEnv: undefined, headers: { 'X-Agent-Signature': 'x', 'X-Who': '{session.secret}' }, timeoutMs: 5 }]);
    expect(bad.join('\n')).toMatch(/url: must be an http/);
    expect(bad.join('\n')).toMatch(/method: must be one of/);
    expect(bad.join('\n')).toMatch(/secretEnv: requests are signed/);
    expect(bad.join('\n')).toMatch(/headers.X-Agent-Signature: not a header a tool may set/);
    expect(bad.join('\n')).toMatch(/unknown placeholder \{session.secret\}/);
    expect(bad.join('\n')).toMatch(/timeoutMs: must be an integer/);
  });

  it('a form naming an HTTP tool gets its slots as arguments, and a missing required parameter is an error', async () => {
    const dir = await mkdtemp(path.join(tmpdir(), 'agent-'));
    try {
      const file = await restaurantAgentWithHttpBooking(path.join(dir, 'agent.json'), 'http://127.0.0.1:9', { secretEnv: SECRET_ENV });
      const raw = JSON.parse(await (await import('node:fs/promises')).readFile(file, 'utf8')) as { intents: { name: string; tool?: { arguments?: unknown } }[]; tools: HttpToolSpec[] };
      const config = validateRulesConfig(structuredClone(raw), 'agent');
      expect(config.intents.find((i) => i.name === 'book_appointment')?.tool?.arguments).toEqual({ party_size: '{party_size}', date: '{date}', time: '{time}', name: '{name}' });
      const broken = structuredClone(raw);
      broken.tools[0].parameters = { ...broken.tools[0].parameters, properties: { ...(broken.tools[0].parameters.properties as object), table_zone: { type: 'string' } }, required: ['table_zone'] };
      expect(() => validateRulesConfig(broken, 'agent')).toThrow(/required parameter table_zone of HTTP tool book_table is not filled/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('the declaration is the LLM\'s tool definition, offered beside the enabled built-ins', () => {
    process.env.OPS_SECRET = SECRET;
    try {
      const tools = createToolExecutor({ enabled: ['get_current_time'] }, { tools: [base as HttpToolSpec] });
      expect(tools.definitions().map((d) => d.name)).toEqual(['get_current_time', 'book_table']);
      expect(tools.definitions()[1]).toEqual({ name: 'book_table', description: 'Book.', parameters: base.parameters });
    } finally {
      delete process.env.OPS_SECRET;
    }
  });

  it('refuses to register a tool whose secret is not in the environment (it never sends unsigned)', () => {
    expect(() => httpTool(base as HttpToolSpec, {}, { env: {} })).toThrow(/OPS_SECRET must hold the signing secret/);
  });
});

describe('an HTTP tool against a real operator service on loopback', () => {
  let ops: OperatorService;
  let registry: ToolRegistry;
  const spec: HttpToolSpec = {
    name: 'book_table',
    description: 'Book.',
    parameters: { type: 'object', properties: { party_size: { type: 'integer' }, time: { type: 'string' } } },
    url: '',
    timeoutMs: 800,
    secretEnv: SECRET_ENV,
    headers: { 'X-Customer-Id': '{caller.customer_id}' },
    result: { reference: 'booking.reference' },
  };
  beforeAll(async () => {
    ops = await startOperatorService(SECRET);
    registry = new ToolRegistry({ builtins: false });
    registry.register(httpTool({ ...spec, url: `${ops.url}/bookings` }, {}, { env: { [SECRET_ENV]: SECRET } }));
  });
  afterAll(() => ops.close());

  const run = (id: string, callId = 'call-1') =>
    registry.execute(
      { id, name: 'book_table', arguments: '{"party_size":2,"time":"19:00"}' },
      { callId, signal: new AbortController().signal, caller: { customer_id: 'C-77' } },
    );

  it('sends a signed request with the caller context and maps the answer', async () => {
    const result = JSON.parse((await run('t1')).content) as Record<string, unknown>;
    expect(result).toEqual({ reference: 'R1001' });
    const req = ops.requests.at(-1);
    expect(req?.signed).toBe(true);
    expect(req?.headers['x-customer-id']).toBe('C-77');
    expect(req?.headers['idempotency-key']).toBe(idempotencyKey('call-1', 'book_table', 't1'));
    expect(req?.json).toEqual({ party_size: 2, time: '19:00' });
  });

  it('retries a 503 with the same key, and a repeated tool call books once', async () => {
    const before = ops.bookings.length;
    ops.down(1);
    const first = JSON.parse((await run('t2')).content) as Record<string, unknown>;
    const again = JSON.parse((await run('t2')).content) as Record<string, unknown>;
    expect(first.reference).toBeDefined();
    expect(again).toEqual(first);
    expect(ops.bookings.length).toBe(before + 1);
    const keys = ops.requests.slice(-3).map((r) => r.headers['idempotency-key']);
    expect(new Set(keys).size).toBe(1);
  });

  it('a connection reset is retried; a service that stays down is a clear error, never a throw', async () => {
    ops.down(1, 'reset');
    expect(JSON.parse((await run('t3')).content)).toHaveProperty('reference');
    ops.down(5);
    const failed = JSON.parse((await run('t4')).content) as Record<string, unknown>;
    expect(String(failed.error)).toMatch(/answered HTTP 503/);
    ops.down(0);
  });

  it('GET sends the arguments as a signed query', async () => {
    const lookup = new ToolRegistry({ builtins: false });
    lookup.register(httpTool({ ...spec, name: 'free_slots', method: 'GET', url: `${ops.url}/slots?venue=main`, result: undefined }, {}, { env: { [SECRET_ENV]: SECRET } }));
    const result = await lookup.execute({ id: 'g1', name: 'free_slots', arguments: '{"party_size":2,"time":"19:00"}' }, { callId: 'call-3', signal: new AbortController().signal });
    expect(JSON.parse(result.content)).toEqual({ ok: true });
    const req = ops.requests.at(-1);
    expect(req?.method).toBe('GET');
    expect(req?.signed).toBe(true);
    expect(req?.body).toBe('');
    expect(req?.path).toBe('/slots');
    expect(req?.query).toBe('?venue=main&party_size=2&time=19%3A00');
  });

  it('a redirect is not followed and an oversized answer is refused, both as clear errors', async () => {
    const other = new ToolRegistry({ builtins: false });
    const env = { [SECRET_ENV]: SECRET };
    other.register(httpTool({ ...spec, name: 'moved', url: `${ops.url}/redirect` }, {}, { env }));
    other.register(httpTool({ ...spec, name: 'huge', url: `${ops.url}/huge`, result: undefined }, {}, { env }));
    const ctx = { callId: 'call-2', signal: new AbortController().signal };
    const before = ops.bookings.length;
    const moved = JSON.parse((await other.execute({ id: 'm1', name: 'moved', arguments: '{}' }, ctx)).content) as Record<string, unknown>;
    expect(String(moved.error)).toMatch(/tool "moved" failed/);
    expect(ops.bookings.length).toBe(before);
    const huge = JSON.parse((await other.execute({ id: 'h1', name: 'huge', arguments: '{}' }, ctx)).content) as Record<string, unknown>;
    expect(String(huge.error)).toMatch(/larger than 262144 bytes/);
  });

  it('a service slower than timeoutMs fails on time with a clear error', async () => {
    ops.slow(2000);
    const t0 = performance.now();
    const failed = JSON.parse((await run('t5')).content) as Record<string, unknown>;
    const ms = performance.now() - t0;
    expect(String(failed.error)).toMatch(/no answer within 800 ms/);
    expect(ms).toBeGreaterThan(750);
    expect(ms).toBeLessThan(1600);
  });
});

describe('a call whose booking form calls the operator service', () => {
  let ops: OperatorService;
  let server: TestServer;
  let stop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    ({ ops, server, stop } = await startAgentWithOperator({ toolTimeoutMs: 1200 }));
  }, 60_000);
  afterAll(async () => {
    await stop?.();
  });

  it('books through the service and speaks its reference back', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY }, { spoken: true });
    const callId = await caller.open();
    const readBack = await caller.say('book a table for two tomorrow at eight pm, the name is Anna');
    expect(readBack.text).toBe('2 at 8 PM, Anna. Book it?');
    expect(ops.bookings).toHaveLength(0);
    const done = await caller.say('yes');
    expect(ops.bookings).toHaveLength(1);
    expect(done.text).toBe(`Booked for 2, reference ${ops.bookings[0].reference}.`);
    // The caller heard it: the reply was synthesised, not only sent as text.
    expect(done.events.some((e) => e.type === 'response.audio.started')).toBe(true);
    const req = ops.requests.at(-1);
    expect(req?.signed).toBe(true);
    expect(req?.json).toMatchObject({ party_size: 2, time: '20:00', name: 'Anna' });
    expect(req?.headers['x-agent-call-id']).toBe(callId);
    await caller.close();
  }, 20_000);

});
