/** The `auth` section (API keys, session tokens, admin keys; src/auth): its options, defaults and type. */
import { defaultsOf, t, type LeftOutOk, type Resolved } from '../core/options.js';

/** Longest session token: a leaked one (a proxy log, a shared link) must die soon. */
export const MAX_TOKEN_TTL_S = 3600;

const sha256Hex = t.string({ pattern: '^[0-9a-f]{64}$' });

export const AUTH_OPTIONS = t.object({
  /** SHA-256 hex digests of valid API keys (`npm run hash-key -- KEY` prints one). */
  apiKeyHashes: t.default(t.array(sha256Hex), []),
  /** HMAC secret for session tokens; random per process when unset (tokens then die with the process). */
  tokenSecret: t.optional(t.string({ minLength: 16 })),
  /** Lifetime of minted session tokens, seconds. */
  tokenTtlS: t.default(t.integer(1, MAX_TOKEN_TTL_S), 300),
  /** When false every entry point is open (for isolated lab setups only; logged loudly). */
  required: t.default(t.boolean(), true),
  /**
   * With no key configured, the generated key is kept in this file (mode 0600) and reused on restart, so local
   * tools (`npm run loadtest`) find it; null keeps it in memory only (printed once in the log).
   */
  generatedKeyFile: t.default(t.nullable(t.text()), 'data/api-key'),
  /**
   * SHA-256 hex digests of admin keys (also VOICE_AGENT_ADMIN_KEYS): they serve people's access and erasure
   * requests and read the audit trail (`/v1/admin/*`), and nothing else: an admin key places no calls and an API
   * key reaches no admin endpoint.
   */
  adminKeyHashes: t.optional(t.array(sha256Hex)),
});
/** Auth built without a config (tests, tools) may leave generatedKeyFile out: the key then stays in memory. */
export type AuthConfig = LeftOutOk<Resolved<typeof AUTH_OPTIONS>, 'generatedKeyFile'>;
export const AUTH_DEFAULTS: AuthConfig = defaultsOf(AUTH_OPTIONS);
