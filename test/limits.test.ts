import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({
    limits: { maxSessionsPerKey: 2, sessionsPerMinutePerKey: 600, maxSessionMs: 2500, idleTimeoutMs: 1500, maxMessagesPerSecond: 100 },
  });
});
afterAll(async () => server?.stop());

interface Client {
  socket: WebSocket;
  events: Record<string, unknown>[];
  closed: Promise<number>;
}

async function open(): Promise<Client> {
  const socket = new WebSocket(server.wsUrl, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
  const events: Record<string, unknown>[] = [];
  socket.on('message', (data, isBinary) => {
    if (!isBinary) events.push(JSON.parse(String(data)) as Record<string, unknown>);
  });
  const closed = new Promise<number>((resolve) => socket.on('close', (code) => resolve(code)));
  await new Promise<void>((resolve, reject) => {
    socket.on('open', () => resolve());
    socket.on('error', reject);
  });
  return { socket, events, closed };
}

async function until(predicate: () => boolean, ms = 5000): Promise<void> {
  const deadline = performance.now() + ms;
  while (!predicate() && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

/** Keeps a call alive with 20 ms of silence per tick, as a device does. */
function keepAlive(client: Client): NodeJS.Timeout {
  return setInterval(() => client.socket.readyState === WebSocket.OPEN && client.socket.send(Buffer.alloc(640)), 20);
}

describe('limits', () => {
  it('refuses a key its third concurrent call with session_limit, and admits again after one ends', async () => {
    const a = await open();
    const b = await open();
    await until(() => a.events.length > 0 && b.events.length > 0);
    const c = await open();
    await until(() => c.events.length > 0);
    expect(c.events[0]).toMatchObject({ type: 'error', code: 'session_limit' });
    expect(await c.closed).toBe(1008);
    a.socket.close();
    await a.closed;
    await new Promise((r) => setTimeout(r, 100));
    const d = await open();
    await until(() => d.events.length > 0);
    expect(d.events[0].type).toBe('session.started');
    b.socket.close();
    d.socket.close();
    await Promise.all([b.closed, d.closed]);
    await new Promise((r) => setTimeout(r, 100));
  });

  it('drops a message flood with rate_limited and keeps the socket open', async () => {
    const client = await open();
    for (let i = 0; i < 400; i++) client.socket.send(Buffer.alloc(64));
    await until(() => client.events.some((e) => e.code === 'rate_limited'));
    expect(client.events.filter((e) => e.code === 'rate_limited').length).toBeGreaterThanOrEqual(1);
    expect(client.events.filter((e) => e.code === 'rate_limited').length).toBeLessThan(5);
    await new Promise((r) => setTimeout(r, 1100));
    client.socket.send(JSON.stringify({ type: 'ping', id: 1 }));
    await until(() => client.events.some((e) => e.type === 'pong'));
    expect(client.events.some((e) => e.type === 'pong')).toBe(true);
    client.socket.close();
  });

  it('hangs up a call whose caller went silent at the network level (idle timeout)', async () => {
    const client = await open();
    const started = performance.now();
    await until(() => client.events.some((e) => e.type === 'call.action'), 6000);
    expect(client.events.find((e) => e.type === 'call.action')).toMatchObject({ action: 'hangup' });
    expect(await client.closed).toBe(1000);
    expect(performance.now() - started).toBeGreaterThan(1400);
  });

  it('ends a call at the maximum length with a spoken goodbye', async () => {
    const client = await open();
    let audioFrames = 0;
    client.socket.on('message', (_d, isBinary) => isBinary && audioFrames++);
    const timer = keepAlive(client);
    await until(() => client.events.some((e) => e.type === 'call.action'), 15_000);
    clearInterval(timer);
    const goodbye = client.events.find((e) => e.type === 'response.done');
    expect(String(goodbye?.text)).toMatch(/maximum length/);
    expect(audioFrames).toBeGreaterThan(50);
    expect(await client.closed).toBe(1000);
  });
});
