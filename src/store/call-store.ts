import path from 'node:path';
import { createReadStream, mkdirSync, rmSync } from 'node:fs';
import type { Readable } from 'node:stream';
import Database from 'better-sqlite3';
import type { Logger } from 'pino';
import type { TurnMetrics } from '../session/events.js';
import { openedStream, Sealer } from '../privacy/seal.js';

/**
 * The durable call record in SQLite (WAL, synchronous=FULL). Calls are written as they start and end; caller
 * utterances and turn metrics, which happen on the audio path (before the reply starts, at its first frame),
 * are queued in memory and written in one transaction every `flushIntervalMs`, so no disk flush sits between
 * the caller's words and the agent's answer. A finished agent reply (its audio has played) flushes the queue
 * at once, before its end is announced; so do the call's end, every read, and close (SIGTERM). What kill -9 can
 * lose is therefore only the caller's last utterance and turn metrics queued in the last interval.
 * Reads for `GET /v1/calls/:id` come from the same file.
 */
/** Declared in ./options.ts (the `store` section). */
export type { StoreConfig } from './options.js';
import type { StoreConfig } from './options.js';

/** Default for `store.flushIntervalMs`: short against kill -9, long enough to batch a turn's writes. */
export const DEFAULT_FLUSH_INTERVAL_MS = 50;

/**
 * What the service and the routes need of a call store; SQLite (below, the embedded default) and PostgreSQL
 * (src/store/postgres.ts, shared by a cluster's nodes) both implement it. Writes during a call return nothing
 * and are queued (never a disk or network round trip on the audio path); reads and the rights operations are
 * async and see this node's queued writes (each flushes first).
 */
export interface CallStore {
  /** Resolves once the store can be used (PostgreSQL: connected, schema migrated); rejects when it cannot. */
  open(): Promise<void>;
  /** Rejects when `id` is already a record (ids are ours and fresh; a collision is refused, not merged). */
  callStarted(id: string, transport: string, owner: string, networkId?: string, subject?: CallSubject, agent?: AgentOfCall): Promise<void>;
  callEnded(id: string, reason: string): void;
  /** The agent handed the call to a person: where (queue, target) and why; no personal data. */
  callTransferred(id: string, transfer: { queue: string; reason: string | null; target: string | null }): void;
  utterance(id: string, entry: UtteranceEntry, flushNow?: boolean): void;
  turnMetrics(id: string, metrics: TurnMetrics): void;
  /**
   * A finished recording file. SQLite links the file; PostgreSQL also copies its bytes (sealed as on disk) into
   * the database after the call, off the audio path, so every node serves it (src/store/postgres.ts).
   */
  recordingSaved(id: string, file: string, format: string, bytes: number): void;
  /** Deletes the recordings (not the call records) made more than `retentionDays` ago; their number. */
  expireRecordings(retentionDays: number): Promise<number>;
  /** Writes queued and not yet stored. */
  readonly pending: number;
  get(id: string, owner: string): Promise<CallRecord | null>;
  idForNetworkId(networkId: string): Promise<string | null>;
  findCalls(query: SubjectQuery): Promise<CallSummary[]>;
  exportCalls(query: SubjectQuery): Promise<ExportedCall[]>;
  erase(query: SubjectQuery): Promise<string[]>;
  audit(actor: string, action: AuditEntry['action'], callId: string | null, detail?: string): Promise<void>;
  auditLog(afterSeq?: number, limit?: number): Promise<AuditEntry[]>;
  recording(id: string, owner: string): Promise<{ path: string; format: string; bytes: number } | null>;
  recordingSealer(id: string): ReturnType<Sealer['fileSealer']>;
  /**
   * Call `id`'s recording as plain Ogg, streamed (decrypted record by record when sealed at rest). Rejects before
   * anything is streamed when it cannot be read: file missing, sealed with a key no longer configured.
   */
  openRecording(id: string, file: string): Promise<Readable>;
  close(): Promise<void>;
}

export interface UtteranceEntry {
  role: 'caller' | 'agent';
  turn: number;
  text: string;
  language: string;
  status?: string;
}

export type ExportedCall = CallRecord & { recording: { format: string; bytes: number; created_at: string } | null };

/** The transcript and subject sealer of a store: keys from the environment first, then configuration. */
export function storeSealer(config: StoreConfig, env: NodeJS.ProcessEnv): Sealer {
  const envKeys = (env.VOICE_AGENT_STORE_KEYS ?? '').split(',').map((k) => k.trim()).filter(Boolean);
  return new Sealer([...envKeys, ...(config.encryptionKeys ?? [])]);
}

