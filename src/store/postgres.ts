import { hostname } from 'node:os';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, rmSync } from 'node:fs';
import type { Readable } from 'node:stream';
import pg from 'pg';
import type { Logger } from 'pino';
import type { TurnMetrics } from '../session/events.js';
import { openedStream, type Sealer } from '../privacy/seal.js';
import {
  ANY_KEY,
  DEFAULT_FLUSH_INTERVAL_MS,
  openRecord,
  openRecordingFile,
  storeSealer,
  subjectColumns,
  subjectLookups,
  CALL_COLUMNS,
  type AgentOfCall,
  type AuditEntry,
  type CallRecord,
  type CallRow,
  type CallStore,
  type CallSubject,
  type CallSummary,
  type ExportedCall,
  type StoreConfig,
  type SubjectQuery,
  type UtteranceEntry,
} from './call-store.js';

/** Declared in ./options.ts (`store.postgres`). */
export type { PostgresStoreConfig } from './options.js';

/**
 * The call store in PostgreSQL, shared by every node of a cluster (docs/scale-out.md): any node serves any
 * call's record, and admin searches, exports and erasures see every node's calls. The same write discipline
 * as SQLite: a call's row is inserted when it starts (before any audio flows; a collision is refused), and
 * utterances, turn metrics, ends and recordings are queued and written in one transaction every
 * `flushIntervalMs`, so no network round trip sits on the audio path.
 *
 * Each node holds a lease (`nodes.heartbeat_at`, renewed every leaseMs / 3). A node whose lease lapsed (SIGKILL,
 * power, partition) has its open calls closed as `node_lost` and its call slots (src/limits/shared.ts) freed by
 * whichever node renews next.
 */

export const DEFAULT_LEASE_MS = 15_000;

/** The connection string of a postgres store, or a clear error. */
export function databaseUrl(config: StoreConfig, env: NodeJS.ProcessEnv = process.env): string {
  const url = env.VOICE_AGENT_DATABASE_URL || config.postgres?.url;
  if (!url) throw new Error("store.kind is 'postgres' but neither VOICE_AGENT_DATABASE_URL nor store.postgres.url is set");
  return url;
}

