/**
 * Request signing for everything the agent sends to an operator's systems (HTTP tools, webhooks): HMAC-SHA256
 * over `${timestamp}.${body}`, hex, in `X-Agent-Signature: v1=<hex>`, the Unix timestamp (seconds) in
 * `X-Agent-Timestamp`. The receiver recomputes it with the shared secret, compares in constant time and refuses
 * a timestamp outside its replay window (default 300 s), so a captured request cannot be replayed later.
 */
import { createHmac, timingSafeEqual } from 'node:crypto';

export const SIGNATURE_HEADER = 'x-agent-signature';
export const TIMESTAMP_HEADER = 'x-agent-timestamp';
export const IDEMPOTENCY_HEADER = 'idempotency-key';
/** Replay window a receiver should apply (seconds either side of its clock). */
export const DEFAULT_REPLAY_WINDOW_S = 300;

export function signPayload(secret: string, timestamp: number, body: string): string {
  return createHmac('sha256', secret).update(`${timestamp}.${body}`, 'utf8').digest('hex');
}

/** The two signature headers for this body, signed now. */
export function signatureHeaders(secret: string, body: string, nowMs = Date.now()): Record<string, string> {
  const timestamp = Math.floor(nowMs / 1000);
  return { [TIMESTAMP_HEADER]: String(timestamp), [SIGNATURE_HEADER]: `v1=${signPayload(secret, timestamp, body)}` };
}

export type VerifyResult = { ok: true } | { ok: false; reason: 'missing' | 'malformed' | 'stale' | 'mismatch' };

/**
 * What an operator's receiver does (also used by the tests' mock services): the raw body as received, the two
 * headers, the shared secret. `stale` when the timestamp is outside the window: a replay, or a clock far off.
 */
export function verifySignature(input: {
  secret: string;
  body: string;
  timestamp: string | undefined;
  signature: string | undefined;
  windowS?: number;
  nowMs?: number;
}): VerifyResult {
  const { secret, body, timestamp, signature } = input;
  if (!timestamp || !signature) return { ok: false, reason: 'missing' };
  if (!/^\d{1,12}$/.test(timestamp) || !/^v1=[0-9a-f]{64}$/.test(signature)) return { ok: false, reason: 'malformed' };
  const ts = Number(timestamp);
  const now = Math.floor((input.nowMs ?? Date.now()) / 1000);
  if (Math.abs(now - ts) > (input.windowS ?? DEFAULT_REPLAY_WINDOW_S)) return { ok: false, reason: 'stale' };
  const expected = Buffer.from(signPayload(secret, ts, body), 'hex');
  const given = Buffer.from(signature.slice(3), 'hex');
  return expected.length === given.length && timingSafeEqual(expected, given) ? { ok: true } : { ok: false, reason: 'mismatch' };
}

/** A secret named by an env var in the config: the file never holds it. Throws with the variable's name when unset. */
export function secretFromEnv(name: string, where: string, env: NodeJS.ProcessEnv = process.env): string {
  const value = env[name];
  if (!value || value.length < 16) {
    throw new Error(`${where}: environment variable ${name} must hold the signing secret (at least 16 characters)`);
  }
  return value;
}