/** A recording file read as it is streamed (64 KiB at a time), opened with the store's keys. */
export function openRecordingFile(sealer: Sealer, id: string, file: string): Promise<Readable> {
  return openedStream(sealer.fileOpener(`recording:${id}`), createReadStream(file) as AsyncIterable<Buffer>);
}

/** A `calls` row as stored: the transfer as JSON text. */
export type CallRow = Omit<CallRecord, 'transcript' | 'turns' | 'transfer'> & { transfer: string | null };

/** The columns of `calls` a record shows, in select-list order. */
export const CALL_COLUMNS = 'id, transport, network_id, started_at, ended_at, end_reason, caller, customer_id, transfer, agent, agent_version';

/** Which agent (and version: a short hash of its file) answered a call. */
export interface AgentOfCall {
  name: string;
  version: string;
}

/** A call record from its stored rows: subjects and transcript lines opened (decrypted when sealed). */
export function openRecord(
  sealer: Sealer,
  row: CallRow,
  lines: CallRecord['transcript'],
  metrics: { metrics: string; at: string }[],
): CallRecord {
  const id = row.id;
  return {
    ...row,
    transfer: row.transfer === null ? null : (JSON.parse(row.transfer) as CallRecord['transfer']),
    caller: row.caller === null ? null : sealer.open(row.caller, id),
    customer_id: row.customer_id === null ? null : sealer.open(row.customer_id, id),
    transcript: lines.map((line) => ({ ...line, text: sealer.open(line.text, id) })),
    turns: metrics.map((m) => ({ ...(JSON.parse(m.metrics) as TurnMetrics), at: m.at })),
  };
}

/** The stored columns of a new call: subjects sealed, with their keyed lookup hashes. */
export function subjectColumns(sealer: Sealer, id: string, subject: CallSubject): [string | null, string | null, string | null, string | null] {
  const { caller, customerId } = subject;
  return [
    caller ? sealer.seal(caller, id) : null,
    customerId ? sealer.seal(customerId, id) : null,
    caller ? sealer.lookups('caller', caller)[0] : null,
    customerId ? sealer.lookups('customer', customerId)[0] : null,
  ];
}

/** The lookup column and hashes (every configured key's) of a subject query. */
export function subjectLookups(sealer: Sealer, query: SubjectQuery): ['caller_lookup' | 'customer_lookup', string[]] {
  return 'caller' in query ? ['caller_lookup', sealer.lookups('caller', query.caller)] : ['customer_lookup', sealer.lookups('customer', query.customerId)];
}

type QueuedWrite =
  | { kind: 'utterance'; args: [string, string, number, string, string, string | null, string] }
  | { kind: 'metrics'; args: [string, number, string, string] };

/** Who a call was with, when the transport or the session token says: for people's access and erasure requests. */
export interface CallSubject {
  /** The caller's number (SIP From user, a telephony provider's `from`). */
  caller?: string;
  /** The operator's own customer id, given when the session token was minted. */
  customerId?: string;
}

export type SubjectQuery = { caller: string } | { customerId: string };

export interface CallSummary {
  id: string;
  transport: string;
  started_at: string;
  ended_at: string | null;
  owner: string | null;
}

export interface AuditEntry {
  seq: number;
  at: string;
  /** Key id of who did it ('system' for retention). */
  actor: string;
  action: 'read_call' | 'read_recording' | 'search' | 'export' | 'erase' | 'retention';
  call_id: string | null;
  detail: string | null;
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
  caller: string | null;
  customer_id: string | null;
  /** Set when the agent handed the caller to a person. */
  transfer: { queue: string; reason: string | null; target: string | null; at: string } | null;
  /** The agent that answered the call and its version (short content hash of its file), when recorded. */
  agent: string | null;
  agent_version: string | null;
  transcript: { role: 'caller' | 'agent'; turn: number; text: string; language: string; status: string | null; at: string }[];
  turns: (TurnMetrics & { at: string })[];
}

