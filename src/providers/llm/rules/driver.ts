/**
 * Runs a conversation in text against any LlmProvider and a tool executor the way ReplyTask does (LLM →
 * tool calls → tool results → LLM again, with the conversation given to the tools' confirmation gate),
 * without audio. Used by the dialogue tests and the scripted-dialogue benchmark.
 */
import type { ToolExecutor } from '../../../session/reply.js';
import { maskSecret, withoutHeardAs } from '../masking.js';
import type { ChatMessage, InputMeta, LlmProvider, ToolCall } from '../types.js';

export interface DriverTurn {
  /** What the agent said this turn (all rounds). */
  text: string;
  language: string;
  /** Tool calls made this turn, with their results. */
  tools: { call: ToolCall; result: string }[];
  action?: 'hangup' | 'transfer';
}

export class TextDialogue {
  readonly history: ChatMessage[] = [];
  language: string;

  constructor(
    private readonly llm: LlmProvider,
    private readonly tools: ToolExecutor,
    options: { language?: string; callId?: string; maxToolRounds?: number } = {},
  ) {
    this.language = options.language ?? 'en';
    this.callId = options.callId ?? 'text-dialogue';
    this.maxToolRounds = options.maxToolRounds ?? 3;
  }

  private readonly callId: string;
  private readonly maxToolRounds: number;

  /** The agent's opening line. */
  async open(): Promise<DriverTurn> {
    return this.reply();
  }

  /** The caller says (or types) something; the agent answers. A sensitive answer is masked as the session does. */
  async say(text: string, input: InputMeta = { source: 'text' }): Promise<DriverTurn> {
    const expectation = this.llm.expectation?.(this.history);
    const sensitive = expectation !== undefined && (this.llm.isSensitive?.(expectation) ?? false);
    this.history.push(sensitive ? { role: 'user', content: maskSecret(text), secret: text, input: withoutHeardAs(input) } : { role: 'user', content: text, input });
    return this.reply();
  }

  private async reply(): Promise<DriverTurn> {
    const turn: DriverTurn = { text: '', language: this.language, tools: [] };
    let confirms: { name: string; arguments: string } | undefined;
    for (let round = 0; round <= this.maxToolRounds; round++) {
      let text = '';
      const calls: ToolCall[] = [];
      const signal = new AbortController().signal;
      const tools = round < this.maxToolRounds ? this.tools.definitions() : [];
      for await (const ev of this.llm.stream({ messages: this.history, tools, language: this.language, signal })) {
        if (ev.type === 'text') text += ev.text;
        else if (ev.type === 'language') turn.language = ev.language;
        else if (ev.type === 'confirmation') confirms = { name: ev.call.name, arguments: this.tools.maskArguments?.({ id: '', ...ev.call }) ?? ev.call.arguments };
        else if (ev.type === 'tool_call') calls.push(ev.call);
      }
      turn.text = [turn.text, text.trim()].filter(Boolean).join(' ');
      if (calls.length === 0) break;
      const recorded = calls.map((c) => ({ ...c, arguments: this.tools.maskArguments?.(c) ?? c.arguments }));
      this.history.push({ role: 'assistant', content: text.trim(), toolCalls: recorded });
      for (const call of calls) {
        const result = await this.tools.execute(call, { callId: this.callId, signal, messages: this.history });
        if (result.action) turn.action = result.action;
        turn.tools.push({ call, result: result.content });
        this.history.push({ role: 'tool', content: result.content, toolCallId: call.id });
      }
    }
    if (turn.text) this.history.push({ role: 'assistant', content: turn.text, ...(confirms ? { confirms } : {}) });
    this.language = turn.language;
    return turn;
  }
}
