import { randomUUID } from 'node:crypto';
import { DEFAULT_CONTEXT_WINDOW, windowed } from './context-window.js';
import type { Logger } from 'pino';
import type { AgentConfig } from '../config.js';
import { Framer } from '../audio/framer.js';
import { AsyncQueue } from '../core/async-queue.js';
import { timedStream } from '../core/timeouts.js';
import type { ChatMessage, LlmProvider, ToolCall, ToolDefinition } from '../providers/llm/types.js';
import type { TtsProvider } from '../providers/tts/types.js';
import { ClauseSplitter } from './clause-splitter.js';
import type { SessionEvent, TurnStages } from './events.js';
import type { OutboundFrame } from './output-pacer.js';
import { realClock, type Clock } from './clock.js';

/** What the session needs from a tool registry. */
export interface ToolExecutor {
  definitions(): ToolDefinition[];
  /** `messages`: the conversation so far, for the confirmation gate of tools that change something. */
  execute(
    call: ToolCall,
    ctx: { callId: string; signal: AbortSignal; messages?: readonly ChatMessage[]; caller?: Readonly<Record<string, string>> },
  ): Promise<{ content: string; action?: 'hangup' | 'transfer' }>;
  /** The call's arguments with sensitive ones masked, as events and the conversation record them. */
  maskArguments?(call: ToolCall): string;
  /**
   * True when the session may say its "one moment" line while this call runs long (the service's own tools).
   * Absent or false: the call's wait is someone else's to fill (a realtime client running its own function).
   */
  mayHold?(call: ToolCall): boolean;
}

export interface ReplyDeps {
  callId: string;
  llm: LlmProvider;
  tts: TtsProvider;
  tools: ToolExecutor;
  agent: AgentConfig;
  logger: Logger;
  /** Caller context for the tools (src/integration/context.ts). */
  caller?: Readonly<Record<string, string>>;
  /** Time for stage measurements and the hold line's timer; the real clock when absent. */
  clock?: Clock;
  /** False: the reply is delivered as text only (a text client), never synthesized. */
  spoken?: boolean;
  /** The agent's voice per language (language tag or its primary subtag → a TTS voice name). */
  voices?: Readonly<Record<string, string>> | undefined;
}

/** Where a committed reply's events and audio go. Until a reply is committed they are held back. */
export interface ReplySink {
  event(event: SessionEvent): void;
  frame(frame: OutboundFrame): void;
  /** All audio of the reply has been produced (not necessarily played yet). */
  finished(reply: ReplyTask): void;
}

interface Segment {
  text: string;
  frames: number;
  complete: boolean;
}

export type ReplyStatus = 'running' | 'completed' | 'failed' | 'cancelled';

/**
 * One agent reply: LLM (with tool rounds) → clause splitter → TTS → 20 ms frames. It may start before the
 * caller's turn is confirmed over (preemptive); then its events and audio wait in memory until `attach()`,
 * or are thrown away by `cancel()`.
 */
export class ReplyTask {
  readonly responseId = randomUUID();
  readonly stages: Pick<TurnStages, 'llmFirstTokenMs' | 'ttsFirstAudioMs' | 'toolsMs'> = {};
  /** Messages this reply adds to the conversation (assistant tool calls, tool results, the spoken answer). */
  readonly newMessages: ChatMessage[] = [];
  readonly segments: Segment[] = [];
  status: ReplyStatus = 'running';
  action: 'hangup' | 'transfer' | undefined;
  readonly done: Promise<void>;
  /** Clock time when the reply started, for measuring how early a preemptive reply began. */
  readonly startedAtMs: number;
  /** The tool call this reply asks the caller to confirm (masked arguments), for the conversation record. */
  confirms: { name: string; arguments: string } | undefined;