export class SqliteCallStore implements CallStore {
  private readonly db: Database.Database;
  private readonly insertCall: Database.Statement;
  private readonly endCall: Database.Statement;
  private readonly insertUtterance: Database.Statement;
  private readonly insertMetrics: Database.Statement;
  private retentionTimer: NodeJS.Timeout | null = null;
  private readonly sealer: Sealer;
  /** Utterances and metrics not yet on disk, oldest first. */
  private readonly queue: QueuedWrite[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  private readonly flushIntervalMs: number;
  private readonly writeBatch: (batch: QueuedWrite[]) => void;
  private closed = false;

  constructor(
    private readonly config: StoreConfig,
    private readonly logger: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.sealer = storeSealer(config, env);
    if (config.path !== ':memory:') mkdirSync(path.dirname(path.resolve(config.path)), { recursive: true });
    this.db = new Database(config.path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    // Deleted rows are overwritten with zeros, not left in free pages: an erased caller is gone from the file.
    this.db.pragma('secure_delete = ON');
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
    // Subjects (sealed when encryption is on) and their keyed lookup hashes.
    // Subjects (sealed when encryption is on) and their keyed lookup hashes; the handover; which agent answered.
    for (const column of ['caller', 'customer_id', 'caller_lookup', 'customer_lookup', 'transfer', 'agent', 'agent_version']) {
      if (!columns.has(column)) this.db.exec(`ALTER TABLE calls ADD COLUMN ${column} TEXT`);
    }
    this.db.exec(`
      CREATE INDEX IF NOT EXISTS calls_caller ON calls(caller_lookup);
      CREATE INDEX IF NOT EXISTS calls_customer ON calls(customer_lookup);
      CREATE TABLE IF NOT EXISTS audit_log (
        seq INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
        call_id TEXT, detail TEXT);
      CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
        BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
      CREATE TABLE IF NOT EXISTS recordings (
        call_id TEXT PRIMARY KEY REFERENCES calls(id) ON DELETE CASCADE, path TEXT NOT NULL,
        format TEXT NOT NULL, bytes INTEGER NOT NULL, created_at TEXT NOT NULL);
    `);
    this.db.pragma('foreign_keys = ON');
    // A plain INSERT: an id that exists already is an error, never a silent append to someone else's record.
    this.insertCall = this.db.prepare(
      'INSERT INTO calls (id, transport, started_at, owner, network_id, caller, customer_id, caller_lookup, customer_lookup, agent, agent_version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    this.endCall = this.db.prepare('UPDATE calls SET ended_at = ?, end_reason = ? WHERE id = ? AND ended_at IS NULL');
    this.insertUtterance = this.db.prepare('INSERT INTO utterances (call_id, role, turn, text, language, status, at) VALUES (?, ?, ?, ?, ?, ?, ?)');
    this.insertMetrics = this.db.prepare('INSERT INTO turn_metrics (call_id, turn, metrics, at) VALUES (?, ?, ?, ?)');
    this.flushIntervalMs = Math.max(1, config.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS);
    this.writeBatch = this.db.transaction((batch: QueuedWrite[]) => {
      for (const write of batch) {
        if (write.kind === 'utterance') this.insertUtterance.run(...write.args);
        else this.insertMetrics.run(...write.args);
      }
    });
    // Calls a crash left open are closed as such, so they are not mistaken for live ones.
    const orphaned = this.db.prepare("UPDATE calls SET ended_at = ?, end_reason = 'process_ended' WHERE ended_at IS NULL").run(new Date().toISOString());
    if (orphaned.changes > 0) logger.warn({ calls: orphaned.changes }, 'calls left open by a previous process marked ended');
    this.applyRetention();
    if (config.retentionDays > 0) {
      this.retentionTimer = setInterval(() => this.applyRetention(), 24 * 3600 * 1000);
      this.retentionTimer.unref();
    }
  }

  /** The file is opened in the constructor: nothing left to wait for. */
  async open(): Promise<void> {}

  async callStarted(id: string, transport: string, owner: string, networkId?: string, subject: CallSubject = {}, agent?: AgentOfCall): Promise<void> {
    if (this.closed) throw new Error('call store is closed');
    this.insertCall.run(id, transport, new Date().toISOString(), owner, networkId ?? null, ...subjectColumns(this.sealer, id, subject), agent?.name ?? null, agent?.version ?? null);
  }

  /** Our id of the latest call the network knows as `networkId` (a Twilio CallSid, a SIP Call-ID), if any. */
  async idForNetworkId(networkId: string): Promise<string | null> {
    const row = this.db.prepare('SELECT id FROM calls WHERE network_id = ? ORDER BY started_at DESC LIMIT 1').get(networkId) as { id: string } | undefined;
    return row?.id ?? null;
  }

  callEnded(id: string, reason: string): void {
    // A transport's socket may close after the service shut the store (SIGINT with calls up): nothing left to write.
    if (this.closed) {
      this.logger.warn({ callId: id, reason }, 'call ended after the store was closed; end not recorded');
      return;
    }
    this.flush();
    this.endCall.run(new Date().toISOString(), reason, id);
  }

  callTransferred(id: string, transfer: { queue: string; reason: string | null; target: string | null }): void {
    if (this.closed) return;
    this.db.prepare('UPDATE calls SET transfer = ? WHERE id = ?').run(JSON.stringify({ ...transfer, at: new Date().toISOString() }), id);
  }

  /**
   * Queued (see the class comment); `flushNow` writes the queue at once (a finished reply: its audio has played,
   * so the disk flush costs the caller nothing, and the line is on disk before the client hears it ended).
   */
  utterance(id: string, entry: UtteranceEntry, flushNow = false): void {
    this.enqueue({
      kind: 'utterance',
      args: [id, entry.role, entry.turn, this.sealer.seal(entry.text, id), entry.language, entry.status ?? null, new Date().toISOString()],
    });
    if (flushNow) this.flush();
  }

  /** Queued: written with the next flush. */
  turnMetrics(id: string, metrics: TurnMetrics): void {
    this.enqueue({ kind: 'metrics', args: [id, metrics.turn, JSON.stringify(metrics), new Date().toISOString()] });
  }

  /** Writes not yet on disk (for tests and shutdown logs). */
  get pending(): number {
    return this.queue.length;
  }

  /** Write everything queued, in one transaction. A failed batch is logged and dropped, never retried forever. */
  flush(): void {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.queue.length === 0 || this.closed) return;
    const batch = this.queue.splice(0, this.queue.length);
    try {
      this.writeBatch(batch);
    } catch (err) {
      // One bad row (its call erased meanwhile) must not cost the others: write them one by one.
      let lost = 0;
      for (const write of batch) {
        try {
          this.writeBatch([write]);
        } catch {
          lost++;
        }
      }
      this.logger.error({ err, writes: batch.length, lost, callIds: [...new Set(batch.map((w) => w.args[0]))] }, 'call record write failed');
    }
  }

  private enqueue(write: QueuedWrite): void {
    if (this.closed) throw new Error('call store is closed');
    this.queue.push(write);
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => this.flush(), this.flushIntervalMs);
      // A pending write must not hold the process open on its own; close() flushes it.
      this.flushTimer.unref();
    }
  }

