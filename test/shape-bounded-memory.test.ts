import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { LimitError, SessionLimiter } from '../src/limits/limits.js';
import { ClientToolExecutor } from '../src/transports/realtime/client-tools.js';
import { MAX_REALTIME_ITEMS } from '../src/transports/realtime/realtime-ws.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

/**
 * Per-call and per-process bookkeeping that used to grow for as long as the call (or the process) lived:
 * rate buckets of every key ever seen, client tool outputs nobody asked for, the realtime item index.
 */
const limits = { maxSessionsPerKey: 0, sessionsPerMinutePerKey: 3, maxSessions: 0, maxSessionMs: 0, idleTimeoutMs: 0, maxMessagesPerSecond: 50, maxBufferedBytes: 1 << 20 };

describe('SessionLimiter forgets keys whose rate bucket has refilled', () => {
  it('tracks only recent keys, and still limits a key that starts calls too fast', () => {
    let now = 0;
    const limiter = new SessionLimiter(limits, () => now);
    for (let i = 0; i < 5000; i++) {
      limiter.admit(`key-${i}`);
      limiter.release(`key-${i}`);
    }
    expect(limiter.trackedKeys).toBe(5000);
    // A burst from one key within the minute is refused.
    for (let i = 0; i < 3; i++) limiter.admit('busy');
    expect(() => limiter.admit('busy')).toThrow(LimitError);

    now += 61_000;
    limiter.admit('late');
    // Every bucket refilled in that minute: none is kept but the newest.
    expect(limiter.trackedKeys).toBe(1);
    // A key still short of tokens keeps its bucket across a sweep.
    for (let i = 0; i < 3; i++) limiter.admit('busy');
    now += 61_000;
    limiter.admit('other');
    now += 1_000;
    expect(() => {
      for (let i = 0; i < 3; i++) limiter.admit('busy');
    }).not.toThrow();
  });
});

describe('ClientToolExecutor keeps a bounded set of call ids', () => {
  it('outputs for calls nobody waits for do not pile up', () => {
    const executor = new ClientToolExecutor(new ToolRegistry({ timezone: 'UTC' }), { awaiting: async () => {} }, 1000);
    for (let i = 0; i < 10_000; i++) {
      executor.addOutput(`call_${i}`, JSON.stringify({ ok: i }));
      executor.announce(`shown_${i}`);
    }
    expect(executor.remembered).toBeLessThanOrEqual(256);
  });
});

describe('the realtime conversation index is bounded', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer();
  });
  afterAll(async () => {
    await server?.stop();
  });

  it(`keeps the newest ${MAX_REALTIME_ITEMS} items; older ones read as item_not_found`, async () => {
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/realtime?model=gpt-realtime`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    const events: Record<string, unknown>[] = [];
    ws.on('message', (data) => events.push(JSON.parse(String(data)) as Record<string, unknown>));
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    const waitFor = async (pred: (e: Record<string, unknown>) => boolean, since = 0): Promise<Record<string, unknown>> => {
      for (let i = 0; i < 500; i++) {
        const found = events.slice(since).find(pred);
        if (found) return found;
        await new Promise((r) => setTimeout(r, 20));
      }
      throw new Error(`timed out; last events ${JSON.stringify(events.slice(-3))}`);
    };
    await waitFor((e) => e.type === 'session.created');
    const total = MAX_REALTIME_ITEMS + 20;
    for (let i = 0; i < total; i++) {
      ws.send(JSON.stringify({ type: 'conversation.item.create', item: { id: `item_${i}`, type: 'message', role: 'user', content: [{ type: 'input_text', text: `note ${i}` }] } }));
    }
    await waitFor((e) => (e.type === 'conversation.item.added' || e.type === 'conversation.item.created') && (e.item as { id: string }).id === `item_${total - 1}`);
    expect(events.filter((e) => e.type === 'error')).toEqual([]);

    let since = events.length;
    ws.send(JSON.stringify({ type: 'conversation.item.retrieve', item_id: 'item_0' }));
    const old = await waitFor((e) => e.type === 'error' || e.type === 'conversation.item.retrieved', since);
    expect(old.type).toBe('error');
    expect((old.error as { code: string }).code).toBe('item_not_found');

    since = events.length;
    ws.send(JSON.stringify({ type: 'conversation.item.retrieve', item_id: `item_${total - MAX_REALTIME_ITEMS}` }));
    const kept = await waitFor((e) => e.type === 'error' || e.type === 'conversation.item.retrieved', since);
    expect(kept.type).toBe('conversation.item.retrieved');
    ws.close();
  });
});