/** Tables of the call record (as in SQLite, with `node`: who holds an open call) and of the cluster's leases. */
const SCHEMA = `
CREATE TABLE IF NOT EXISTS calls (
  id TEXT PRIMARY KEY, transport TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, end_reason TEXT,
  owner TEXT, network_id TEXT, caller TEXT, customer_id TEXT, caller_lookup TEXT, customer_lookup TEXT, node TEXT);
ALTER TABLE calls ADD COLUMN IF NOT EXISTS transfer TEXT;
ALTER TABLE calls ADD COLUMN IF NOT EXISTS agent TEXT;
ALTER TABLE calls ADD COLUMN IF NOT EXISTS agent_version TEXT;
CREATE INDEX IF NOT EXISTS calls_network ON calls(network_id);
CREATE INDEX IF NOT EXISTS calls_caller ON calls(caller_lookup);
CREATE INDEX IF NOT EXISTS calls_customer ON calls(customer_lookup);
CREATE INDEX IF NOT EXISTS calls_started ON calls(started_at);
CREATE INDEX IF NOT EXISTS calls_open ON calls(node) WHERE ended_at IS NULL;
CREATE TABLE IF NOT EXISTS utterances (
  call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE, seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  role TEXT NOT NULL, turn INTEGER NOT NULL, text TEXT NOT NULL, language TEXT NOT NULL, status TEXT, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS utterances_call ON utterances(call_id, seq);
CREATE TABLE IF NOT EXISTS turn_metrics (
  call_id TEXT NOT NULL REFERENCES calls(id) ON DELETE CASCADE, turn INTEGER NOT NULL, metrics TEXT NOT NULL, at TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS turn_metrics_call ON turn_metrics(call_id, turn);
CREATE TABLE IF NOT EXISTS recordings (
  call_id TEXT PRIMARY KEY REFERENCES calls(id) ON DELETE CASCADE, path TEXT NOT NULL,
  format TEXT NOT NULL, bytes INTEGER NOT NULL, created_at TEXT NOT NULL);
ALTER TABLE recordings ADD COLUMN IF NOT EXISTS chunks INTEGER;
-- A finished recording's bytes, exactly as its file holds them (sealed when store keys are set), in order.
CREATE TABLE IF NOT EXISTS recording_chunks (
  call_id TEXT NOT NULL REFERENCES recordings(call_id) ON DELETE CASCADE, seq INTEGER NOT NULL, data BYTEA NOT NULL,
  PRIMARY KEY (call_id, seq));
-- Opus and ciphertext do not compress: TOAST stores the chunks out of line without trying.
ALTER TABLE recording_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
CREATE TABLE IF NOT EXISTS audit_log (
  seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
  call_id TEXT, detail TEXT);
CREATE OR REPLACE FUNCTION voice_agent_audit_append_only() RETURNS trigger LANGUAGE plpgsql AS
  $$ BEGIN RAISE EXCEPTION 'audit_log is append-only'; END $$;
CREATE OR REPLACE TRIGGER audit_log_append_only BEFORE UPDATE OR DELETE ON audit_log
  FOR EACH ROW EXECUTE FUNCTION voice_agent_audit_append_only();
CREATE TABLE IF NOT EXISTS nodes (node TEXT PRIMARY KEY, heartbeat_at TIMESTAMPTZ NOT NULL);
CREATE TABLE IF NOT EXISTS call_slots (call_id TEXT PRIMARY KEY, key_id TEXT NOT NULL, node TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS call_slots_key ON call_slots(key_id);
CREATE TABLE IF NOT EXISTS start_buckets (key_id TEXT PRIMARY KEY, tokens DOUBLE PRECISION NOT NULL, updated_at TIMESTAMPTZ NOT NULL);
-- Per-key admission in one round trip (src/limits/shared.ts): NULL when admitted, else the refusal's code.
-- The advisory lock serializes one key's admissions until the statement's transaction ends; only slots of
-- nodes with a live lease count; the start bucket refills continuously (p_rate tokens a minute).
CREATE OR REPLACE FUNCTION voice_agent_admit(p_key TEXT, p_call TEXT, p_node TEXT, p_max INTEGER, p_rate DOUBLE PRECISION, p_ttl_s DOUBLE PRECISION)
RETURNS TEXT LANGUAGE plpgsql AS $$
DECLARE
  v_held INTEGER;
  v_tokens DOUBLE PRECISION;
BEGIN
  PERFORM pg_advisory_xact_lock(hashtextextended('voice-agent-key:' || p_key, 0));
  IF p_max > 0 THEN
    SELECT count(*) INTO v_held FROM call_slots s JOIN nodes n ON n.node = s.node
      WHERE s.key_id = p_key AND n.heartbeat_at > now() - make_interval(secs => p_ttl_s);
    IF v_held >= p_max THEN RETURN 'session_limit'; END IF;
  END IF;
  IF p_rate > 0 THEN
    INSERT INTO start_buckets AS b (key_id, tokens, updated_at) VALUES (p_key, p_rate, now())
      ON CONFLICT (key_id) DO UPDATE
        SET tokens = LEAST(p_rate, b.tokens + EXTRACT(EPOCH FROM now() - b.updated_at) / 60 * p_rate), updated_at = now()
      RETURNING b.tokens INTO v_tokens;
    IF v_tokens < 1 THEN RETURN 'rate_limited'; END IF;
    UPDATE start_buckets SET tokens = v_tokens - 1 WHERE key_id = p_key;
  END IF;
  IF p_max > 0 THEN INSERT INTO call_slots (call_id, key_id, node) VALUES (p_call, p_key, p_node); END IF;
  RETURN NULL;
END $$;
`;

/**
 * Recordings are kept in the database as rows of 256 KiB bytea chunks (about a minute of audio each), not as
 * large objects: chunk rows go with their call by ON DELETE CASCADE, so erasure and retention need no separate
 * unlink and leave no orphans (large objects need lo_unlink or vacuumlo); they replicate and back up like every
 * other row; and a reader fetches one chunk per query, holding neither a connection nor more than a chunk in memory
 * while a slow client downloads an hour of audio.
 */
export const RECORDING_CHUNK_BYTES = 256 * 1024;