  /** The record of call `id` if it belongs to `owner` (an API key id); another key's call reads as absent. */
  async get(id: string, owner: string): Promise<CallRecord | null> {
    this.flush();
    const call = this.db
      .prepare(`SELECT ${CALL_COLUMNS} FROM calls WHERE id = ? AND (owner = ? OR owner = ?)`)
      .get(id, owner, ANY_KEY) as CallRow | undefined;
    return call ? this.complete(call) : null;
  }

  /** Whoever owns it: for an admin's export of a person's calls. */
  private getAny(id: string): CallRecord | null {
    const call = this.db.prepare(`SELECT ${CALL_COLUMNS} FROM calls WHERE id = ?`).get(id) as CallRow | undefined;
    return call ? this.complete(call) : null;
  }

  private complete(row: CallRow): CallRecord {
    const lines = this.db.prepare('SELECT role, turn, text, language, status, at FROM utterances WHERE call_id = ? ORDER BY seq').all(row.id) as CallRecord['transcript'];
    const metrics = this.db.prepare('SELECT metrics, at FROM turn_metrics WHERE call_id = ? ORDER BY turn').all(row.id) as { metrics: string; at: string }[];
    return openRecord(this.sealer, row, lines, metrics);
  }

  /** The calls of one person (any owner): by caller number or customer id, newest first. */
  async findCalls(query: SubjectQuery): Promise<CallSummary[]> {
    return this.findCallsNow(query);
  }

  private findCallsNow(query: SubjectQuery): CallSummary[] {
    const [column, lookups] = subjectLookups(this.sealer, query);
    const marks = lookups.map(() => '?').join(', ');
    return this.db
      .prepare(`SELECT id, transport, started_at, ended_at, owner FROM calls WHERE ${column} IN (${marks}) ORDER BY started_at DESC, id`)
      .all(...lookups) as CallSummary[];
  }

  /** Full records of one person's calls, with where their recordings are. */
  async exportCalls(query: SubjectQuery): Promise<ExportedCall[]> {
    this.flush();
    return this.findCallsNow(query).flatMap((summary) => {
      const record = this.getAny(summary.id);
      if (!record) return [];
      const recording = this.db.prepare('SELECT format, bytes, created_at FROM recordings WHERE call_id = ?').get(summary.id) as
        | { format: string; bytes: number; created_at: string }
        | undefined;
      return [{ ...record, recording: recording ?? null }];
    });
  }

