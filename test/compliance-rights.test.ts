/**
 * People's rights and the audit trail: a person's calls found by customer id (from the session token) or caller
 * number, exported and erased by an admin key only; nothing of them left in the SQLite file afterwards; every
 * read, export and erasure in an append-only audit table; transcripts encrypted at rest with rotatable keys.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { hashApiKey } from '../src/auth/auth.js';
import { silentLogger } from '../src/core/logger.js';
import { UNREADABLE } from '../src/privacy/seal.js';
import { SqliteCallStore } from '../src/store/call-store.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

const ADMIN_KEY = 'admin-key-for-tests';
const KEY = randomBytes(32).toString('base64');
type Event = Record<string, unknown>;

/** One text call placed with a session token minted for `customerId`; returns its id once the agent answered. */
async function textCall(server: TestServer, customerId: string, text: string): Promise<string> {
  const minted = (await (
    await fetch(`${server.httpUrl}/v1/tokens`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
      body: JSON.stringify({ customer_id: customerId }),
    })
  ).json()) as { token: string };
  const ws = new WebSocket(`${server.wsUrl}?token=${minted.token}`);
  const events: Event[] = [];
  ws.on('message', (data, isBinary) => {
    if (!isBinary) events.push(JSON.parse(String(data)) as Event);
  });
  const waitFor = async (type: string): Promise<Event> => {
    const deadline = performance.now() + 20_000;
    for (;;) {
      const found = events.find((e) => e.type === type);
      if (found) return found;
      if (performance.now() > deadline) throw new Error(`no ${type}: ${JSON.stringify(events)}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const callId = String((await waitFor('session.started')).callId);
  ws.send(JSON.stringify({ type: 'input.text', text }));
  await waitFor('response.done');
  ws.close();
  await new Promise((r) => setTimeout(r, 150));
  return callId;
}

function get(server: TestServer, url: string, key: string, method = 'GET'): Promise<Response> {
  return fetch(`${server.httpUrl}${url}`, { method, headers: { authorization: `Bearer ${key}` } });
}

describe('access, export and erasure of one person\'s calls, with an audit trail', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({ auth: { adminKeyHashes: [hashApiKey(ADMIN_KEY)] }, store: { encryptionKeys: [KEY] }, sip: { enabled: false } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('finds, exports and erases by customer id; the audit table grows with each read; only admin keys reach it', async () => {
    const mine = await textCall(server, 'cust-42', 'I would like a table for two, my name is Zebulon Quaxley');
    const other = await textCall(server, 'cust-7', 'I would like a table for four');

    // Admin endpoints: no key 401, an ordinary API key 403; admin keys place no calls and read no records by id.
    expect((await fetch(`${server.httpUrl}/v1/admin/calls?customer_id=cust-42`)).status).toBe(401);
    expect((await get(server, '/v1/admin/calls?customer_id=cust-42', TEST_API_KEY)).status).toBe(403);
    expect((await get(server, '/v1/admin/audit', TEST_API_KEY)).status).toBe(403);
    expect((await get(server, `/v1/calls/${mine}`, ADMIN_KEY)).status).toBe(401);

    const found = (await (await get(server, '/v1/admin/calls?customer_id=cust-42', ADMIN_KEY)).json()) as { calls: { id: string }[] };
    expect(found.calls.map((c) => c.id)).toEqual([mine]);

    // Each read by the owning key is one more audit row, naming the key, the action and the call.
    const audit = async (): Promise<{ seq: number; actor: string; action: string; call_id: string | null; detail: string | null }[]> =>
      ((await (await get(server, '/v1/admin/audit', ADMIN_KEY)).json()) as { entries: { seq: number; actor: string; action: string; call_id: string | null; detail: string | null }[] }).entries;
    const before = (await audit()).length;
    const record = (await (await get(server, `/v1/calls/${mine}`, TEST_API_KEY)).json()) as { customer_id: string; transcript: { text: string }[] };
    expect(record.customer_id).toBe('cust-42');
    expect(record.transcript[0].text).toContain('Zebulon Quaxley');
    expect((await audit()).length).toBe(before + 1);
    await get(server, `/v1/calls/${mine}`, TEST_API_KEY);
    const entries = await audit();
    expect(entries.length).toBe(before + 2);
    expect(entries[entries.length - 1]).toMatchObject({ actor: hashApiKey(TEST_API_KEY).slice(0, 8), action: 'read_call', call_id: mine });
    expect(entries.find((e) => e.action === 'search')).toMatchObject({ actor: `admin:${hashApiKey(ADMIN_KEY).slice(0, 8)}`, detail: '{"by":"customer_id","found":1}' });

    // At rest the words are sealed: the file never holds them in clear.
    const dbPath = server.config.store.path;
    const raw = new Database(dbPath, { readonly: true });
    const stored = raw.prepare('SELECT text FROM utterances WHERE call_id = ?').all(mine) as { text: string }[];
    const subject = raw.prepare('SELECT customer_id, customer_lookup FROM calls WHERE id = ?').get(mine) as { customer_id: string; customer_lookup: string };
    raw.close();
    expect(stored.length).toBeGreaterThan(0);
    for (const row of stored) expect(row.text).toMatch(/^enc1:[0-9a-f]{8}:/);
    expect(subject.customer_id).toMatch(/^enc1:/);
    expect(subject.customer_lookup).toMatch(/^[0-9a-f]{64}$/);

    // Export: the whole record, readable, and audited per call.
    const exported = (await (await get(server, '/v1/admin/export?customer_id=cust-42', ADMIN_KEY)).json()) as { calls: { id: string; transcript: { text: string }[] }[] };
    expect(exported.calls.map((c) => c.id)).toEqual([mine]);
    expect(exported.calls[0].transcript.some((t) => t.text.includes('Zebulon Quaxley'))).toBe(true);

    // Erasure, then nothing: not by search, not by id, not in any table of the file.
    const erased = (await (await get(server, '/v1/admin/calls?customer_id=cust-42', ADMIN_KEY, 'DELETE')).json()) as { erased: string[] };
    expect(erased.erased).toEqual([mine]);
    expect(((await (await get(server, '/v1/admin/calls?customer_id=cust-42', ADMIN_KEY)).json()) as { calls: unknown[] }).calls).toEqual([]);
    expect((await get(server, `/v1/calls/${mine}`, TEST_API_KEY)).status).toBe(404);
    const after = new Database(dbPath, { readonly: true });
    for (const table of ['calls', 'utterances', 'turn_metrics', 'recordings']) {
      const column = table === 'calls' ? 'id' : 'call_id';
      expect(after.prepare(`SELECT COUNT(*) AS n FROM ${table} WHERE ${column} = ?`).get(mine)).toEqual({ n: 0 });
    }
    expect(after.prepare('SELECT COUNT(*) AS n FROM calls WHERE customer_lookup = ?').get(subject.customer_lookup)).toEqual({ n: 0 });
    // The other person's call is untouched; the audit trail names the erasure but not the customer id.
    expect(after.prepare('SELECT COUNT(*) AS n FROM calls WHERE id = ?').get(other)).toEqual({ n: 1 });
    const trail = after.prepare('SELECT actor, action, call_id, detail FROM audit_log').all() as { action: string; call_id: string; detail: string }[];
    after.close();
    expect(trail.filter((e) => e.action === 'export' && e.call_id === mine)).toHaveLength(1);
    expect(trail.filter((e) => e.action === 'erase' && e.call_id === mine)).toHaveLength(1);
    expect(JSON.stringify(trail)).not.toContain('cust-42');
    const bytes = Buffer.concat([readFileSync(dbPath), existsSync(`${dbPath}-wal`) ? readFileSync(`${dbPath}-wal`) : Buffer.alloc(0)]);
    expect(bytes.includes(Buffer.from(subject.customer_lookup))).toBe(false);
  });
});

describe('the SQLite file after erasure, and the audit table', () => {
  it('holds no byte of an erased caller\'s words or number (plain text store, file read directly)', async () => {
    const file = path.join(tmpdir(), `voice-agent-erase-${randomUUID()}.db`);
    const store = new SqliteCallStore({ path: file, retentionDays: 0 }, silentLogger(), {});
    const recording = `${file}.ogg`;
    writeFileSync(recording, 'OggS fake bytes of a recording file');
    await store.callStarted('call-a', 'sip', '*', 'sip-call-id-a', { caller: '+44 20 7946 0958' });
    store.utterance('call-a', { role: 'caller', turn: 1, text: 'my name is Ottoline Pembersley', language: 'en' });
    store.turnMetrics('call-a', { turn: 1, stages: { serverV2vMs: 500 }, preemptive: false, discardedPreemptive: 0 });
    store.recordingSaved('call-a', recording, 'ogg/opus', 35);
    await store.callStarted('call-b', 'sip', '*', 'sip-call-id-b', { caller: '+33 1 23 45 67 89' });
    store.utterance('call-b', { role: 'caller', turn: 1, text: 'bonjour', language: 'fr' });
    // The same number written differently finds the call.
    expect((await store.findCalls({ caller: '+442079460958' })).map((c) => c.id)).toEqual(['call-a']);
    expect((await store.erase({ caller: '+44 (20) 7946-0958' }))).toEqual(['call-a']);
    expect((await store.findCalls({ caller: '+442079460958' }))).toEqual([]);
    expect(existsSync(recording)).toBe(false);
    await store.close();
    const bytes = Buffer.concat([readFileSync(file), existsSync(`${file}-wal`) ? readFileSync(`${file}-wal`) : Buffer.alloc(0)]);
    expect(bytes.includes(Buffer.from('Ottoline'))).toBe(false);
    expect(bytes.includes(Buffer.from('7946'))).toBe(false);
    expect(bytes.includes(Buffer.from('sip-call-id-a'))).toBe(false);
    expect(bytes.includes(Buffer.from('bonjour'))).toBe(true);
  });

  it('refuses UPDATE and DELETE on the audit table, even straight on the file', async () => {
    const file = path.join(tmpdir(), `voice-agent-audit-${randomUUID()}.db`);
    const store = new SqliteCallStore({ path: file, retentionDays: 0 }, silentLogger(), {});
    await store.audit('abcd1234', 'read_call', 'call-x');
    await store.audit('abcd1234', 'read_recording', 'call-x');
    expect((await store.auditLog()).map((e) => e.action)).toEqual(['read_call', 'read_recording']);
    await store.close();
    const db = new Database(file);
    expect(() => db.prepare("UPDATE audit_log SET actor = 'someone-else'").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM audit_log').run()).toThrow(/append-only/);
    expect(db.prepare('SELECT COUNT(*) AS n FROM audit_log').get()).toEqual({ n: 2 });
    db.close();
  });

  it('rotates keys: new rows under the first key, old rows read while their key is listed, unreadable once it is not', async () => {
    const file = path.join(tmpdir(), `voice-agent-keys-${randomUUID()}.db`);
    const oldKey = randomBytes(32).toString('base64');
    const newKey = randomBytes(32).toString('base64');
    const first = new SqliteCallStore({ path: file, retentionDays: 0, encryptionKeys: [oldKey] }, silentLogger(), {});
    await first.callStarted('c1', 'ws', 'k1');
    first.utterance('c1', { role: 'caller', turn: 1, text: 'sealed under the old key', language: 'en' });
    await first.close();
    const rotated = new SqliteCallStore({ path: file, retentionDays: 0, encryptionKeys: [newKey, oldKey] }, silentLogger(), {});
    await rotated.callStarted('c2', 'ws', 'k1');
    rotated.utterance('c2', { role: 'caller', turn: 1, text: 'sealed under the new key', language: 'en' });
    expect((await rotated.get('c1', 'k1'))?.transcript[0].text).toBe('sealed under the old key');
    expect((await rotated.get('c2', 'k1'))?.transcript[0].text).toBe('sealed under the new key');
    await rotated.close();
    const dropped = new SqliteCallStore({ path: file, retentionDays: 0, encryptionKeys: [newKey] }, silentLogger(), {});
    expect((await dropped.get('c1', 'k1'))?.transcript[0].text).toBe(UNREADABLE);
    expect((await dropped.get('c2', 'k1'))?.transcript[0].text).toBe('sealed under the new key');
    await dropped.close();
  });
});