/** SQLSTATE of an insert whose call row no longer exists. */
const FOREIGN_KEY_VIOLATION = '23503';

/** Serializes schema changes of nodes starting together (CREATE … IF NOT EXISTS races otherwise). */
const MIGRATION_LOCK = 7_307_201_301;
/** The schema this code wants: its DDL runs only when the database was migrated to another (or none). */
const SCHEMA_HASH = createHash('sha256').update(SCHEMA).digest('hex');
/** SQLSTATE of a transaction PostgreSQL aborted to break a deadlock: it can simply run again. */
const DEADLOCK_DETECTED = '40P01';

interface QueuedWrite {
  callId: string;
  sql: string;
  params: unknown[];
}

export class PostgresCallStore implements CallStore {
  readonly pool: pg.Pool;
  readonly nodeId: string;
  readonly leaseMs: number;
  private readonly sealer: Sealer;
  private readonly queue: QueuedWrite[] = [];
  private flushTimer: NodeJS.Timeout | null = null;
  /** The flush in flight: flushes run one after another so writes keep their order. */
  private flushing: Promise<void> = Promise.resolve();
  private readonly flushIntervalMs: number;
  private opening: Promise<void> | null = null;
  private leaseTimer: NodeJS.Timeout | null = null;
  private retentionTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(
    private readonly config: StoreConfig,
    private readonly logger: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    this.sealer = storeSealer(config, env);
    this.nodeId = config.postgres?.nodeId ?? `${hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`;
    this.leaseMs = config.postgres?.leaseMs ?? DEFAULT_LEASE_MS;
    this.flushIntervalMs = Math.max(1, config.flushIntervalMs ?? DEFAULT_FLUSH_INTERVAL_MS);
    this.pool = new pg.Pool({ connectionString: databaseUrl(config, env), max: config.postgres?.poolSize ?? 4, application_name: `voice-agent ${this.nodeId}` });
    // An idle connection the server dropped must not crash the process: the next query reconnects.
    this.pool.on('error', (err) => this.logger.warn({ err }, 'idle database connection lost'));
  }

  open(): Promise<void> {
    this.opening ??= this.migrate();
    return this.opening;
  }

  private async migrate(): Promise<void> {
    await this.retryDeadlock(() =>
      this.transaction(async (client) => {
        await client.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
        // The schema's DDL takes exclusive table locks even when it changes nothing (ALTER … ADD COLUMN IF NOT EXISTS),
        // and deadlocks with what the nodes already serving do (a retention sweep, a lease renewal): it runs only when
        // the database is not at this schema yet. Measured: three nodes starting on one database deadlocked at start.
        await client.query('CREATE TABLE IF NOT EXISTS schema_version (id INTEGER PRIMARY KEY, hash TEXT NOT NULL)');
        const at = await client.query<{ hash: string }>('SELECT hash FROM schema_version WHERE id = 1');
        if (at.rows[0]?.hash === SCHEMA_HASH) return;
        await client.query(SCHEMA);
        await client.query('INSERT INTO schema_version (id, hash) VALUES (1, $1) ON CONFLICT (id) DO UPDATE SET hash = EXCLUDED.hash', [SCHEMA_HASH]);
      }),
    );
    await this.renewLease();
    // Calls a crash of this very node (same nodeId) left open are closed as such; other nodes' calls are theirs.
    const orphaned = await this.pool.query("UPDATE calls SET ended_at = $1, end_reason = 'process_ended' WHERE ended_at IS NULL AND node = $2", [new Date().toISOString(), this.nodeId]);
    if (orphaned.rowCount) this.logger.warn({ calls: orphaned.rowCount }, 'calls left open by a previous process of this node marked ended');
    this.leaseTimer = setInterval(() => void this.renewLease().catch((err: unknown) => this.logger.error({ err }, 'node lease renewal failed')), Math.max(100, Math.floor(this.leaseMs / 3)));
    this.leaseTimer.unref();
    await this.retryDeadlock(() => this.applyRetention());
    if (this.config.retentionDays > 0) {
      this.retentionTimer = setInterval(() => void this.applyRetention().catch((err: unknown) => this.logger.error({ err }, 'retention sweep failed')), 24 * 3600 * 1000);
      this.retentionTimer.unref();
    }
    this.logger.info({ node: this.nodeId, leaseMs: this.leaseMs }, 'shared call store ready (PostgreSQL)');
  }

