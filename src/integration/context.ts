/**
 * Caller context: what the operator's systems already know about a call (a customer id from their backend's
 * session token, the SIP caller's number and X-headers) as flat string variables. Tools send them on
 * (`{caller.customer_id}` in a tool's headers or `send` fields); webhooks carry them in call.started.
 * Everything here comes from outside, so every name and value is checked and bounded.
 */
import type { SipRequest } from '../transports/sip/message.js';
import { header, parseNameAddr } from '../transports/sip/message.js';

/** name → value; names are lower-case `[a-z][a-z0-9_]*`. */
export type CallerVars = Readonly<Record<string, string>>;

export const MAX_CALLER_VARS = 16;
export const MAX_VAR_NAME = 40;
export const MAX_VAR_VALUE = 256;
export const VAR_NAME_PATTERN = '^[a-z][a-z0-9_]{0,39}$';
const VAR_NAME = new RegExp(VAR_NAME_PATTERN);

/** Names the service itself fills: token `vars` may not use them (a caller's page must not pose as the backend's claim). */
export const RESERVED_CALLER_VARS: readonly string[] = [
  'customer_id', 'agent', 'language', 'number', 'display_name', 'asserted_identity', 'to', 'request_uri', 'transport',
];

/** What a session token may carry about its call (POST /v1/tokens). */
export interface TokenClaims {
  customerId?: string;
  agent?: string;
  language?: string;
  vars?: Record<string, string>;
}

/** Problems with token `vars` (empty when fine): the route answers 400 with them. */
export function tokenVarProblems(vars: Record<string, unknown>): string[] {
  const problems: string[] = [];
  const entries = Object.entries(vars);
  if (entries.length > MAX_CALLER_VARS) problems.push(`vars: at most ${MAX_CALLER_VARS} entries`);
  for (const [k, v] of entries) {
    if (!VAR_NAME.test(k)) problems.push(`vars.${k}: name must match ${VAR_NAME_PATTERN}`);
    else if (RESERVED_CALLER_VARS.includes(k) || k.startsWith('x_')) problems.push(`vars.${k}: reserved name`);
    if (typeof v !== 'string' || v.length > MAX_VAR_VALUE) problems.push(`vars.${k}: must be a string of at most ${MAX_VAR_VALUE} characters`);
  }
  return problems;
}

export function callerFromClaims(claims: TokenClaims | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  if (!claims) return out;
  for (const [k, v] of Object.entries(claims.vars ?? {})) if (VAR_NAME.test(k) && typeof v === 'string') out[k] = bounded(v);
  if (claims.customerId) out.customer_id = bounded(claims.customerId);
  if (claims.agent) out.agent = bounded(claims.agent);
  if (claims.language) out.language = bounded(claims.language);
  return out;
}

/**
 * From an INVITE: the From user and display name, P-Asserted-Identity (the network's word for who calls,
 * RFC 3325: believe it only from trunks in sip.allowFrom), the To and Request-URI users (the dialled number),
 * and X-headers as `x_<name>` (X-Account-Id → x_account_id), at most MAX_CALLER_VARS of them.
 */
export function callerFromSip(req: SipRequest): Record<string, string> {
  const out: Record<string, string> = {};
  const user = (uri: string): string | undefined => /^(?:sips?|tel):([^@;>]+)/i.exec(uri)?.[1];
  const addr = (name: string): { display: string; uri: string } | undefined => {
    const raw = header(req, name);
    if (!raw) return undefined;
    try {
      return parseNameAddr(raw.split(',')[0]);
    } catch {
      return undefined;
    }
  };
  const from = addr('from');
  const fromUser = from && user(from.uri);
  if (fromUser) out.number = bounded(fromUser);
  if (from?.display) out.display_name = bounded(from.display);
  const pai = addr('p-asserted-identity');
  const paiUser = pai && user(pai.uri);
  if (paiUser) out.asserted_identity = bounded(paiUser);
  const to = addr('to');
  const toUser = to && user(to.uri);
  if (toUser) out.to = bounded(toUser);
  const ruri = user(req.uri);
  if (ruri) out.request_uri = bounded(ruri);
  let extra = 0;
  for (const h of req.headers) {
    if (!h.name.startsWith('x-') || extra >= MAX_CALLER_VARS) continue;
    const name = `x_${h.name.slice(2).replace(/[^a-z0-9]+/g, '_')}`.slice(0, MAX_VAR_NAME);
    if (!VAR_NAME.test(name) || out[name] !== undefined) continue;
    out[name] = bounded(h.value);
    extra++;
  }
  return out;
}

/**
 * A media stream's custom parameters (Twilio `<Parameter>`, Telnyx custom_parameters, Vonage headers), set by
 * the operator's own TwiML/TeXML/NCCO: names lower-cased to `[a-z0-9_]` (customerId → customerid), at most
 * MAX_CALLER_VARS; `from` / `caller` also give `number`.
 */
export function callerFromParameters(parameters: Readonly<Record<string, string>>): Record<string, string> {
  const out: Record<string, string> = {};
  let n = 0;
  for (const [rawName, value] of Object.entries(parameters)) {
    if (n >= MAX_CALLER_VARS || typeof value !== 'string') break;
    const name = rawName.toLowerCase().replace(/[^a-z0-9]+/g, '_').replace(/^_+|_+$/g, '').slice(0, MAX_VAR_NAME);
    // Credentials never become variables (they would reach tools and webhooks).
    if (!VAR_NAME.test(name) || name === 'transport' || /token|secret|password|api_key/.test(name)) continue;
    out[name] = bounded(value);
    n++;
  }
  const number = parameters.from ?? parameters.caller;
  if (out.number === undefined && typeof number === 'string' && /^\+?[0-9 ()-]{3,32}$/.test(number)) out.number = number;
  return out;
}

function bounded(value: string): string {
  // Control characters never reach a header or a log line.
  // eslint-disable-next-line no-control-regex
  return value.replace(/[\x00-\x1f\x7f]/g, '').slice(0, MAX_VAR_VALUE);
}

/**
 * The call's language when the number dialled fixes it (`sip.languageByNumber`): looked up by the Request-URI user,
 * else the To user, as callerFromSip names them.
 */
export function dialledLanguage(byNumber: Readonly<Record<string, string>> | undefined, caller: Readonly<Record<string, string>>): string | undefined {
  if (!byNumber) return undefined;
  for (const dialled of [caller.request_uri, caller.to]) {
    if (dialled !== undefined && Object.hasOwn(byNumber, dialled)) return byNumber[dialled];
  }
  return undefined;
}