  private readonly abortController = new AbortController();
  private sink: ReplySink | null = null;
  private heldEvents: SessionEvent[] = [];
  private heldFrames: OutboundFrame[] = [];
  private spokenText = '';
  /** The "one moment" line was said in this reply. */
  private heldOn = false;
  private framesProduced = 0;
  private readonly log: Logger;
  private readonly clock: Clock;

  constructor(
    private readonly deps: ReplyDeps,
    readonly turn: number,
    /** The reply's language: the LLM may change it (the caller switched language) before it speaks. */
    public language: string,
    private readonly messages: readonly ChatMessage[],
  ) {
    this.log = deps.logger.child({ responseId: this.responseId, turn });
    this.clock = deps.clock ?? realClock;
    this.startedAtMs = this.clock.now();
    this.done = this.run().catch((err: unknown) => {
      this.log.error({ err }, 'reply failed unexpectedly');
      this.status = 'failed';
    });
  }

  get signal(): AbortSignal {
    return this.abortController.signal;
  }

  get committed(): boolean {
    return this.sink !== null;
  }

  /** Audio frames produced so far (committed or held). */
  get frameCount(): number {
    return this.framesProduced;
  }

  /** Commit the reply: flush what was held and stream the rest as it comes. */
  attach(sink: ReplySink): void {
    if (this.sink || this.status === 'cancelled') return;
    this.sink = sink;
    for (const event of this.heldEvents) sink.event(event);
    for (const frame of this.heldFrames) sink.frame(frame);
    this.heldEvents = [];
    this.heldFrames = [];
    if (this.status !== 'running') sink.finished(this);
  }

  cancel(): void {
    if (this.status === 'running') this.status = 'cancelled';
    this.abortController.abort();
    this.heldEvents = [];
    this.heldFrames = [];
  }

  /** Full text of the reply (all rounds). */
  get text(): string {
    return this.spokenText;
  }

  /**
   * The part of the reply the caller actually heard, given how many of its frames were played: whole
   * segments, plus the share of words of a segment that was cut off.
   */
  heardText(framesPlayed: number): string {
    // A text reply reaches the client word by word as it is written: all of it so far was "heard".
    if (this.deps.spoken === false) return this.spokenText.trim();
    const parts: string[] = [];
    let remaining = framesPlayed;
    for (const segment of this.segments) {
      if (remaining <= 0) break;
      if (segment.frames > 0 && remaining >= segment.frames && segment.complete) {
        parts.push(segment.text);
        remaining -= segment.frames;
        continue;
      }
      const words = segment.text.split(/\s+/);
      const share = segment.frames > 0 ? Math.min(1, remaining / segment.frames) : 0;
      const heardWords = Math.floor(words.length * share);
      if (heardWords > 0) parts.push(words.slice(0, heardWords).join(' ') + '…');
      break;
    }
    return parts.join(' ');
  }

  private emit(event: SessionEvent): void {
    if (this.status === 'cancelled') return;
    if (this.sink) this.sink.event(event);
    else this.heldEvents.push(event);
  }

  private emitFrame(frame: OutboundFrame): void {
    if (this.status === 'cancelled') return;
    if (this.sink) this.sink.frame(frame);
    else this.heldFrames.push(frame);
  }

