import type { Logger } from 'pino';
import type { PostgresCallStore } from '../store/postgres.js';
import { LimitError, type LimitsConfig } from './limits.js';

/**
 * Per-API-key limits (`limits.maxSessionsPerKey`, `limits.sessionsPerMinutePerKey`) counted across every node
 * of a cluster, in the PostgreSQL database the nodes already share (docs/scale-out.md). A call holds a row in
 * `call_slots` from admission to hang-up; admissions of one key are serialized by a transaction-scoped
 * advisory lock on the key, so the cap is exact among live nodes. Only slots of nodes holding a lease count:
 * a node that dies without releasing its slots stops counting once its lease lapses (`store.postgres.leaseMs`).
 * One round trip per call start, none during the call. The process-wide `limits.maxSessions` stays local.
 */
export class SharedKeyLimiter {
  constructor(
    private readonly store: PostgresCallStore,
    private readonly config: Pick<LimitsConfig, 'maxSessionsPerKey' | 'sessionsPerMinutePerKey'>,
    private readonly logger: Logger,
  ) {}

  /** Take a slot for call `callId` of `keyId`, or throw LimitError. Pair every admit with one release. */
  async admit(keyId: string, callId: string): Promise<void> {
    const { maxSessionsPerKey, sessionsPerMinutePerKey: rate } = this.config;
    if (maxSessionsPerKey <= 0 && rate <= 0) return;
    await this.store.open();
    const refused = await this.store.transaction(async (client): Promise<LimitError | null> => {
      await client.query("SELECT pg_advisory_xact_lock(hashtextextended('voice-agent-key:' || $1, 0))", [keyId]);
      if (maxSessionsPerKey > 0) {
        const { rows } = await client.query<{ held: number }>(
          `SELECT count(*)::int AS held FROM call_slots s JOIN nodes n ON n.node = s.node
           WHERE s.key_id = $1 AND n.heartbeat_at > now() - make_interval(secs => $2)`,
          [keyId, this.store.leaseMs / 1000],
        );
        const held = rows[0]?.held ?? 0;
        if (held >= maxSessionsPerKey) return new LimitError('session_limit', `this key already holds ${held} calls (limit ${maxSessionsPerKey})`);
      }
      if (rate > 0) {
        // A token bucket per key: `rate` tokens, refilled continuously over a minute, one per call start.
        const { rows } = await client.query<{ tokens: number }>(
          `INSERT INTO start_buckets AS b (key_id, tokens, updated_at) VALUES ($1, $2, now())
           ON CONFLICT (key_id) DO UPDATE
             SET tokens = LEAST($2, b.tokens + EXTRACT(EPOCH FROM now() - b.updated_at) / 60 * $2), updated_at = now()
           RETURNING tokens`,
          [keyId, rate],
        );
        if ((rows[0]?.tokens ?? rate) < 1) return new LimitError('rate_limited', `this key starts calls too fast (limit ${rate} per minute)`);
        await client.query('UPDATE start_buckets SET tokens = tokens - 1 WHERE key_id = $1', [keyId]);
      }
      if (maxSessionsPerKey > 0) await client.query('INSERT INTO call_slots (call_id, key_id, node) VALUES ($1, $2, $3)', [callId, keyId, this.store.nodeId]);
      return null;
    });
    if (refused) throw refused;
  }

  /** Free the call's slot; a failure is logged (the slot then lapses with this node's lease if the node dies). */
  release(callId: string): void {
    if (this.config.maxSessionsPerKey <= 0) return;
    this.store.pool.query('DELETE FROM call_slots WHERE call_id = $1', [callId]).catch((err: unknown) => this.logger.error({ err, callId }, 'call slot not released'));
  }
}
