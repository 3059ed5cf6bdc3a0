import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { SignJWT, jwtVerify, errors as joseErrors } from 'jose';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';

/**
 * Who may use the service. Server-to-server callers present an API key; browsers and devices present a
 * short-lived signed session token (JWT, HS256) that their own backend minted with an API key through
 * `POST /v1/tokens`. Keys are kept only as SHA-256 hashes.
 */
/** Declared in ./options.ts (the `auth` section). */
export type { AuthConfig } from './options.js';
export { MAX_TOKEN_TTL_S } from './options.js';
import { MAX_TOKEN_TTL_S, type AuthConfig } from './options.js';

export const TOKEN_ISSUER = 'voice-agent';
/** Audience of tokens that open a call (any transport). */
export const SESSION_AUDIENCE = 'voice-agent:session';

export type AuthErrorCode = 'missing_credentials' | 'invalid_credentials' | 'expired_token' | 'wrong_audience';

export class AuthError extends Error {
  constructor(
    readonly code: AuthErrorCode,
    message: string,
    readonly statusCode: 401 | 403 = 401,
  ) {
    super(message);
    this.name = 'AuthError';
  }
}

export interface Principal {
  kind: 'api_key' | 'token' | 'anonymous';
  /** Short, non-secret id of the API key (or of the key that minted the token): for limits and logs. */
  keyId: string;
  /** The operator's customer id, when the session token was minted with one: kept on the call record. */
  customerId?: string;
  /** Which agent the operator's backend chose for this call (recorded in the caller context). */
  agent?: string;
  /** The caller's language, when the operator's backend knows it. */
  language?: string;
  /** The operator's own call variables (src/integration/context.ts): tools may send them on. */
  vars?: Record<string, string>;
}

export function hashApiKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex');
}

/** First 8 hex chars of the key's hash: safe to log, stable per key. */
function keyIdOf(hash: string): string {
  return hash.slice(0, 8);
}

export class Auth {
  private readonly hashes: Buffer[];
  private readonly adminHashes: Buffer[];
  private readonly secret: Uint8Array;
  /** Set when no key was configured and one was generated for this run. */
  readonly generatedKey: string | null = null;

  constructor(
    private readonly config: AuthConfig,
    logger: Logger,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const hashes = [...config.apiKeyHashes];
    for (const key of (env.VOICE_AGENT_API_KEYS ?? '').split(',').map((k) => k.trim()).filter(Boolean)) hashes.push(hashApiKey(key));
    if (config.required && hashes.length === 0) {
      // Never open by default: a generated key, printed once so the operator can use it.
      const file = config.generatedKeyFile ?? null;
      this.generatedKey = (file && readKeyFile(file, logger)) || `va_${randomBytes(24).toString('base64url')}`;
      hashes.push(hashApiKey(this.generatedKey));
      if (file) writeKeyFile(file, this.generatedKey, logger);
      logger.warn(
        { generatedKey: this.generatedKey, ...(file ? { keyFile: path.resolve(file) } : {}) },
        'no API key configured (auth.apiKeyHashes or VOICE_AGENT_API_KEYS): using a generated one',
      );
    }
    if (!config.required) logger.warn('authentication is disabled (auth.required=false): every entry point is open');
    this.hashes = hashes.map((h) => Buffer.from(h.toLowerCase(), 'hex'));
    const adminHashes = [...(config.adminKeyHashes ?? [])];
    for (const key of (env.VOICE_AGENT_ADMIN_KEYS ?? '').split(',').map((k) => k.trim()).filter(Boolean)) adminHashes.push(hashApiKey(key));
    this.adminHashes = adminHashes.map((h) => Buffer.from(h.toLowerCase(), 'hex'));
    const secret = config.tokenSecret ?? env.VOICE_AGENT_TOKEN_SECRET;
    this.secret = secret ? new TextEncoder().encode(secret) : randomBytes(32);
  }

  get required(): boolean {
    return this.config.required;
  }

  /** The key's id if it is valid. Constant-time against each stored hash. */
  verifyApiKey(key: string): Principal | null {
    const digest = Buffer.from(hashApiKey(key), 'hex');
    let match: Buffer | null = null;
    for (const hash of this.hashes) if (hash.length === digest.length && timingSafeEqual(hash, digest)) match = hash;
    return match ? { kind: 'api_key', keyId: keyIdOf(match.toString('hex')) } : null;
  }

  /** The admin key's id (`admin:` + 8 hex) if `key` is an admin key. Constant-time against each stored hash. */
  verifyAdminKey(key: string): Principal | null {
    const digest = Buffer.from(hashApiKey(key), 'hex');
    let match: Buffer | null = null;
    for (const hash of this.adminHashes) if (hash.length === digest.length && timingSafeEqual(hash, digest)) match = hash;
    return match ? { kind: 'api_key', keyId: `admin:${keyIdOf(match.toString('hex'))}` } : null;
  }