  private async run(): Promise<void> {
    const { llm, tools, agent, callId } = this.deps;
    const signal = this.abortController.signal;
    const splitter = new ClauseSplitter();
    const ttsQueue = new AsyncQueue<string>();
    const ttsDone = this.speak(ttsQueue);
    this.emit({ type: 'response.started', turn: this.turn, responseId: this.responseId });

    const conversation: ChatMessage[] = [...this.messages];
    let roundText = '';
    let failed = false;
    const llmStart = this.clock.now();
    try {
      for (let round = 0; round <= agent.maxToolRounds && !signal.aborted; round++) {
        roundText = '';
        const calls: ToolCall[] = [];
        // The last allowed round gets no tools, so the model has to answer.
        const toolList = round < agent.maxToolRounds ? tools.definitions() : [];
        // The model sees a window of the conversation (agent.contextWindow); an agent that rebuilds its state
        // from the whole conversation (the rules agent) gets all of it.
        const messages = llm.wholeConversation ? conversation : windowed(conversation, agent.contextWindow ?? DEFAULT_CONTEXT_WINDOW);
        const events = llm.stream({ messages, tools: toolList, language: this.language, signal });
        for await (const event of timedStream(events, agent.llmFirstTokenTimeoutMs, agent.llmStallTimeoutMs, 'language model', this.clock)) {
          if (signal.aborted) break;
          if (this.stages.llmFirstTokenMs === undefined && event.type !== 'done') {
            this.stages.llmFirstTokenMs = this.clock.now() - llmStart;
          }
          if (event.type === 'language') {
            // Before any audio: the TTS voice follows.
            if (this.spokenText === '') this.language = event.language;
          } else if (event.type === 'confirmation') {
            const call: ToolCall = { id: '', name: event.call.name, arguments: event.call.arguments };
            this.confirms = { name: call.name, arguments: tools.maskArguments?.(call) ?? call.arguments };
          } else if (event.type === 'text') {
            // A round after a tool call starts a new sentence: keep it apart from the words said before the call.
            const text = roundText === '' && /\S$/.test(this.spokenText) && /^\S/.test(event.text) ? ` ${event.text}` : event.text;
            roundText += event.text;
            this.spokenText += text;
            this.emit({ type: 'response.text.delta', turn: this.turn, responseId: this.responseId, text });
            for (const segment of splitter.push(event.text)) ttsQueue.push(segment);
          } else if (event.type === 'tool_call') {
            calls.push(event.call);
            const masked = tools.maskArguments?.(event.call) ?? event.call.arguments;
            this.emit({ type: 'response.tool_call', turn: this.turn, responseId: this.responseId, name: event.call.name, arguments: masked, toolCallId: event.call.id });
          }
        }
        if (calls.length === 0 || signal.aborted) break;
        // Speak what was said before the tool call ("Let me check.") while the tool runs.
        for (const segment of splitter.flush()) ttsQueue.push(segment);
        // Sensitive arguments reach the tool only; the conversation keeps them masked.
        const recorded = calls.map((c) => ({ ...c, arguments: tools.maskArguments?.(c) ?? c.arguments }));
        const assistant: ChatMessage = { role: 'assistant', content: roundText, toolCalls: recorded };
        conversation.push(assistant);
        this.newMessages.push(assistant);
        const toolStart = this.clock.now();
        for (const call of calls) {
          const running = tools.execute(call, { callId, signal, messages: conversation, ...(this.deps.caller ? { caller: this.deps.caller } : {}) });
          const result = tools.mayHold?.(call) ? await this.withHold(running, ttsQueue) : await running;
          if (result.action) this.action = result.action;
          const toolMessage: ChatMessage = { role: 'tool', content: result.content, toolCallId: call.id };
          conversation.push(toolMessage);
          this.newMessages.push(toolMessage);
        }
        this.stages.toolsMs = (this.stages.toolsMs ?? 0) + (this.clock.now() - toolStart);
      }
    } catch (err) {
      if (!signal.aborted) {
        failed = true;
        this.log.error({ err }, 'LLM failed');
        this.emit({ type: 'error', code: 'llm_failed', message: `language model failed: ${(err as Error).message}` });
        // A caller must never be left in silence: say so, in their language.
        const fallback = agent.fallbackReplies[this.language] ?? agent.fallbackReplies.en ?? 'Sorry, something went wrong.';
        for (const segment of splitter.flush()) ttsQueue.push(segment);
        ttsQueue.push(fallback);
        roundText = roundText ? `${roundText} ${fallback}` : fallback;
        this.spokenText = this.spokenText ? `${this.spokenText} ${fallback}` : fallback;
      }
    }
    for (const segment of splitter.flush()) ttsQueue.push(segment);
    ttsQueue.end();
    const ttsFailed = await ttsDone;
    if (!signal.aborted && roundText.trim()) {
      this.newMessages.push({ role: 'assistant', content: roundText.trim(), ...(this.confirms ? { confirms: this.confirms } : {}) });
    }

    if (this.status === 'running') this.status = failed || ttsFailed ? 'failed' : 'completed';
    if (this.status === 'cancelled') return;
    this.sink?.finished(this);
  }

