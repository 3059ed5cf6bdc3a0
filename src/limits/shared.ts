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
    // One round trip: the whole check runs in the database (voice_agent_admit in src/store/postgres.ts).
    const { rows } = await this.store.pool.query<{ refused: 'session_limit' | 'rate_limited' | null }>('SELECT voice_agent_admit($1, $2, $3, $4, $5, $6) AS refused', [
      keyId,
      callId,
      this.store.nodeId,
      maxSessionsPerKey,
      rate,
      this.store.leaseMs / 1000,
    ]);
    const refused = rows[0]?.refused ?? null;
    if (refused === 'session_limit') throw new LimitError('session_limit', `this key already holds its limit of ${maxSessionsPerKey} calls`);
    if (refused === 'rate_limited') throw new LimitError('rate_limited', `this key starts calls too fast (limit ${rate} per minute)`);
  }

  /** Free the call's slot; a failure is logged (the slot then lapses with this node's lease if the node dies). */
  release(callId: string): void {
    if (this.config.maxSessionsPerKey <= 0) return;
    this.store.pool.query('DELETE FROM call_slots WHERE call_id = $1', [callId]).catch((err: unknown) => this.logger.error({ err, callId }, 'call slot not released'));
  }
}
