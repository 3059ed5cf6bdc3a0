import type { ProviderCapabilities } from '../capabilities.js';
import type { ChatMessage, LlmEvent, LlmProvider, LlmRequest, ToolCall } from './types.js';

/** Says one fixed line: for service notices (shutdown, limits) that must not depend on a model. */
export class ScriptedLine implements LlmProvider {
  readonly name = 'scripted';
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: false };

  constructor(private readonly line: string) {}

  async load(): Promise<void> {}

  async *stream(request: LlmRequest): AsyncIterable<LlmEvent> {
    if (request.signal.aborted) return;
    yield { type: 'text', text: this.line };
    yield { type: 'done', finishReason: 'stop' };
  }
}

/** One scripted turn: words to say and tool calls to make. */
export interface ScriptedTurn {
  text?: string;
  toolCalls?: ToolCall[];
}

/**
 * A stand-in for a language model whose every turn is computed by a function of the conversation: for
 * tests of what the service does around a model (the confirmation gate against a model that calls a tool
 * without asking, masking, tool rounds), with no model weights.
 */
export class ScriptedLlm implements LlmProvider {
  readonly name = 'scripted-llm';
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: false };

  constructor(private readonly script: (messages: readonly ChatMessage[]) => ScriptedTurn) {}

  async load(): Promise<void> {}

  async *stream(request: LlmRequest): AsyncIterable<LlmEvent> {
    if (request.signal.aborted) return;
    const turn = this.script(request.messages);
    if (turn.text) yield { type: 'text', text: turn.text };
    for (const call of turn.toolCalls ?? []) yield { type: 'tool_call', call };
    yield { type: 'done', finishReason: turn.toolCalls?.length ? 'tool_calls' : 'stop' };
  }
}