  async mintToken(
    principal: Principal,
    options: { ttlS?: number; audience?: string; customerId?: string; agent?: string; language?: string; vars?: Record<string, string> } = {},
  ): Promise<{ token: string; expiresAt: number }> {
    const ttl = Math.max(1, Math.min(options.ttlS ?? this.config.tokenTtlS, MAX_TOKEN_TTL_S));
    const expiresAt = Math.floor(Date.now() / 1000) + ttl;
    const token = await new SignJWT({
      kid: principal.keyId,
      ...(options.customerId ? { cid: options.customerId } : {}),
      ...(options.agent ? { agt: options.agent } : {}),
      ...(options.language ? { lng: options.language } : {}),
      ...(options.vars && Object.keys(options.vars).length > 0 ? { vars: options.vars } : {}),
    })
      .setProtectedHeader({ alg: 'HS256' })
      .setIssuer(TOKEN_ISSUER)
      .setAudience(options.audience ?? SESSION_AUDIENCE)
      .setSubject(principal.keyId)
      .setIssuedAt()
      .setExpirationTime(expiresAt)
      .sign(this.secret);
    return { token, expiresAt };
  }

  async verifyToken(token: string, audience = SESSION_AUDIENCE): Promise<Principal> {
    try {
      const { payload } = await jwtVerify(token, this.secret, { issuer: TOKEN_ISSUER, audience, algorithms: ['HS256'] });
      return {
        kind: 'token',
        keyId: typeof payload.sub === 'string' ? payload.sub : 'unknown',
        ...(typeof payload.cid === 'string' ? { customerId: payload.cid } : {}),
        ...(typeof payload.agt === 'string' ? { agent: payload.agt } : {}),
        ...(typeof payload.lng === 'string' ? { language: payload.lng } : {}),
        ...(stringRecord(payload.vars) ? { vars: payload.vars } : {}),
      };
    } catch (err) {
      if (err instanceof joseErrors.JWTExpired) throw new AuthError('expired_token', 'session token has expired');
      if (err instanceof joseErrors.JWTClaimValidationFailed && err.claim === 'aud') throw new AuthError('wrong_audience', 'token is not valid for this endpoint', 403);
      throw new AuthError('invalid_credentials', 'invalid session token');
    }
  }

  /**
   * Authenticate a request to open a call: `Authorization: Bearer <API key or token>`, or `?token=<session
   * token>` (browsers cannot set headers on WebSockets). An API key in the URL is refused: URLs end up in proxy
   * and access logs, and a key does not expire. Throws AuthError.
   */
  async authenticate(credentials: { authorization?: string; token?: string }, audience = SESSION_AUDIENCE): Promise<Principal> {
    if (!this.config.required) return { kind: 'anonymous', keyId: 'anonymous' };
    const bearer = /^Bearer\s+(.+)$/i.exec(credentials.authorization ?? '')?.[1]?.trim();
    const presented = bearer ?? credentials.token;
    if (!presented) throw new AuthError('missing_credentials', 'missing credentials: send "Authorization: Bearer <key or token>" or ?token=');
    if (!bearer) {
      if (presented.split('.').length === 3) return this.verifyToken(presented, audience);
      throw new AuthError('invalid_credentials', '?token= takes a session token only (mint one with POST /v1/tokens); send an API key as "Authorization: Bearer", never in a URL');
    }
    const byKey = this.verifyApiKey(presented);
    if (byKey) return byKey;
    // JWTs have three dot-separated parts; anything else is a wrong key.
    if (presented.split('.').length === 3) return this.verifyToken(presented, audience);
    throw new AuthError('invalid_credentials', 'invalid API key');
  }
}

/** Signed by us, but checked anyway: only string → string reaches a session. */
function stringRecord(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}

/** A generated key kept from an earlier run, if the file holds one. */
function readKeyFile(file: string, logger: Logger): string | undefined {
  try {
    const key = readFileSync(file, 'utf8').trim();
    if (/^va_[A-Za-z0-9_-]{32}$/.test(key)) return key;
    logger.warn({ keyFile: file }, 'generated key file does not hold a key: replacing it');
  } catch {
    // Absent: first run.
  }
  return undefined;
}

function writeKeyFile(file: string, key: string, logger: Logger): void {
  try {
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, `${key}\n`, { mode: 0o600 });
  } catch (err) {
    logger.warn({ err, keyFile: file }, 'cannot keep the generated key in a file: it lasts for this run only');
  }
}
