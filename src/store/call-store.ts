import { mkdirSync } from 'node:fs';
import path from 'node:path';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { TurnMetrics } from '../session/events.js';

/**
 * The durable call record: every call, every finished caller/agent utterance and every turn's metrics are
 * written to SQLite as they happen (WAL, synchronous=FULL: a row acknowledged is a row that survives a
 * crash or kill -9). Reads for `GET /v1/calls/:id` come from the same file.
 */
export interface StoreConfig {
  /** SQLite file; ':memory:' keeps nothing (tests of other things). */
  path: string;
  /** Calls older than this are deleted at start-up and daily; 0 keeps them forever. */
  retentionDays: number;
  /**
   * The API key id (`keyId` in logs: the first 8 hex digits of the key's SHA-256) that may read records of calls
   * placed without a key: SIP trunks, Twilio streams admitted by signature. Unset: any API key may (one tenant).
   */
  networkCallsOwner?: string;
}

/** Owner of a record every API key may read (calls from phone networks when no owner is configured). */
export const ANY_KEY = '*';

export interface CallRecord {
  id: string;
  transport: string;
  /** The carrier's or provider's own id for the call (Twilio CallSid, SIP Call-ID), never our record id. */
  network_id: string | null;
  started_at: string;
  ended_at: string | null;
  end_reason: string | null;
  transcript: { role: 'caller' | 'agent'; turn: number; text: string; language: string; status: string | null; at: string }[];
  turns: (TurnMetrics & { at: string })[];
}

export class CallStore {
  private readonly db: Database.Database;
  private readonly insertCall: Database.Statement;
  private readonly endCall: Database.Statement;
  private readonly insertUtterance: Database.Statement;
  private readonly insertMetrics: Database.Statement;
  private retentionTimer: NodeJS.Timeout | null = null;

  constructor(
    private readonly config: StoreConfig,
    private readonly logger: Logger,
  ) {
    if (config.path !== ':memory:') mkdirSync(path.dirname(path.resolve(config.path)), { recursive: true });
    this.db = new Database(config.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS calls (
        id TEXT PRIMARY KEY, transport TEXT NOT NULL, started_at TEXT NOT NULL,
        ended_at TEXT, end_reason TEXT);
      CREATE TABLE IF NOT EXISTS utterances (
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE, seq INTEGER PRIMARY KEY AUTOINCREMENT,
        role TEXT NOT NULL, turn INTEGER NOT NULL, text TEXT NOT NULL, language TEXT NOT NULL, status TEXT, at TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS utterances_call ON utterances(call_id, seq);
      CREATE TABLE IF NOT EXISTS turn_metrics (
        call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE, turn INTEGER NOT NULL, metrics TEXT NOT NULL, at TEXT NOT NULL);
      CREATE INDEX IF NOT EXISTS turn_metrics_call ON turn_metrics(call_id, turn);
    `);
    // Records belong to the API key that placed the call; files from before owners existed gain the columns
    // empty, and their calls are then readable by no key (never by every key).
    const columns = new Set((this.db.prepare('PRAGMA table_info(calls)').all() as { name: string }[]).map((c) => c.name));
    if (!columns.has('owner')) this.db.exec('ALTER TABLE calls ADD COLUMN owner TEXT');
    if (!columns.has('network_id')) this.db.exec('ALTER TABLE calls ADD COLUMN network_id TEXT');
    this.db.pragma('foreign_keys = ON');
    // A plain INSERT: an id that exists already is an error, never a silent append to someone else's record.
    this.insertCall = this.db.prepare('INSERT INTO calls (id, transport, started_at, owner, network_id) VALUES (?, ?, ?, ?, ?)');
    this.endCall = this.db.prepare('UPDATE calls SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL');
    this.insertUtterance = this.db.prepare('INSERT INTO utterances (call_id, role, turn, text, language, status, at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.insertMetrics = this.db.prepare('INSERT INTO turn_metrics (call_id, turn, metrics, at) VALUES (?, ?, ?, ?)');
    // Calls a crash left open are closed as such, so they are not mistaken for live ones.
    const orphaned = this.db.prepare("UPDATE calls SET ended_at = ?, end_reason = 'process_ended' WHERE ended_at IS NULL").run(new Date().toISOString());
    if (orphaned.changes > 0) logger.warn({ calls: orphaned.changes }, 'calls left open by a previous process marked ended');
    this.applyRetention();
    if (config.retentionDays > 0) {
      this.retentionTimer = setInterval(() => this.applyRetention(), 24 * 3600 * 1000);
      this.retentionTimer.unref();
    }
  }

  /** Throws when `id` is already a record (ids are ours and fresh; a collision is refused, not merged). */
  callStarted(id: string, transport: string, owner: string, networkId?: string): void {
    this.insertCall.run(id, transport, new Date().toISOString(), owner, networkId ?? null);
  }

  /** Our id of the latest call the network knows as `networkId` (a Twilio CallSid, a SIP Call-ID), if any. */
  idForNetworkId(networkId: string): string | null {
    const row = this.db.prepare('SELECT id FROM calls WHERE network_id = ? ORDER BY started_at DESC LIMIT 1').get(networkId) as { id: string } | undefined;
    return row?.id ?? null;
  }

  exists(id: string): boolean {
    return this.db.prepare('SELECT 1 FROM calls WHERE id = ?').get(id) !== undefined;
  }

  callEnded(id: string, reason: string): void {
    this.endCall.run(new Date().toISOString(), reason, id);
  }

  utterance(id: string, entry: { role: 'caller' | 'agent'; turn: number; text: string; language: string; status?: string }): void {
    this.insertUtterance.run(id, entry.role, entry.turn, entry.text, entry.language, entry.status ?? null, new Date().toISOString());
  }

  turnMetrics(id: string, metrics: TurnMetrics): void {
    this.insertMetrics.run(id, metrics.turn, JSON.stringify(metrics), new Date().toISOString());
  }

  /** The record of call `id` if it belongs to `owner` (an API key id); another key's call reads as absent. */
  get(id: string, owner: string): CallRecord | null {
    const call = this.db.prepare('SELECT id, transport, network_id, started_at, ended_at, end_reason FROM calls WHERE id = ? AND (owner = ? OR owner = ?)').get(id, owner, ANY_KEY) as
      | Omit<CallRecord, 'transcript' | 'turns'>
      | undefined;
    if (!call) return null;
    const transcript = this.db.prepare('SELECT role, turn, text, language, status, at FROM utterances WHERE call_id = ? ORDER BY seq').all(id) as CallRecord['transcript'];
    const turns = (this.db.prepare('SELECT metrics, at FROM turn_metrics WHERE call_id = ? ORDER BY turn').all(id) as { metrics: string; at: string }[]).map(
      (row) => ({ ...(JSON.parse(row.metrics) as TurnMetrics), at: row.at }),
    );
    return { ...call, transcript, turns };
  }

  private applyRetention(): void {
    if (this.config.retentionDays <= 0) return;
    const cutoff = new Date(Date.now() - this.config.retentionDays * 24 * 3600 * 1000).toISOString();
    const removed = this.db.prepare('DELETE FROM calls WHERE started_at < ?').run(cutoff);
    if (removed.changes > 0) this.logger.info({ calls: removed.changes, retentionDays: this.config.retentionDays }, 'old calls deleted');
  }

  close(): void {
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    this.db.close();
  }
}
