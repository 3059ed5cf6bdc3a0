/**
 * Who may call: a source-address allow-list (CIDRs) and optional HTTP Digest authentication (RFC 3261 §22,
 * RFC 2617 MD5 with qop=auth) for trunks that require it.
 */
import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

export interface DigestConfig {
  realm: string;
  /** user name → password. */
  users: Record<string, string>;
}

/**
 * Nodes behind one SIP proxy must share this (env VOICE_AGENT_SIP_NONCE_SECRET, ≥ 16 characters): the proxy may send
 * the answered INVITE to another node than the one that challenged it. Unset: a random key per process.
 */
export const NONCE_SECRET_ENV = 'VOICE_AGENT_SIP_NONCE_SECRET';

const md5 = (s: string) => createHash('md5').update(s).digest('hex');
const NONCE_TTL_MS = 5 * 60_000;
/** Wrong answers one source address may give per window before it is refused without a challenge. */
const MAX_FAILURES = 5;
const FAILURE_WINDOW_MS = 60_000;
/** Bound on the per-source and per-nonce tables (a flood of sources must not grow memory without end). */
const MAX_TRACKED = 10_000;

/**
 * Stateless nonces: a timestamp signed with a key (shared by the nodes of a cluster, see NONCE_SECRET_ENV), so any
 * nonce one of them issued can be checked without remembering it, and old ones are refused as stale. The nonce-count
 * replay table is per node: a captured response could be replayed once on each other node within the nonce's life.
 */
export class DigestAuth {
  private readonly key: Uint8Array;
  /** Wrong answers per source address in the current window. */
  private readonly failures = new Map<string, { count: number; since: number }>();
  /** Highest nonce count accepted per nonce: a response is good once (RFC 2617 §3.2.2 replay protection). */
  private readonly lastNc = new Map<string, { nc: number; issued: number }>();

  constructor(
    private readonly config: DigestConfig,
    env: NodeJS.ProcessEnv = process.env,
  ) {
    const shared = env[NONCE_SECRET_ENV];
    if (shared !== undefined && shared.length < 16) throw new Error(`${NONCE_SECRET_ENV} must be at least 16 characters`);
    this.key = shared ? new TextEncoder().encode(shared) : randomBytes(32);
  }

  /** Whether `source` has used up its wrong answers for now. */
  private throttled(source: string, now: number): boolean {
    const entry = this.failures.get(source);
    if (!entry) return false;
    if (now - entry.since > FAILURE_WINDOW_MS) {
      this.failures.delete(source);
      return false;
    }
    return entry.count >= MAX_FAILURES;
  }

  private failed(source: string, now: number): void {
    const entry = this.failures.get(source);
    if (entry && now - entry.since <= FAILURE_WINDOW_MS) entry.count++;
    else {
      if (this.failures.size >= MAX_TRACKED) for (const [k, v] of this.failures) if (now - v.since > FAILURE_WINDOW_MS) this.failures.delete(k);
      if (this.failures.size >= MAX_TRACKED) this.failures.delete(this.failures.keys().next().value as string);
      this.failures.set(source, { count: 1, since: now });
    }
  }

  challenge(stale = false): string {
    const ts = Date.now().toString(16);
    const sig = createHmac('sha256', this.key).update(ts).digest('hex').slice(0, 32);
    return `Digest realm="${this.config.realm}", nonce="${ts}.${sig}", algorithm=MD5, qop="auth"${stale ? ', stale=true' : ''}`;
  }

  /**
   * 'ok', 'stale' (valid signature but expired: re-challenge with stale=true), 'invalid', or 'throttled' (this
   * source gave too many wrong answers lately: refuse without a challenge). A replayed nonce count is invalid.
   */
  verify(method: string, authorization: string | undefined, source = ''): 'ok' | 'stale' | 'invalid' | 'throttled' {
    const now = Date.now();
    const address = source.replace(/^::ffff:/i, '');
    if (this.throttled(address, now)) return 'throttled';
    // No credentials yet is the normal first INVITE, not a wrong answer.
    if (!authorization || !/^digest\s/i.test(authorization)) return 'invalid';
    const verdict = this.check(method, authorization, now);
    if (verdict === 'invalid') this.failed(address, now);
    return verdict;
  }

