/**
 * Confirmation enforced where tools execute, not by a prompt: a tool that changes something for the
 * caller (a booking, blocking a card) runs only right after the caller said yes to a question that named
 * exactly that call, whoever proposed it — the rule-based agent, or a language model that calls the tool
 * directly or is talked into it. Hang-up and transfer need it only when recognition was unsure.
 *
 * Everything is read from the conversation, so the gate holds no state: a question counts when the
 * agent's previous turn either carried `confirms` for this call (the rule-based agent's read-back) or got
 * this gate's `confirmation_required` refusal for it (a model then asks in its own words).
 */
import { DEFAULT_LEXICON, yesNo } from './rules/lexicon.js';
import { words } from './rules/values.js';
import type { ChatMessage, ToolCall } from './types.js';

export type ConfirmationPolicy = 'always' | 'when-unsure';

export const CONFIRMATION_REQUIRED = 'confirmation_required';

export type GateDecision = { allow: true } | { allow: false; error: string; message: string };

export interface GateOptions {
  /** Below this recognition confidence a caller turn is unsure (default 0.5). */
  minConfidence?: number;
}

/** `masked` is the call's arguments as the conversation records them (sensitive values masked). */
export function checkConfirmation(
  call: ToolCall,
  masked: string,
  policy: ConfirmationPolicy,
  messages: readonly ChatMessage[],
  options: GateOptions = {},
): GateDecision {
  const minConfidence = options.minConfidence ?? 0.5;
  const lastUser = findLastIndex(messages, (m) => m.role === 'user');
  const user = lastUser >= 0 ? messages[lastUser] : undefined;
  const unsure = (m: ChatMessage | undefined): boolean =>
    m?.input?.source === 'speech' && (m.input.inGrammar === false || (m.input.confidence !== undefined && m.input.confidence < minConfidence));

  if (policy === 'when-unsure' && !unsure(user)) return { allow: true };

  // One yes confirms one action: a second run of the same tool in this turn is a repeat.
  const calls = new Map<string, ToolCall>();
  for (let i = lastUser + 1; i < messages.length; i++) {
    const m = messages[i];
    for (const c of m.toolCalls ?? []) calls.set(c.id, c);
    if (m.role === 'tool' && calls.get(m.toolCallId ?? '')?.name === call.name && !isError(m.content)) {
      return refuse('already_done', `"${call.name}" already ran after the caller's last answer; it needs a new confirmation to run again.`);
    }
  }

  if (!user) return refuse(CONFIRMATION_REQUIRED, askMessage(call.name));
  const prevUser = findLastIndex(messages.slice(0, lastUser), (m) => m.role === 'user');
  const wanted = canonical(masked);
  let asked = false;
  const previousCalls = new Map<string, ToolCall>();
  for (let i = prevUser + 1; i < lastUser; i++) {
    const m = messages[i];
    if (m.role === 'assistant' && m.confirms && m.confirms.name === call.name && canonical(m.confirms.arguments) === wanted) asked = true;
    for (const c of m.toolCalls ?? []) previousCalls.set(c.id, c);
    if (m.role === 'tool' && isRefusal(m.content)) {
      const refused = previousCalls.get(m.toolCallId ?? '');
      if (refused && refused.name === call.name && canonical(refused.arguments) === wanted) asked = true;
    }
  }
  const answer = yesNo(words(user.secret ?? user.content), '', DEFAULT_LEXICON);
  if (asked && answer === 'yes' && !unsure(user)) return { allow: true };
  return refuse(CONFIRMATION_REQUIRED, askMessage(call.name));
}

function askMessage(name: string): string {
  return `"${name}" changes something for the caller: read the details back, ask them to confirm, and call it again with the same arguments only after they say yes.`;
}

function refuse(error: string, message: string): GateDecision {
  return { allow: false, error, message };
}

function isError(content: string): boolean {
  const v = parse(content);
  return typeof v === 'object' && v !== null && 'error' in v;
}

function isRefusal(content: string): boolean {
  const v = parse(content);
  return typeof v === 'object' && v !== null && (v as { error?: unknown }).error === CONFIRMATION_REQUIRED;
}

/** Same JSON value, whatever the key order or spacing. */
function canonical(json: string): string {
  const sort = (v: unknown): unknown => {
    if (Array.isArray(v)) return v.map(sort);
    if (typeof v === 'object' && v !== null) {
      return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)).map(([k, x]) => [k, sort(x)]));
    }
    return v;
  };
  const v = parse(json.trim() === '' ? '{}' : json);
  return JSON.stringify(sort(v));
}

function parse(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

function findLastIndex<T>(list: readonly T[], pred: (t: T) => boolean): number {
  for (let i = list.length - 1; i >= 0; i--) if (pred(list[i])) return i;
  return -1;
}
