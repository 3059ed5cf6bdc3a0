/**
 * Handing a caller to a person, with context: the agent file's `handover` section (queues → targets, when a
 * person is offered), the short summary that travels with the transfer, and its encodings for SIP (REFER
 * with embedded headers, RFC 3515 §2.1 / RFC 7433 User-to-User) and TwiML (`<Dial><Sip>` / `<Number>`).
 * docs/integration.md#handover is the operator's guide.
 */
import type { Logger } from 'pino';
import { redact } from '../privacy/redact.js';
import { isRecord, jsonOrText } from '../core/guards.js';
import type { ChatMessage, LlmProvider } from '../providers/llm/types.js';

export interface HandoverConfig {
  /** Queue (or reason) name → SIP URI ("sip:cards@pbx") or E.164 number ("+441234567890"). */
  queues?: Record<string, string>;
  /** Queue used when the agent names none (default "default"). */
  defaultQueue?: string;
  /** Offer a person after this many turns the agent did not understand: in a row, or in the whole call. */
  offerAfter?: { consecutive?: number; total?: number };
  /** Longest summary in characters (default 400, 64..1000). */
  summaryMaxChars?: number;
}

export const DEFAULT_QUEUE = 'default';
const DEFAULT_SUMMARY_CHARS = 400;
const QUEUE_NAME = /^[a-z][a-z0-9_-]{0,39}$/;
const SIP_TARGET = /^sips?:[^\s<>"?;]+$/i;
const PHONE_TARGET = /^\+[1-9][0-9]{6,14}$/;

/** Checks an agent file's `handover` (untrusted JSON); `report(where, message)` for each problem. */
export function validateHandover(raw: unknown, report: (where: string, msg: string) => void): void {
  if (raw === undefined) return;
  if (!isRecord(raw)) return report('handover', 'must be an object');
  if (raw.queues !== undefined) {
    if (!isRecord(raw.queues)) report('handover.queues', 'must be an object of queue name → SIP URI or +E.164 number');
    else {
      for (const [name, target] of Object.entries(raw.queues)) {
        if (!QUEUE_NAME.test(name)) report(`handover.queues.${name}`, 'queue names are lower case [a-z0-9_-], at most 40 characters');
        if (typeof target !== 'string' || !(SIP_TARGET.test(target) || PHONE_TARGET.test(target))) {
          report(`handover.queues.${name}`, 'must be a SIP URI without headers ("sip:desk@pbx.example.com") or a +E.164 number');
        }
      }
    }
  }
  if (raw.defaultQueue !== undefined && (typeof raw.defaultQueue !== 'string' || !QUEUE_NAME.test(raw.defaultQueue))) report('handover.defaultQueue', 'must be a queue name');
  if (raw.offerAfter !== undefined) {
    if (!isRecord(raw.offerAfter)) report('handover.offerAfter', 'must be { consecutive?, total? }');
    else {
      for (const key of ['consecutive', 'total'] as const) {
        const v = raw.offerAfter[key];
        if (v !== undefined && !(typeof v === 'number' && Number.isInteger(v) && v >= 1 && v <= 20)) report(`handover.offerAfter.${key}`, 'must be an integer 1..20');
      }
    }
  }
  const max = raw.summaryMaxChars;
  if (max !== undefined && !(typeof max === 'number' && Number.isInteger(max) && max >= 64 && max <= 1000)) report('handover.summaryMaxChars', 'must be an integer 64..1000');
}

/** The queues an agent may name: those configured, plus the default one. */
export function queueNames(config: HandoverConfig | undefined): string[] {
  return [...new Set([defaultQueue(config), ...Object.keys(config?.queues ?? {})])];
}

export function defaultQueue(config: HandoverConfig | undefined): string {
  return config?.defaultQueue ?? DEFAULT_QUEUE;
}

/**
 * Where a queue's calls go: its configured target; the default queue falls back to `sip.transferTarget`
 * (configurations from before queues existed). Undefined: nowhere configured.
 */
export function targetFor(config: HandoverConfig | undefined, queue: string, legacyTarget?: string): string | undefined {
  return config?.queues?.[queue] ?? (queue === defaultQueue(config) ? legacyTarget : undefined);
}

/** What the summary is made of: all of it already masked where the call record masks it. */
export interface HandoverFacts {
  language: string;
  /** What the caller asked for: intents (rules agent) or tools the agent called. */
  intents: string[];
  /** Form slots filled so far (sensitive ones as "****"). */
  slots: Record<string, string>;
  /** The caller's last words (as the transcript shows them). */
  lastWords?: string;
  notUnderstood: number;
  /** Caller context (customer_id, number…). */
  caller: Readonly<Record<string, string>>;
}

/** Caller variables worth a person's eye, in this order; the rest stay in the webhook and call record. */
const CALLER_KEYS = ['customer_id', 'number', 'display_name', 'tier'];

export interface Handover {
  callId: string;
  queue: string;
  /** Why (the agent's own words for it, or "not_understood" when the caller accepted the offer). */
  reason?: string;
  /** SIP URI or +E.164 number; undefined when no target is configured for the queue. */
  target?: string;
  /** One line, printable, no CR/LF, at most `summaryMaxChars`. */
  summary: string;
  facts: HandoverFacts;
}

/** What a call knows when its agent transfers it. */
export interface HandoverInput {
  callId: string;
  config: HandoverConfig | undefined;
  /** `sip.transferTarget`: the default queue's target when the agent file names none. */
  legacyTarget?: string;
  /** The messages of the reply that transferred (its transfer_to_human call and result). */
  newMessages: readonly ChatMessage[];
  /** The whole conversation, already masked. */
  messages: readonly ChatMessage[];
  /** The agent, for its own view of what the caller asked for (handoverFacts), when it has one. */
  agent: Pick<LlmProvider, 'handoverFacts'>;
  language: string;
  /** The caller's last words as the transcript shows them. */
  lastWords?: string;
  notUnderstood: number;
  caller: Readonly<Record<string, string>>;
  log: Logger;
}

/**
 * The handover for a transfer: the queue its transfer_to_human result names (else the default), that queue's
 * target, and the summary (from the masked transcript and the agent's own view of what the caller asked for).
 */
export function prepareHandover(input: HandoverInput): Handover {
  const { config, newMessages, messages } = input;
  let queue = defaultQueue(config);
  let reason: string | undefined;
  const call = [...newMessages].reverse().flatMap((m) => m.toolCalls ?? []).find((c) => c.name === 'transfer_to_human');
  const result = call ? newMessages.find((m) => m.role === 'tool' && m.toolCallId === call.id) : undefined;
  const parsed = result ? jsonOrText(result.content) : undefined;
  if (isRecord(parsed) && typeof parsed.queue === 'string') queue = parsed.queue;
  if (isRecord(parsed) && typeof parsed.reason === 'string') reason = parsed.reason;
  let described: ReturnType<NonNullable<LlmProvider['handoverFacts']>> | undefined;
  try {
    described = input.agent.handoverFacts?.(messages);
  } catch (err) {
    input.log.warn({ err }, 'agent could not describe the call for the handover');
  }
  // Without the agent's own view: the tools it called stand for what the caller asked for.
  const intents =
    described?.intents ??
    [...new Set(messages.flatMap((m) => m.toolCalls ?? []).map((c) => c.name).filter((n) => n !== 'transfer_to_human' && n !== 'end_call'))];
  const facts: HandoverFacts = {
    language: input.language,
    intents,
    slots: described?.slots ?? {},
    ...(input.lastWords ? { lastWords: input.lastWords } : {}),
    notUnderstood: Math.max(input.notUnderstood, described?.notUnderstood ?? 0),
    caller: input.caller,
  };
  const target = targetFor(config, queue, input.legacyTarget);
  return { callId: input.callId, queue, ...(reason ? { reason } : {}), ...(target ? { target } : {}), summary: summarize(facts, config?.summaryMaxChars), facts };
}


/**
 * A short deterministic summary: `lang=en; asked=report_lost_card; card_last4=4111; not_understood=1;
 * customer_id=C-42; said="…"`. Card numbers and IBANs are masked as in the call record; control characters
 * go; the caller's words are cut first when it is too long.
 */
export function summarize(facts: HandoverFacts, maxChars = DEFAULT_SUMMARY_CHARS): string {
  const clean = (s: string, max: number): string => cut(redact(s.replace(/[\u0000-\u001f\u007f-\u009f]+/g, ' ').replace(/\s+/g, ' ').trim()), max);
  const parts = [`lang=${clean(facts.language, 12)}`];
  if (facts.intents.length > 0) parts.push(`asked=${facts.intents.slice(-4).map((i) => clean(i, 40)).join(',')}`);
  for (const [name, value] of Object.entries(facts.slots).slice(0, 8)) parts.push(`${clean(name, 24)}=${clean(value, 40)}`);
  parts.push(`not_understood=${facts.notUnderstood}`);
  for (const key of CALLER_KEYS) {
    const value = facts.caller[key];
    if (value) parts.push(`${key}=${clean(value, 64)}`);
  }
  let line = parts.join('; ');
  if (facts.lastWords) {
    const room = maxChars - line.length - '; said=""'.length;
    if (room >= 8) line += `; said="${clean(facts.lastWords, room).replace(/"/g, "'")}"`;
  }
  return cut(line, maxChars);
}

function cut(s: string, max: number): string {
  if (s.length <= max) return s;
  // Never split a surrogate pair: the line must stay valid UTF-8 on the wire.
  const head = s.slice(0, Math.max(0, max - 1));
  return `${/[\ud800-\udbff]$/.test(head) ? head.slice(0, -1) : head}…`;
}

/** RFC 7433 User-to-User data: our call id, hex-encoded (short enough for ISDN interworking's 128 octets). */
export function userToUser(handover: Handover): string {
  return `${Buffer.from(handover.callId, 'utf8').subarray(0, 64).toString('hex')};encoding=hex;purpose=call-id`;
}

/** The context headers, as they go on the REFER itself and on the transferee's INVITE. */
export function contextHeaders(handover: Handover): { name: string; value: string }[] {
  return [
    { name: 'X-Voice-Agent-Call-Id', value: handover.callId },
    { name: 'X-Voice-Agent-Queue', value: handover.queue },
    { name: 'X-Voice-Agent-Summary', value: handover.summary },
    { name: 'User-to-User', value: userToUser(handover) },
  ];
}

/**
 * `target` with the context as embedded URI headers (RFC 3261 §19.1.1, RFC 3515 §2.1): a caller's UA that
 * follows the REFER puts them on its INVITE to the target. Values are percent-encoded, so no `;`, `&`, `>`
 * or line break can end the header or the URI early.
 */
export function referToUri(handover: Handover): string {
  if (!handover.target) throw new Error('no transfer target');
  const query = contextHeaders(handover).map((h) => `${h.name}=${uriEscape(h.value)}`).join('&');
  return `${handover.target}?${query}`;
}

/** Percent-encodes all but RFC 3261's `unreserved` characters (hnv-unreserved is a subset we need not use). */
function uriEscape(value: string): string {
  return encodeURIComponent(value).replace(/[!'()*]/g, (c) => `%${c.charCodeAt(0).toString(16).toUpperCase()}`);
}

/**
 * TwiML for Twilio's `<Connect action>` request: dial the queue's target with the context (a SIP target gets
 * the X-headers as URI parameters, which Twilio sends as SIP headers; a phone number cannot carry them, the
 * `call.transfer` webhook does), or hang up when the agent ended the call.
 */
export function twimlFor(handover: Handover | null): string {
  const head = '<?xml version="1.0" encoding="UTF-8"?>\n<Response>';
  if (!handover?.target) return `${head}<Hangup/></Response>`;
  if (PHONE_TARGET.test(handover.target)) return `${head}<Dial><Number>${xmlEscape(handover.target)}</Number></Dial></Response>`;
  // Twilio passes URI parameters named X-… on as SIP headers of its INVITE.
  const query = contextHeaders(handover)
    .filter((h) => h.name.startsWith('X-'))
    .map((h) => `${h.name}=${uriEscape(h.value)}`)
    .join('&');
  return `${head}<Dial><Sip>${xmlEscape(`${handover.target}?${query}`)}</Sip></Dial></Response>`;
}

function xmlEscape(s: string): string {
  return s.replace(/[<>&"']/g, (c) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[c] ?? c);
}