  private check(method: string, authorization: string, now: number): 'ok' | 'stale' | 'invalid' {
    const params = parseAuthParams(authorization.replace(/^digest\s+/i, ''));
    const username = params.get('username');
    const realm = params.get('realm');
    const nonce = params.get('nonce');
    const uri = params.get('uri');
    const response = params.get('response');
    if (!username || !nonce || !uri || !response || realm !== this.config.realm) return 'invalid';
    const algorithm = params.get('algorithm');
    if (algorithm && algorithm.toUpperCase() !== 'MD5') return 'invalid';
    const password = Object.prototype.hasOwnProperty.call(this.config.users, username) ? this.config.users[username] : undefined;
    if (password === undefined) return 'invalid';
    const [ts, sig] = nonce.split('.');
    if (!ts || !sig) return 'invalid';
    const expected = createHmac('sha256', this.key).update(ts).digest('hex').slice(0, 32);
    if (!safeEqual(sig, expected)) return 'invalid';
    const ha1 = md5(`${username}:${this.config.realm}:${password}`);
    const ha2 = md5(`${method}:${uri}`);
    // We challenge with qop="auth": its nonce count is what makes a captured response useless a second time.
    const qop = params.get('qop');
    const ncText = params.get('nc') ?? '';
    const cnonce = params.get('cnonce') ?? '';
    if (qop !== 'auth' || !/^[0-9a-fA-F]{8}$/.test(ncText) || !cnonce) return 'invalid';
    const wanted = md5(`${ha1}:${nonce}:${ncText}:${cnonce}:${qop}:${ha2}`);
    if (!safeEqual(response.toLowerCase(), wanted)) return 'invalid';
    const issued = parseInt(ts, 16);
    if (!Number.isFinite(issued) || now - issued > NONCE_TTL_MS) return 'stale';
    const nc = parseInt(ncText, 16);
    const seen = this.lastNc.get(nonce);
    if (seen && nc <= seen.nc) return 'invalid';
    if (this.lastNc.size >= MAX_TRACKED) for (const [k, v] of this.lastNc) if (now - v.issued > NONCE_TTL_MS) this.lastNc.delete(k);
    if (this.lastNc.size >= MAX_TRACKED) this.lastNc.delete(this.lastNc.keys().next().value as string);
    this.lastNc.set(nonce, { nc, issued });
    return 'ok';
  }
}

/** `name=value, name="quoted, value"` → map (quoted values may hold commas and semicolons). */
function parseAuthParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  const re = /([A-Za-z0-9_-]+)\s*=\s*("((?:[^"\\]|\\.)*)"|[^,\s]+)/g;
  for (let m = re.exec(text); m; m = re.exec(text)) params.set(m[1].toLowerCase(), m[3] ?? m[2]);
  return params;
}

function safeEqual(a: string, b: string): boolean {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
}

/** A client-side Digest response (tests and tools that call a trunk-style endpoint). */
export function digestResponse(p: { username: string; password: string; realm: string; nonce: string; method: string; uri: string; nc: string; cnonce: string }): string {
  const ha1 = md5(`${p.username}:${p.realm}:${p.password}`);
  const ha2 = md5(`${p.method}:${p.uri}`);
  const response = md5(`${ha1}:${p.nonce}:${p.nc}:${p.cnonce}:auth:${ha2}`);
  return `Digest username="${p.username}", realm="${p.realm}", nonce="${p.nonce}", uri="${p.uri}", response="${response}", algorithm=MD5, qop=auth, nc=${p.nc}, cnonce="${p.cnonce}"`;
}
