/**
 * Why a call was not admitted, in every wire's words. `VoiceService.openSession` throws; each transport used
 * to translate the error itself and they drifted (an unknown agent was HTTP 500 on WebRTC and close 1011 on
 * the realtime socket). One table now: a refusal the caller can act on is never reported as our fault.
 */
import type { Logger } from 'pino';
import { AgentSelectionError } from '../../agents/registry.js';
import { LimitError, NotReadyError } from '../../limits/limits.js';
import type { ErrorCode } from '../../session/events.js';

export type RefusalCode = Extract<ErrorCode, 'session_limit' | 'rate_limited' | 'unknown_agent' | 'unknown_number' | 'not_ready' | 'internal_error'>;

export interface CallRefusal {
  /** The error code the client is told. */
  code: RefusalCode;
  message: string;
  /** `policy`: the caller's key, its request or our load refused it (a warning); `fault`: something broke here. */
  kind: 'policy' | 'fault';
  /** HTTP status for a door that answers over HTTP (WebRTC offers). */
  http: number;
  /** Seconds after which trying again may succeed (HTTP Retry-After, SIP Retry-After). */
  retryAfterS?: number;
  /** WebSocket close code (RFC 6455: 1008 policy, 1013 try again later, 1011 internal error). */
  wsClose: number;
  /** SIP final response to the INVITE. */
  sip: number;
}

const TABLE: Record<RefusalCode, Omit<CallRefusal, 'code' | 'message'>> = {
  session_limit: { kind: 'policy', http: 503, retryAfterS: 5, wsClose: 1008, sip: 486 },
  rate_limited: { kind: 'policy', http: 429, retryAfterS: 10, wsClose: 1008, sip: 503 },
  unknown_agent: { kind: 'policy', http: 404, wsClose: 1008, sip: 404 },
  unknown_number: { kind: 'policy', http: 404, wsClose: 1008, sip: 404 },
  not_ready: { kind: 'policy', http: 503, retryAfterS: 5, wsClose: 1013, sip: 503 },
  // 503 rather than 500 on SIP: a proxy (Kamailio's dispatcher) tries another node.
  internal_error: { kind: 'fault', http: 500, wsClose: 1011, sip: 503 },
};

export function refusalFor(code: RefusalCode, message: string): CallRefusal {
  return { code, message, ...TABLE[code] };
}

/** A door asked while the node loads or drains: refused before anything is built for the call. */
export function notReadyRefusal(state: string): CallRefusal {
  return refusalOf(new NotReadyError(state));
}

/** What an error thrown while admitting a call means for the caller. */
export function refusalOf(err: unknown): CallRefusal {
  if (err instanceof LimitError) return refusalFor(err.code, err.message);
  if (err instanceof AgentSelectionError) return refusalFor(err.code, err.message);
  if (err instanceof NotReadyError) return refusalFor('not_ready', `models are ${err.state}; try again shortly`);
  // An internal message is not the caller's business (paths, provider names): logged, not sent.
  return refusalFor('internal_error', 'the call could not be started');
}

/** Log a refusal once, at the level its kind deserves, and count it. */
export function reportRefusal(refusal: CallRefusal, err: unknown, log: Pick<Logger, 'warn' | 'error'>, metrics: { error(code: ErrorCode): void }): void {
  metrics.error(refusal.code);
  if (refusal.kind === 'policy') log.warn({ code: refusal.code, reason: refusal.message }, 'call refused');
  else log.error({ err, code: refusal.code }, 'call could not be started');
}
