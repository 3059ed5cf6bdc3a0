/** The dialogue state the engine replays each turn, and what it needs to compute it. */
import type { ToolCall } from '../types.js';
import type { LangText, RulesConfig } from './config.js';
import type { Lexicon, MessageKey } from './lexicon.js';
import type { IntentMatcher } from './matcher.js';
import type { OpeningHours } from './values.js';

/** `pending` while the agent waits for the answer to its offer of a person (after turns not understood). */
export const OFFER_PERSON = 'offer_person';

/** The expectation while the agent asks a doubtful recognition back ("Did you say …?") outside a form. */
export const ASK_BACK = 'ask_back';

export type SlotValue = string | number | boolean;

export interface FormInstance {
  /** Counts forms in the call: makes the tool call id unique per instance (idempotency). */
  id: number;
  intent: string;
  slots: Record<string, SlotValue>;
  /** What the agent last asked: a slot name, "confirm", or "change" (after a refused confirmation). */
  asking: string;
  /** Failed answers to the current question. */
  attempts: number;
  /** Failed tool outcomes (`ok: false`, e.g. a wrong PIN). */
  failures: number;
  /** The tool call was proposed; its result has not been seen yet. */
  executing: boolean;
  result?: Record<string, unknown>;
  /** The form to go on with once this one succeeds (verification first), with values already given. */
  resume?: { intent: string; slots: Record<string, SlotValue> };
}

export interface DialogueState {
  language: string;
  form?: FormInstance;
  /** Forms whose tool succeeded, oldest first. */
  done: FormInstance[];
  formCount: number;
  /** An action awaiting a yes because recognition was unsure ("did you want to end the call?"). */
  pending?: string;
  /** Words the recogniser only doubtfully heard, asked back ("Did you say …?"): a yes takes them as said. */
  doubt?: string;
  handoffs: number;
  /** Intents the caller asked for, in order (a transfer's summary). */
  asked?: string[];
  /** Turns the agent understood none of: in a row, and in the whole call (offering a person). */
  misunderstood?: { run: number; total: number };
  /** Turns not understood in the whole call (never reset: a transfer's summary). */
  notUnderstood?: number;
}

/** What the agent does this turn. */
export interface Output {
  text: string;
  language: string;
  toolCall?: ToolCall;
  /** The tool call this turn's question asks the caller to confirm (the tool gate checks it). */
  confirms?: { name: string; arguments: string };
}

export interface EngineContext {
  config: RulesConfig;
  matcher: IntentMatcher;
  lexicon: Lexicon;
  messages: Record<MessageKey, LangText>;
  /** Words each language's callers use (for telling the language of a short answer). */
  vocabulary: ReadonlyMap<string, ReadonlySet<string>>;
  now: Date;
  timeZone: string;
  hours?: OpeningHours;
}