  /**
   * A tool that takes longer than agent.toolHoldMs (an operator's system) gets a spoken "one moment" meanwhile,
   * once per reply, so the caller never sits in silence wondering whether the line dropped.
   */
  private async withHold<T>(running: Promise<T>, ttsQueue: AsyncQueue<string>): Promise<T> {
    const { toolHoldMs, toolHoldReplies } = this.deps.agent;
    if (!toolHoldMs || !toolHoldReplies || this.heldOn) return running;
    const timer = this.clock.setTimeout(() => {
      if (this.abortController.signal.aborted || this.heldOn) return;
      this.heldOn = true;
      const line = toolHoldReplies[this.language] ?? toolHoldReplies[this.language.split('-')[0]] ?? toolHoldReplies.en;
      if (!line) return;
      const text = this.spokenText && !/\s$/.test(this.spokenText) ? ` ${line} ` : `${line} `;
      this.spokenText += text;
      this.emit({ type: 'response.text.delta', turn: this.turn, responseId: this.responseId, text });
      ttsQueue.push(line);
    }, toolHoldMs);
    try {
      return await running;
    } finally {
      this.clock.clearTimeout(timer);
    }
  }

  /** TTS worker: one segment at a time, in order; returns true if any segment failed. */
  private async speak(queue: AsyncQueue<string>): Promise<boolean> {
    const { tts } = this.deps;
    const signal = this.abortController.signal;
    let failed = false;
    for await (const text of queue) {
      if (signal.aborted) break;
      if (this.deps.spoken === false) {
        this.segments.push({ text, frames: 0, complete: true });
        continue;
      }
      const segment: Segment = { text, frames: 0, complete: false };
      const index = this.segments.push(segment) - 1;
      // A framer per segment: its tail is zero-padded so segments never share a frame.
      const framer = new Framer();
      const requested = this.clock.now();
      try {
        const voice = this.deps.voices?.[this.language] ?? this.deps.voices?.[this.language.split('-')[0]];
        const chunks = tts.synthesize(text, { language: this.language, signal, ...(voice ? { voice } : {}) });
        for await (const chunk of timedStream(chunks, this.deps.agent.ttsTimeoutMs, this.deps.agent.ttsTimeoutMs, 'speech synthesis', this.clock)) {
          if (signal.aborted) break;
          if (this.stages.ttsFirstAudioMs === undefined && chunk.length > 0) {
            this.stages.ttsFirstAudioMs = this.clock.now() - requested;
          }
          for (const frame of framer.push(chunk)) this.frameOut(frame.samples, index, segment);
        }
        const tail = framer.flush();
        if (tail && !signal.aborted) this.frameOut(tail.samples, index, segment);
        segment.complete = true;
      } catch (err) {
        if (signal.aborted) break;
        failed = true;
        this.log.error({ err }, 'TTS failed');
        this.emit({ type: 'error', code: 'tts_failed', message: `speech synthesis failed: ${(err as Error).message}` });
      }
    }
    return failed;
  }

  private frameOut(samples: Int16Array, index: number, segment: Segment): void {
    if (this.framesProduced === 0) this.emit({ type: 'response.audio.started', turn: this.turn, responseId: this.responseId });
    this.framesProduced++;
    segment.frames++;
    this.emitFrame({ samples, responseId: this.responseId, segment: index });
  }
}
