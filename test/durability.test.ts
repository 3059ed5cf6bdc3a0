import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { createServer } from 'node:net';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { hashApiKey } from '../src/auth/auth.js';
import { speak } from './helpers/speech.js';
import { TestDevice } from './helpers/device.js';

/**
 * The real service process (`npm start`'s entry point) with its SQLite call record: SIGTERM with a call in
 * flight drains it with a spoken notice, and kill -9 loses nothing already said.
 */
const KEY = 'durability-test-key';
let dir: string;
let askTime: Int16Array;

async function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const server = createServer();
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}

interface Service {
  child: ChildProcess;
  port: number;
  exited: Promise<number | null>;
  output: () => string;
}

async function startService(dbPath: string, drainMs: number): Promise<Service> {
  const port = await freePort();
  const configPath = path.join(dir, `config-${port}.json`);
  await writeFile(configPath, JSON.stringify({ host: '127.0.0.1', store: { path: dbPath }, drain: { deadlineMs: drainMs }, auth: { apiKeyHashes: [hashApiKey(KEY)] } }));
  const child = spawn(process.execPath, ['--import', 'tsx', 'src/main.ts'], {
    env: { ...process.env, PORT: String(port), VOICE_AGENT_CONFIG: configPath, LOG_LEVEL: 'info' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let log = '';
  child.stdout!.on('data', (d: Buffer) => (log += d.toString()));
  child.stderr!.on('data', (d: Buffer) => (log += d.toString()));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  for (let i = 0; i < 300; i++) {
    const ok = await fetch(`http://127.0.0.1:${port}/healthz`).then((r) => r.ok, () => false);
    if (ok) return { child, port, exited, output: () => log };
    await new Promise((r) => setTimeout(r, 100));
  }
  child.kill('SIGKILL');
  throw new Error(`service did not become ready:\n${log}`);
}

/** A device calls `service` and takes one turn (asks the time and hears the answer). */
async function callWithOneTurn(service: Service): Promise<{ device: TestDevice; callId: string }> {
  const device = new TestDevice(`ws://127.0.0.1:${service.port}/v1/ws`, KEY);
  await device.connect();
  const callId = String(device.eventsOf('session.started')[0].callId);
  await device.stream(askTime);
  await device.silenceUntil((e) => e.type === 'response.done' && e.status === 'completed', 20_000);
  return { device, callId };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'durability-'));
  askTime = await speak('What time is it?');
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('durability and graceful drain', () => {
  it('drains on SIGTERM: refuses new calls, ends the call in flight with a spoken notice, keeps every transcript', async () => {
    const db = path.join(dir, 'drain.db');
    const service = await startService(db, 1500);
    const { device, callId } = await callWithOneTurn(service);
    const audioBefore = device.audio.length;

    service.child.kill('SIGTERM');
    // Load balancers see "draining" and new callers are turned away.
    let health: Response | null = null;
    for (let i = 0; i < 50; i++) {
      health = await fetch(`http://127.0.0.1:${service.port}/healthz`);
      if (health.status === 503) break;
      await new Promise((r) => setTimeout(r, 20));
    }
    expect(health?.status).toBe(503);
    expect(((await health!.json()) as { status: string }).status).toBe('draining');
    // Refused before the upgrade, with 503 and Retry-After: a proxy in front can retry on another node.
    const refused = new WebSocket(`ws://127.0.0.1:${service.port}/v1/ws`, { headers: { authorization: `Bearer ${KEY}` } });
    const refusal = await new Promise<{ status: number; retryAfter: string | undefined }>((resolve) =>
      refused.on('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined })),
    );
    refused.on("error", () => undefined);
    refused.terminate();
    expect(refusal).toEqual({ status: 503, retryAfter: '5' });

    // The call in flight hears the notice, then the agent hangs up.
    await device.silenceUntil((e) => e.type === 'call.action' && e.action === 'hangup', 20_000);
    const notice = device.eventsOf('response.done').at(-1);
    expect(String(notice?.text)).toMatch(/restarting/);
    expect(device.audio.slice(audioBefore).filter((a) => a.dbfs > -40).length).toBeGreaterThan(20);
    expect(await service.exited).toBe(0);

    const rows = new Database(db, { readonly: true });
    const utterances = rows.prepare('SELECT role, text, status FROM utterances WHERE call_id = ? ORDER BY seq').all(callId) as { role: string; text: string; status: string | null }[];
    const call = rows.prepare('SELECT ended_at, end_reason FROM calls WHERE id = ?').get(callId) as { ended_at: string | null; end_reason: string };
    rows.close();
    expect(utterances.map((u) => u.role)).toEqual(['caller', 'agent', 'agent']);
    expect(utterances[0].text).toContain('time');
    expect(utterances[2].text).toMatch(/restarting/);
    expect(call.ended_at).not.toBeNull();
  });

  it('keeps what was written when the process is killed mid-call, and serves it after a restart', async () => {
    const db = path.join(dir, 'kill.db');
    const first = await startService(db, 1000);
    const { device, callId } = await callWithOneTurn(first);
    first.child.kill('SIGKILL');
    await first.exited;
    await device.close();

    const second = await startService(db, 1000);
    try {
      const unauthorized = await fetch(`http://127.0.0.1:${second.port}/v1/calls/${callId}`);
      expect(unauthorized.status).toBe(401);
      const response = await fetch(`http://127.0.0.1:${second.port}/v1/calls/${callId}`, { headers: { authorization: `Bearer ${KEY}` } });
      expect(response.status).toBe(200);
      const record = (await response.json()) as { transcript: { role: string; text: string }[]; turns: { stages: Record<string, number> }[]; end_reason: string };
      expect(record.transcript.map((t) => t.role)).toEqual(['caller', 'agent']);
      expect(record.transcript[0].text).toContain('time');
      expect(record.turns[0].stages.serverV2vMs).toBeTypeOf('number');
      expect(record.end_reason).toBe('process_ended');
      expect((await fetch(`http://127.0.0.1:${second.port}/v1/calls/nope`, { headers: { authorization: `Bearer ${KEY}` } })).status).toBe(404);
    } finally {
      second.child.kill('SIGKILL');
      await second.exited;
    }
  });
});
