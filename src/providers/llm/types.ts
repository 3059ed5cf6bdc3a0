import type { ProviderCapabilities } from '../capabilities.js';
/** Conversation-level types shared by every LLM backend (OpenAI chat-completions shaped). */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface ToolCall {
  id: string;
  name: string;
  /** JSON-encoded arguments, as the model produced them. */
  arguments: string;
}

/** How a caller turn arrived and how sure the recogniser was. Backends that do not use it ignore it. */
export interface InputMeta {
  source: 'speech' | 'text' | 'keypad';
  /** Recogniser confidence in [0, 1], when it gives one. */
  confidence?: number;
  /** False when the words fell outside the agent's grammar (a grammar-aware recogniser says so). */
  inGrammar?: boolean;
  /**
   * The language the recogniser heard, when it tells languages apart (a grammar per language, a multilingual
   * server model): stronger evidence of the caller's language than the words alone.
   */
  language?: string;
  /**
   * Out of grammar, the sentence that fitted best when it fell just short of being understood (never set for a
   * sensitive answer): the embedded agent may ask it back ("Did you say …?"); it is never acted on as said.
   */
  heardAs?: { text: string; confidence: number };
}

export interface ChatMessage {
  role: ChatRole;
  /** For a sensitive caller turn: the masked text ("****"), which is all that transcripts, logs and other backends see. */
  content: string;
  /** User messages: recognition details. */
  input?: InputMeta;
  /**
   * User messages answering a sensitive question: the real words, kept in memory for the embedded agent
   * (which must read the value) and never written to transcripts, events, records, logs or sent to a model.
   */
  secret?: string;
  /** Assistant messages: the tool call this turn asked the caller to confirm (the tool gate requires it). */
  confirms?: { name: string; arguments: string };
  /** Assistant messages that called tools. */
  toolCalls?: ToolCall[];
  /** Tool result messages: which call they answer. */
  toolCallId?: string;
}

/** JSON Schema (a subset is enough for tool parameters). */
export type JsonSchema = { [key: string]: unknown };

export interface ToolDefinition {
  name: string;
  description: string;
  parameters: JsonSchema;
}

export interface LlmRequest {
  messages: readonly ChatMessage[];
  tools: readonly ToolDefinition[];
  /** Language the caller spoke (BCP-47 primary tag, e.g. "en", "fr"): reply in it. */
  language: string;
  /** Aborts generation (barge-in, preemptive reply discarded, call ended). */
  signal: AbortSignal;
}

export type LlmEvent =
  | { type: 'text'; text: string }
  /** The language the reply is in (the caller switched): the session speaks and listens in it from now on. */
  | { type: 'language'; language: string }
  /** This reply asks the caller to confirm this tool call; the tool runs only after their explicit yes. */
  | { type: 'confirmation'; call: { name: string; arguments: string } }
  | { type: 'tool_call'; call: ToolCall }
  | { type: 'done'; finishReason: 'stop' | 'tool_calls' | 'length' | 'cancelled' };

export interface LlmProvider {
  readonly name: string;
  /** Where its work runs and whether results stream (src/providers/capabilities.ts). */
  readonly capabilities: ProviderCapabilities;
  load(): Promise<void>;
  /**
   * Stream one assistant turn. Yields text deltas and complete tool calls, then one `done`.
   * Throws on backend failure; on abort it stops promptly (yielding `done: cancelled` or throwing AbortError).
   */
  stream(request: LlmRequest): AsyncIterable<LlmEvent>;
  /**
   * True for an agent that rebuilds its state from the whole conversation each turn (the rules agent): it is
   * sent all of it. Others (models) get `agent.contextWindow`'s window.
   */
  readonly wholeConversation?: boolean;
  close?(): Promise<void>;
  /**
   * The language a text is most likely in, for an agent that can tell (the rules agent scores its intents per
   * language); undefined when it cannot. A transport with no language of its own asks this, never the agent's class.
   */
  detectLanguage?(text: string): string | undefined;
  /**
   * What the agent waits for after this conversation ("<intent>.<slot>" or "<intent>.confirm"), so the
   * recogniser can weight that answer's grammar; undefined when nothing in particular.
   */
  expectation?(messages: readonly ChatMessage[]): string | undefined;
  /** True when the answer to that expectation is sensitive (a PIN): the session masks it everywhere. */
  isSensitive?(expectation: string): boolean;
  /**
   * What the caller asked for so far, for a transfer's summary: intents and filled slots (sensitive ones
   * masked), and the turns it understood none of (typed ones included). Undefined: the session lists the
   * tools called instead.
   */
  handoverFacts?(messages: readonly ChatMessage[]): { intents: string[]; slots: Record<string, string>; notUnderstood?: number };
}
