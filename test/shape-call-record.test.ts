import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { SqliteCallStore } from '../src/store/call-store.js';
import type { TurnMetrics } from '../src/session/events.js';

/**
 * The call record off the audio path: a caller's words and a turn's metrics are queued in memory, not written
 * (and fsynced) on the event loop between the caller's turn and the agent's reply; the queue reaches disk in
 * one transaction within the flush interval, at once when a reply has played out, at call end and at close.
 */
let dir: string;
const logger = pino({ level: 'silent' });
const metrics = (turn: number): TurnMetrics => ({ turn, stages: { serverV2vMs: 300 }, preemptive: false, discardedPreemptive: 0 });

beforeAll(async () => {
  dir = await mkdtemp(path.join(tmpdir(), 'shape-call-record-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

/** What another process would find in the file right now. */
function onDisk(file: string, callId: string): { utterances: string[]; turns: number } {
  const db = new Database(file, { readonly: true });
  try {
    const utterances = (db.prepare('SELECT role FROM utterances WHERE call_id = ? ORDER BY seq').all(callId) as { role: string }[]).map((r) => r.role);
    const turns = (db.prepare('SELECT COUNT(*) AS n FROM turn_metrics WHERE call_id = ?').get(callId) as { n: number }).n;
    return { utterances, turns };
  } finally {
    db.close();
  }
}

describe('call record writes are queued off the audio path', () => {
  it('queues caller lines and metrics, writes them within the interval, and at once when a reply has played', async () => {
    const file = path.join(dir, 'queue.db');
    const store = new SqliteCallStore({ path: file, retentionDays: 0, flushIntervalMs: 60 }, logger);
    await store.callStarted('c1', 'ws', 'owner');
    expect(onDisk(file, 'c1').utterances).toEqual([]);

    store.utterance('c1', { role: 'caller', turn: 1, text: 'what time is it', language: 'en' });
    store.turnMetrics('c1', metrics(1));
    // Nothing touched the disk on the caller's path.
    expect(store.pending).toBe(2);
    expect(onDisk(file, 'c1')).toEqual({ utterances: [], turns: 0 });

    await new Promise((r) => setTimeout(r, 200));
    expect(store.pending).toBe(0);
    expect(onDisk(file, 'c1')).toEqual({ utterances: ['caller'], turns: 1 });

    // A reply that played out is on disk before anyone hears it ended, with what was queued before it.
    store.utterance('c1', { role: 'caller', turn: 2, text: 'and the date', language: 'en' });
    store.utterance('c1', { role: 'agent', turn: 2, text: 'It is Sunday.', language: 'en', status: 'completed' }, true);
    expect(onDisk(file, 'c1').utterances).toEqual(['caller', 'caller', 'agent']);

    // Call end and close flush too.
    store.utterance('c1', { role: 'agent', turn: 3, text: 'Goodb', language: 'en', status: 'interrupted' });
    store.callEnded('c1', 'hangup');
    expect(onDisk(file, 'c1').utterances).toHaveLength(4);
    await store.callStarted('c2', 'ws', 'owner');
    store.utterance('c2', { role: 'caller', turn: 1, text: 'hello', language: 'en' });
    await store.close();
    expect(onDisk(file, 'c2').utterances).toEqual(['caller']);
  });

  it('a call that ends after the store closed (a socket closing after shutdown) is logged, not a crash', async () => {
    const file = path.join(dir, 'closed.db');
    const store = new SqliteCallStore({ path: file, retentionDays: 0, flushIntervalMs: 1000 }, logger);
    await store.callStarted('late-call', 'ws', 'key-1');
    await store.close();
    expect(() => store.callEnded('late-call', 'caller_hangup')).not.toThrow();
    await expect(store.callStarted('new-call', 'ws', 'key-1')).rejects.toThrow(/closed/);
  });

  it('reads and erasures see queued lines; a row that cannot be written does not cost the others', async () => {
    const file = path.join(dir, 'reads.db');
    const store = new SqliteCallStore({ path: file, retentionDays: 0, flushIntervalMs: 1000 }, logger);
    try {
      await store.callStarted('c1', 'sip', 'owner', undefined, { caller: '+15550100' });
      store.utterance('c1', { role: 'caller', turn: 1, text: 'hi', language: 'en' });
      expect((await store.get('c1', 'owner'))?.transcript.map((t) => t.text)).toEqual(['hi']);

      // A line for a call that does not exist (erased meanwhile) fails alone.
      store.utterance('gone', { role: 'caller', turn: 1, text: 'orphan', language: 'en' });
      store.utterance('c1', { role: 'caller', turn: 2, text: 'still here', language: 'en' });
      expect((await store.get('c1', 'owner'))?.transcript.map((t) => t.text)).toEqual(['hi', 'still here']);

      store.utterance('c1', { role: 'caller', turn: 3, text: 'my card is', language: 'en' });
      expect((await store.erase({ caller: '+15550100' }))).toEqual(['c1']);
      expect(store.pending).toBe(0);
      expect(onDisk(file, 'c1').utterances).toEqual([]);
    } finally {
      await store.close();
    }
  });

  it('costs the event loop far less per turn than a synchronous FULL write', async () => {
    const file = path.join(dir, 'cost.db');
    const store = new SqliteCallStore({ path: file, retentionDays: 0, flushIntervalMs: 1000 }, logger);
    try {
      await store.callStarted('c1', 'ws', 'owner');
      const turns = 100;
      let start = performance.now();
      for (let turn = 1; turn <= turns; turn++) {
        store.utterance('c1', { role: 'caller', turn, text: 'what time is it', language: 'en' });
        store.turnMetrics('c1', metrics(turn));
      }
      const queuedMs = performance.now() - start;
      start = performance.now();
      store.flush();
      const batchMs = performance.now() - start;
      // The old path: one committed (fsynced) transaction per write.
      const direct = new Database(file);
      direct.pragma('synchronous = FULL');
      const insert = direct.prepare('INSERT INTO utterances (call_id, role, turn, text, language, status, at) VALUES (?, ?, ?, ?, ?, ?, ?)');
      start = performance.now();
      for (let turn = 1; turn <= turns; turn++) insert.run('c1', 'caller', turn, 'x', 'en', null, new Date().toISOString());
      const syncMs = performance.now() - start;
      direct.close();
      console.log(`call record, ${turns} turns: queued ${queuedMs.toFixed(2)} ms on the audio path, one batch ${batchMs.toFixed(2)} ms; one FULL commit per write ${syncMs.toFixed(2)} ms`);
      expect(onDisk(file, 'c1').turns).toBe(turns);
      expect(queuedMs).toBeLessThan(syncMs);
    } finally {
      await store.close();
    }
  });
});
