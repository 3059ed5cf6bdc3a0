/** Conversation-level types shared by every LLM backend (OpenAI chat-completions shaped). */
export type ChatRole = 'system' | 'user' | 'assistant' | 'tool';

export interface ToolCall {
  id: string;
  name: string;
  /** JSON-encoded arguments, as the model produced them. */
  arguments: string;
}

export interface ChatMessage {
  role: ChatRole;
  content: string;
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
  | { type: 'tool_call'; call: ToolCall }
  | { type: 'done'; finishReason: 'stop' | 'tool_calls' | 'length' | 'cancelled' };

export interface LlmProvider {
  readonly name: string;
  load(): Promise<void>;
  /**
   * Stream one assistant turn. Yields text deltas and complete tool calls, then one `done`.
   * Throws on backend failure; on abort it stops promptly (yielding `done: cancelled` or throwing AbortError).
   */
  stream(request: LlmRequest): AsyncIterable<LlmEvent>;
  close?(): Promise<void>;
}
