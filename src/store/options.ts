/** The `store` section (durable call records: SQLite, or PostgreSQL shared by a cluster): options, defaults, type. */
import { defaultsOf, t, type Resolved, type Static } from '../core/options.js';

/** A cluster's shared store (docs/scale-out.md); the URL may come from VOICE_AGENT_DATABASE_URL instead. */
export const POSTGRES_STORE_OPTIONS = t.object({
  /** postgres://user:password@host:5432/db?sslmode=verify-full&sslrootcert=/path/ca.pem; VOICE_AGENT_DATABASE_URL wins. */
  url: t.optional(t.string({ pattern: '^postgres(ql)?://' })),
  /** This node's name in the cluster, unique among live nodes (default: host name, pid and a random suffix). */
  nodeId: t.optional(t.string({ pattern: '^[A-Za-z0-9._:-]{1,64}$' })),
  /** How long a node's lease lasts without renewal (default 15 s): the bound on a dead node's slots and open calls. */
  leaseMs: t.optional(t.integer(1000, 600_000)),
  /** Connections this node keeps to the database (default 4). */
  poolSize: t.optional(t.integer(1, 100)),
});
export type PostgresStoreConfig = Static<typeof POSTGRES_STORE_OPTIONS>;

export const STORE_OPTIONS = t.object({
  /** 'sqlite' (default): one file per node. 'postgres': shared by every node (src/store/postgres.ts, docs/scale-out.md). */
  kind: t.optional(t.enum(['sqlite', 'postgres'])),
  /** SQLite file; ':memory:' keeps nothing (tests of other things). */
  path: t.default(t.text(), 'data/calls.db'),
  /** The shared database when `kind` is 'postgres'. */
  postgres: t.optional(POSTGRES_STORE_OPTIONS),
  /** Calls older than this are deleted at start-up and daily; 0 keeps them forever. */
  retentionDays: t.default(t.integer(0), 30),
  /**
   * The API key id (`keyId` in logs: the first 8 hex digits of the key's SHA-256) that may read records of calls
   * placed without a key: SIP trunks, Twilio streams admitted by signature. Unset: any API key may (one tenant).
   */
  networkCallsOwner: t.optional(t.string({ pattern: '^[0-9a-f]{8}$' })),
  /**
   * AES-256-GCM keys (32 bytes, base64) for transcripts and subjects at rest: the first encrypts, all decrypt
   * (src/privacy/seal.ts; docs/compliance.md, key rotation).
   */
  encryptionKeys: t.optional(t.array(t.string({ pattern: '^[A-Za-z0-9+/]{43}=$' }))),
  /**
   * How long queued utterances/metrics may wait in memory before their one-transaction write (default 50 ms):
   * what kill -9 can lose (docs/operations.md).
   */
  flushIntervalMs: t.optional(t.integer(1, 1000)),
});
export type StoreConfig = Resolved<typeof STORE_OPTIONS>;
export const STORE_DEFAULTS: StoreConfig = defaultsOf(STORE_OPTIONS);