  /** Renew this node's lease, then clean up after nodes whose lease lapsed: their open calls and call slots. */
  private async renewLease(): Promise<void> {
    const ttl = this.leaseMs / 1000;
    await this.pool.query('INSERT INTO nodes (node, heartbeat_at) VALUES ($1, now()) ON CONFLICT (node) DO UPDATE SET heartbeat_at = now()', [this.nodeId]);
    const live = 'SELECT node FROM nodes WHERE heartbeat_at > now() - make_interval(secs => $1)';
    const lost = await this.pool.query(`UPDATE calls SET ended_at = $2, end_reason = 'node_lost' WHERE ended_at IS NULL AND node IS NOT NULL AND node NOT IN (${live})`, [ttl, new Date().toISOString()]);
    if (lost.rowCount) this.logger.warn({ calls: lost.rowCount }, "calls of a node whose lease lapsed marked ended ('node_lost')");
    await this.pool.query(`DELETE FROM call_slots WHERE node NOT IN (${live})`, [ttl]);
    await this.pool.query('DELETE FROM nodes WHERE heartbeat_at <= now() - make_interval(secs => $1)', [ttl]);
  }

  /**
   * Runs `work` again when PostgreSQL aborted it to break a deadlock (a schema change of a node being upgraded against
   * the calls of the others), a few times, after a short random wait; any other error is thrown at once.
   */
  private async retryDeadlock<T>(work: () => Promise<T>, attempts = 4): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await work();
      } catch (err) {
        if ((err as { code?: unknown }).code !== DEADLOCK_DETECTED || attempt >= attempts) throw err;
        this.logger.warn({ attempt }, 'database deadlock at start: trying again');
        await new Promise((resolve) => setTimeout(resolve, 50 + Math.random() * 200 * attempt));
      }
    }
  }

  /** Run `work` in one transaction on one connection. */
  async transaction<T>(work: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const client = await this.pool.connect();
    try {
      await client.query('BEGIN');
      const result = await work(client);
      await client.query('COMMIT');
      return result;
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      throw err;
    } finally {
      client.release();
    }
  }

  async callStarted(id: string, transport: string, owner: string, networkId?: string, subject: CallSubject = {}, agent?: AgentOfCall): Promise<void> {
    if (this.closed) throw new Error('call store is closed');
    await this.open();
    await this.pool.query(
      'INSERT INTO calls (id, transport, started_at, owner, network_id, caller, customer_id, caller_lookup, customer_lookup, node, agent, agent_version) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)',
      [id, transport, new Date().toISOString(), owner, networkId ?? null, ...subjectColumns(this.sealer, id, subject), this.nodeId, agent?.name ?? null, agent?.version ?? null],
    );
  }

  callTransferred(id: string, transfer: { queue: string; reason: string | null; target: string | null }): void {
    if (this.closed) return;
    this.enqueue({ callId: id, sql: 'UPDATE calls SET transfer = $1 WHERE id = $2', params: [JSON.stringify({ ...transfer, at: new Date().toISOString() }), id] });
    void this.flush();
  }

  callEnded(id: string, reason: string): void {
    if (this.closed) {
      this.logger.warn({ callId: id, reason }, 'call ended after the store was closed; end not recorded');
      return;
    }
    this.enqueue({ callId: id, sql: 'UPDATE calls SET ended_at = $1, end_reason = $2 WHERE id = $3 AND ended_at IS NULL', params: [new Date().toISOString(), reason, id] });
    void this.flush();
  }

  utterance(id: string, entry: UtteranceEntry, flushNow = false): void {
    this.enqueue({
      callId: id,
      sql: 'INSERT INTO utterances (call_id, role, turn, text, language, status, at) VALUES ($1, $2, $3, $4, $5, $6, $7)',
      params: [id, entry.role, entry.turn, this.sealer.seal(entry.text, id), entry.language, entry.status ?? null, new Date().toISOString()],
    });
    if (flushNow) void this.flush();
  }

  turnMetrics(id: string, metrics: TurnMetrics): void {
    this.enqueue({ callId: id, sql: 'INSERT INTO turn_metrics (call_id, turn, metrics, at) VALUES ($1, $2, $3, $4)', params: [id, metrics.turn, JSON.stringify(metrics), new Date().toISOString()] });
  }

  /**
   * After the queued writes of the call, the file's bytes go into `recording_chunks` in one transaction, with the
   * `recordings` row; once committed, the local file is removed: the database is then the only copy, which every
   * node serves and every erasure or retention sweep deletes. If the database refuses, the file stays and the row
   * links it (served by this node alone, as before).
   */
  recordingSaved(id: string, file: string, format: string, bytes: number): void {
    if (this.closed) throw new Error('call store is closed');
    void this.flush();
    this.flushing = this.flushing.then(() => this.storeRecording(id, file, format, bytes));
  }

  private async storeRecording(id: string, file: string, format: string, bytes: number): Promise<void> {
    const upsert = `INSERT INTO recordings (call_id, path, format, bytes, created_at, chunks) VALUES ($1, $2, $3, $4, $5, $6)
      ON CONFLICT (call_id) DO UPDATE SET path = EXCLUDED.path, format = EXCLUDED.format, bytes = EXCLUDED.bytes, created_at = EXCLUDED.created_at, chunks = EXCLUDED.chunks`;
    const createdAt = new Date().toISOString();
    const t0 = performance.now();
    try {
      await this.open();
      const chunks = await this.transaction(async (client) => {
        await client.query(upsert, [id, file, format, bytes, createdAt, null]);
        await client.query('DELETE FROM recording_chunks WHERE call_id = $1', [id]);
        let seq = 0;
        for await (const chunk of createReadStream(file, { highWaterMark: RECORDING_CHUNK_BYTES }) as AsyncIterable<Buffer>) {
          await client.query('INSERT INTO recording_chunks (call_id, seq, data) VALUES ($1, $2, $3)', [id, seq++, chunk]);
        }
        await client.query('UPDATE recordings SET chunks = $2 WHERE call_id = $1', [id, seq]);
        return seq;
      });
      rmSync(file, { force: true });
      this.logger.info({ callId: id, bytes, chunks, ms: Math.round(performance.now() - t0) }, 'recording stored in the database');
    } catch (err) {
      // The call's record is gone (erased, or expired, while the call ended): nothing may keep its audio.
      if ((err as { code?: string }).code === FOREIGN_KEY_VIOLATION) {
        rmSync(file, { force: true });
        this.logger.warn({ callId: id }, 'recording of a call erased meanwhile: deleted');
        return;
      }
      this.logger.error({ err, callId: id }, 'recording not stored in the database; the file on this node is linked instead');
      await this.pool.query(upsert, [id, file, format, bytes, createdAt, null]).catch((linkErr: unknown) => this.logger.error({ err: linkErr, callId: id }, 'recording could not be linked'));
    }
  }

  get pending(): number {
    return this.queue.length;
  }

  private enqueue(write: QueuedWrite): void {
    if (this.closed) throw new Error('call store is closed');
    this.queue.push(write);
    if (!this.flushTimer) {
      this.flushTimer = setTimeout(() => void this.flush(), this.flushIntervalMs);
      this.flushTimer.unref();
    }
  }

  /** Write everything queued in one transaction; a failed batch is retried write by write, then dropped. */
  flush(): Promise<void> {
    if (this.flushTimer) {
      clearTimeout(this.flushTimer);
      this.flushTimer = null;
    }
    if (this.queue.length === 0) return this.flushing;
    const batch = this.queue.splice(0, this.queue.length);
    this.flushing = this.flushing.then(() => this.writeBatch(batch));
    return this.flushing;
  }

  private async writeBatch(batch: QueuedWrite[]): Promise<void> {
    try {
      await this.open();
      await this.transaction(async (client) => {
        for (const write of batch) await client.query(write.sql, write.params);
      });
    } catch (err) {
      // One bad row (its call erased meanwhile) must not cost the others.
      let lost = 0;
      for (const write of batch) {
        try {
          await this.pool.query(write.sql, write.params);
        } catch {
          lost++;
        }
      }
      this.logger.error({ err, writes: batch.length, lost, callIds: [...new Set(batch.map((w) => w.callId))] }, 'call record write failed');
    }
  }

  /** Reads see this node's queued writes (flushed first); other nodes' within their flush interval. */
  private async query<R extends pg.QueryResultRow>(sql: string, params: unknown[]): Promise<R[]> {
    await this.open();
    await this.flush();
    return (await this.pool.query<R>(sql, params)).rows;
  }

  async get(id: string, owner: string): Promise<CallRecord | null> {
    const [row] = await this.query<CallRow>(
      `SELECT ${CALL_COLUMNS} FROM calls WHERE id = $1 AND (owner = $2 OR owner = $3)`,
      [id, owner, ANY_KEY],
    );
    return row ? this.complete(row) : null;
  }

  private async complete(row: CallRow): Promise<CallRecord> {
    const lines = await this.query<CallRecord['transcript'][number]>('SELECT role, turn, text, language, status, at FROM utterances WHERE call_id = $1 ORDER BY seq', [row.id]);
    const metrics = await this.query<{ metrics: string; at: string }>('SELECT metrics, at FROM turn_metrics WHERE call_id = $1 ORDER BY turn', [row.id]);
    return openRecord(this.sealer, row, lines, metrics);
  }

  async idForNetworkId(networkId: string): Promise<string | null> {
    const [row] = await this.query<{ id: string }>('SELECT id FROM calls WHERE network_id = $1 ORDER BY started_at DESC LIMIT 1', [networkId]);
    return row?.id ?? null;
  }

  async findCalls(query: SubjectQuery): Promise<CallSummary[]> {
    const [column, lookups] = subjectLookups(this.sealer, query);
    return this.query<CallSummary>(`SELECT id, transport, started_at, ended_at, owner FROM calls WHERE ${column} = ANY($1) ORDER BY started_at DESC, id`, [lookups]);
  }

  async exportCalls(query: SubjectQuery): Promise<ExportedCall[]> {
    const out: ExportedCall[] = [];
    for (const summary of await this.findCalls(query)) {
      const [row] = await this.query<CallRow>(`SELECT ${CALL_COLUMNS} FROM calls WHERE id = $1`, [summary.id]);
      if (!row) continue;
      const [recording] = await this.query<{ format: string; bytes: number; created_at: string }>('SELECT format, bytes, created_at FROM recordings WHERE call_id = $1', [summary.id]);
      out.push({ ...(await this.complete(row)), recording: recording ?? null });
    }
    return out;
  }

  /**
   * Erase one person's calls (rows cascade to transcript lines, metrics, recordings and their chunks, whichever
   * node made them) and any recording file still on this node. PostgreSQL keeps deleted tuples until VACUUM
   * reuses their pages, and in WAL and backups until those rotate: docs/compliance.md says what that means for an
   * erasure.
   */
  async erase(query: SubjectQuery): Promise<string[]> {
    const calls = (await this.findCalls(query)).map((c) => c.id);
    if (calls.length === 0) return [];
    const files = await this.transaction(async (client) => {
      const rows = await client.query<{ path: string }>('SELECT path FROM recordings WHERE call_id = ANY($1)', [calls]);
      await client.query('DELETE FROM calls WHERE id = ANY($1)', [calls]);
      return rows.rows.map((r) => r.path);
    });
    for (const file of files) rmSync(file, { force: true });
    return calls;
  }

  async audit(actor: string, action: AuditEntry['action'], callId: string | null, detail?: string): Promise<void> {
    await this.open();
    await this.insertAudit(actor, action, callId, detail);
  }

  /** Without waiting for open(): the retention sweep runs inside it. */
  private async insertAudit(actor: string, action: AuditEntry['action'], callId: string | null, detail?: string): Promise<void> {
    await this.pool.query('INSERT INTO audit_log (at, actor, action, call_id, detail) VALUES ($1, $2, $3, $4, $5)', [new Date().toISOString(), actor, action, callId, detail ?? null]);
  }

  async auditLog(afterSeq = 0, limit = 1000): Promise<AuditEntry[]> {
    const rows = await this.query<AuditEntry & { seq: string }>('SELECT seq, at, actor, action, call_id, detail FROM audit_log WHERE seq > $1 ORDER BY seq LIMIT $2', [afterSeq, limit]);
    // BIGINT comes back as a string; audit sequence numbers stay far below 2^53.
    return rows.map((row) => ({ ...row, seq: Number(row.seq) }));
  }

  async recording(id: string, owner: string): Promise<{ path: string; format: string; bytes: number } | null> {
    const [row] = await this.query<{ path: string; format: string; bytes: number }>(
      'SELECT r.path, r.format, r.bytes FROM recordings r JOIN calls c ON c.id = r.call_id WHERE r.call_id = $1 AND (c.owner = $2 OR c.owner = $3)',
      [id, owner, ANY_KEY],
    );
    return row ?? null;
  }

  recordingSealer(id: string): ReturnType<Sealer['fileSealer']> {
    return this.sealer.fileSealer(`recording:${id}`);
  }

  /** From the database, one chunk per query, when it holds the recording; else from the file on this node. */
  async openRecording(id: string, file: string): Promise<Readable> {
    const [row] = await this.query<{ chunks: number | null }>('SELECT chunks FROM recordings WHERE call_id = $1', [id]);
    if (row?.chunks === null || row?.chunks === undefined) return openRecordingFile(this.sealer, id, file);
    const count = row.chunks;
    const pool = this.pool;
    async function* chunks(): AsyncGenerator<Buffer> {
      for (let seq = 0; seq < count; seq++) {
        const result = await pool.query<{ data: Buffer }>('SELECT data FROM recording_chunks WHERE call_id = $1 AND seq = $2', [id, seq]);
        const chunk = result.rows[0];
        // Erased (or expired) while it was being read: the response ends short rather than with another call's bytes.
        if (!chunk) throw new Error(`recording ${id} chunk ${seq} is gone`);
        yield chunk.data;
      }
    }
    return openedStream(this.sealer.fileOpener(`recording:${id}`), chunks());
  }

  /** Recordings past `recording.retentionDays`: rows and chunks (and a file this node still holds). */
  async expireRecordings(retentionDays: number): Promise<number> {
    if (retentionDays <= 0 || this.closed) return 0;
    const cutoff = new Date(Date.now() - retentionDays * 24 * 3600 * 1000).toISOString();
    const rows = await this.query<{ path: string }>('DELETE FROM recordings WHERE created_at < $1 RETURNING path', [cutoff]);
    for (const { path } of rows) rmSync(path, { force: true });
    if (rows.length > 0) await this.insertAudit('system', 'retention', null, JSON.stringify({ recordings: rows.length, recordingRetentionDays: retentionDays }));
    return rows.length;
  }

  private async applyRetention(): Promise<void> {
    if (this.config.retentionDays <= 0) return;
    const cutoff = new Date(Date.now() - this.config.retentionDays * 24 * 3600 * 1000).toISOString();
    const { files, calls } = await this.transaction(async (client) => {
      const rows = await client.query<{ path: string }>('SELECT r.path FROM recordings r JOIN calls c ON c.id = r.call_id WHERE c.started_at < $1', [cutoff]);
      const removed = await client.query('DELETE FROM calls WHERE started_at < $1', [cutoff]);
      return { files: rows.rows.map((r) => r.path), calls: removed.rowCount ?? 0 };
    });
    for (const file of files) rmSync(file, { force: true });
    if (calls > 0) {
      await this.insertAudit('system', 'retention', null, JSON.stringify({ calls, recordings: files.length, retentionDays: this.config.retentionDays }));
      this.logger.info({ calls, retentionDays: this.config.retentionDays }, 'old calls deleted');
    }
  }

  /** Flush, give up this node's lease and slots (its calls are over), and disconnect. */
  async close(): Promise<void> {
    if (this.closed) return;
    if (this.retentionTimer) clearInterval(this.retentionTimer);
    if (this.leaseTimer) clearInterval(this.leaseTimer);
    await this.flush();
    this.closed = true;
    if (this.opening) {
      await this.pool.query('DELETE FROM call_slots WHERE node = $1', [this.nodeId]).catch((err: unknown) => this.logger.warn({ err }, 'call slots not released'));
      await this.pool.query('DELETE FROM nodes WHERE node = $1', [this.nodeId]).catch((err: unknown) => this.logger.warn({ err }, 'node lease not released'));
    }
    await this.pool.end();
  }
}