  /**
   * Erase one person's calls: records, transcript lines, turn metrics and recording files. Freed pages are
   * zeroed (secure_delete) and the write-ahead log is checkpointed and truncated, so the words are gone from
   * the files, not only from queries. Returns the erased call ids.
   */
  async erase(query: SubjectQuery): Promise<string[]> {
    // Queued lines of these calls are written first, so the erasure takes them too.
    this.flush();
    const calls = this.findCallsNow(query).map((c) => c.id);
    const files: string[] = [];
    const eraseOne = this.db.transaction((id: string) => {
      const recording = this.db.prepare('SELECT path FROM recordings WHERE call_id = ?').get(id) as { path: string } | undefined;
      if (recording) files.push(recording.path);
      this.db.prepare('DELETE FROM calls WHERE id = ?').run(id);
    });
    for (const id of calls) eraseOne(id);
    for (const file of files) rmSync(file, { force: true });
    this.db.pragma('wal_checkpoint(TRUNCATE)');
    return calls;
  }

  /** Append to the audit trail (never updated or deleted: triggers refuse it). */
  async audit(actor: string, action: AuditEntry['action'], callId: string | null, detail?: string): Promise<void> {
    this.auditNow(actor, action, callId, detail);
  }

  private auditNow(actor: string, action: AuditEntry['action'], callId: string | null, detail?: string): void {
    this.db.prepare('INSERT INTO audit_log (at, actor, action, call_id, detail) VALUES (?, ?, ?, ?, ?)').run(new Date().toISOString(), actor, action, callId, detail ?? null);
  }

  /** Audit entries after `afterSeq`, oldest first. */
  async auditLog(afterSeq = 0, limit = 1000): Promise<AuditEntry[]> {
    return this.db.prepare('SELECT seq, at, actor, action, call_id, detail FROM audit_log WHERE seq > ? ORDER BY seq LIMIT ?').all(afterSeq, limit) as AuditEntry[];
  }

  /** Where call `id`'s recording is, if `owner` may read it. */
  async recording(id: string, owner: string): Promise<{ path: string; format: string; bytes: number } | null> {
    const row = this.db
      .prepare('SELECT r.path, r.format, r.bytes FROM recordings r JOIN calls c ON c.id = r.call_id WHERE r.call_id = ? AND (c.owner = ? OR c.owner = ?)')
      .get(id, owner, ANY_KEY) as { path: string; format: string; bytes: number } | undefined;
    return row ?? null;
  }

  /** Seals call `id`'s recording as it is written when encryption is on; null otherwise. */
  recordingSealer(id: string): ReturnType<Sealer['fileSealer']> {
    return this.sealer.fileSealer(`recording:${id}`);
  }

  openRecording(id: string, file: string): Promise<Readable> {
    return openRecordingFile(this.sealer, id, file);
  }

  /** The rows of recordings past `recording.retentionDays` (their files go too; the directory sweep also takes them). */
  async expireRecordings(retentionDays: number): Promise<number> {
    if (retentionDays <= 0 || this.closed) return 0;
    const cutoff = new Date(Date.now() - retentionDays * 24 * 3600 * 1000).toISOString();
    const rows = this.db.prepare('SELECT path FROM recordings WHERE created_at < ?').all(cutoff) as { path: string }[];
    this.db.prepare('DELETE FROM recordings WHERE created_at < ?').run(cutoff);
    for (const { path: file } of rows) rmSync(file, { force: true });
    if (rows.length > 0) this.auditNow('system', 'retention', null, JSON.stringify({ recordings: rows.length, recordingRetentionDays: retentionDays }));
    return rows.length;
  }

  recordingSaved(id: string, file: string, format: string, bytes: number): void {
    this.db.prepare('INSERT OR REPLACE INTO recordings (call_id, path, format, bytes, created_at) VALUES (?, ?, ?, ?, ?)').run(id, file, format, bytes, new Date().toISOString());
  }

  private applyRetention(): void {
    if (this.config.retentionDays <= 0) return;
    const cutoff = new Date(Date.now() - this.config.retentionDays * 24 * 3600 * 1000).toISOString();
    // Recording files go with their records.
    const files = this.db.prepare('SELECT r.path FROM recordings r JOIN calls c ON c.id = r.call_id WHERE c.started_at < ?').all(cutoff) as { path: string }[];
    const removed = this.db.prepare('DELETE FROM calls WHERE started_at < ?').run(cutoff);
    for (const { path: file } of files) rmSync(file, { force: true });
    if (removed.changes > 0) {
      this.auditNow('system', 'retention', null, JSON.stringify({ calls: removed.changes, recordings: files.length, retentionDays: this.config.retentionDays }));
      this.logger.info({ calls: removed.changes, retentionDays: this.config.retentionDays }, 'old calls deleted');
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    this.flush();
    this.closed = true;
    this.db.close();
  }
}
