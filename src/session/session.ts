import type { Logger } from 'pino';
import type { ServiceConfig } from '../config.js';
import type { AudioFrame } from '../audio/format.js';
import type { AsrProvider } from '../providers/asr/types.js';
import type { ChatMessage, InputMeta, LlmProvider } from '../providers/llm/types.js';
import { maskSecret, withoutHeardAs } from '../providers/llm/masking.js';
import { redact, redactPartial } from '../privacy/redact.js';
import type { TtsProvider } from '../providers/tts/types.js';
import type { VadProvider } from '../providers/vad/types.js';
import type { ErrorCode, SessionEvent } from './events.js';
import type { OutboundFrame } from './output-pacer.js';
import { ReplyTask, type ToolExecutor } from './reply.js';
import { Recogniser } from './recogniser.js';
import { ReplyPlayer, type ReplyEnd, type ReplyToPlay } from './reply-player.js';
import { TurnManager, type CallerWords } from './turn-manager.js';
import { Conversation } from './conversation.js';
import { realClock, type Clock } from './clock.js';
import { KeypadEntry } from './keypad.js';
import { isBackchannel } from './floor.js';
import { ScriptedLine } from '../providers/llm/scripted.js';
import type { MetricsSink, RecordingTap } from './ports.js';
import { refusesRecording } from '../recording/consent.js';
import { prepareHandover, type Handover, type HandoverConfig } from '../integration/handover.js';

export interface SessionProviders {
  vad: VadProvider;
  asr: AsrProvider;
  llm: LlmProvider;
  tts: TtsProvider;
  tools: ToolExecutor;
  /** The agent file's `handover` section: where transfers go (src/integration/handover.ts). */
  handover?: HandoverConfig;
  /** The agent's own voice per language (its file's `voices`); the TTS's default voice otherwise. */
  voices?: Readonly<Record<string, string>>;
}

/** Where a session's events and agent audio go: implemented by each transport. */
export interface SessionOutput {
  event(event: SessionEvent): void;
  /** One 20 ms frame of agent audio (internal format), already paced to real time. */
  audio(frame: OutboundFrame): void;
  /**
   * Optional playout feedback: frames of reply `responseId` the caller has actually heard, as the transport
   * knows it (telephony mark echoes). Undefined (or absent) falls back to the pacer's estimate.
   */
  playedFrames?(responseId: string): number | undefined;
}

export interface SessionOptions {
  callId: string;
  transport: string;
  providers: SessionProviders;
  config: ServiceConfig;
  logger: Logger;
  metrics: MetricsSink;
  output: SessionOutput;
  language?: string;
  /** The caller's audio rate on the wire before the edge resampled it (8000: a narrowband phone line). */
  inputSampleRate?: number;
  /** Called with every event, also those after close (the call record must get the last words). */
  observer?: (event: SessionEvent) => void;
  /** Records the call (config.recording): the consent line is said first and the caller's first turn may refuse it. */
  recording?: RecordingTap;
  /** What the operator's systems know about the caller (token claims, SIP headers): tools may send it on. */
  caller?: Readonly<Record<string, string>>;
  /** Which agent answers this call and its version (src/agents): its rules, tools and grammars are in `providers`. */
  agent?: { name: string; version: string };
  /** Time and timers for turn logic and pacing (tests pass a FakeClock); the real clock when absent. */
  clock?: Clock;
  /** 'text': replies are sent as text events only, never synthesized (a chat client, a text-only device). */
  replies?: 'audio' | 'text';
}

/** One line of the call's transcript, kept for the call record. */
export interface TranscriptEntry {
  role: 'caller' | 'agent';
  turn: number;
  text: string;
  language: string;
  atMs: number;
  status?: 'completed' | 'interrupted' | 'failed';
}

/**
 * One call, composed: the Recogniser (caller audio → turn signals) reports to the TurnManager (turns,
 * preemption, continuation, barge-in), which gives replies the floor through the ReplyPlayer (the reply
 * playing, paced out). The session keeps the conversation, the transcript and what is private, and is the
 * transports' one interface. Knows nothing of the transport that feeds it or of the models behind the providers.
 */
export class Session {
  readonly callId: string;
  /** The agent's conversation: change it through its methods (a transport adds or removes a client's items). */
  readonly conversation: Conversation;
  readonly transcript: TranscriptEntry[] = [];

  private readonly log: Logger;
  private readonly config: ServiceConfig;
  private readonly providers: SessionProviders;
  private readonly output: SessionOutput;
  private readonly observer: ((event: SessionEvent) => void) | undefined;
  private readonly metrics: MetricsSink;
  private readonly recogniser: Recogniser;
  private readonly player: ReplyPlayer;
  private readonly turns: TurnManager;
  private readonly keypad: KeypadEntry;
  /** What the agent waits for (from the LLM provider), and whether that answer is sensitive (masked everywhere). */
  private expectation: string | undefined;
  private expectingSensitive = false;
  private closed = false;
  private readonly recording: RecordingTap | undefined;
  /** Caller context (token claims, SIP headers), read-only for the call's tools. */
  readonly caller: Readonly<Record<string, string>>;
  readonly agent: { readonly name: string; readonly version: string } | undefined;
  /** The consent line was said and the caller has not answered it yet. */
  private consentPending = false;
  private readonly clock: Clock;
  /** Replies are synthesized (false: text only, options.replies). */
  private readonly spoken: boolean;
  private readonly startedAt: number;
  /** When the caller last sent anything (audio, text, a digit): for the idle timeout (clock time). */
  lastInputMs: number;
  /** Caller turns the agent understood none of (transcript.final understood:false). */
  private notUnderstood = 0;
  /** The transfer the agent made, once its last words have played (transports and the service read it). */
  handover: Handover | null = null;

  constructor(options: SessionOptions) {
    this.callId = options.callId;
    this.clock = options.clock ?? realClock;
    this.spoken = options.replies !== 'text';
    this.startedAt = this.clock.now();
    this.lastInputMs = this.startedAt;
    this.keypad = new KeypadEntry(this.clock, options.config.turn.dtmfTimeoutMs, (keys) =>
      this.submitText(`DTMF: ${keys.split('').join(' ')}`, this.language, { source: 'keypad' }),
    );
    this.caller = Object.freeze({ ...(options.caller ?? {}) });
    this.agent = options.agent ? Object.freeze({ ...options.agent }) : undefined;
    this.config = options.config;
    this.providers = options.providers;
    this.output = options.output;
    this.observer = options.observer;
    this.metrics = options.metrics;
    this.log = options.logger;
    this.recording = options.recording;
    this.conversation = new Conversation(options.config.agent.systemPrompt);
    const language = options.language ?? options.config.agent.defaultLanguage;
    this.player = new ReplyPlayer({
      hooks: {
        event: (event) => this.emit(event),
        frame: (frame, playoutAtMs) => this.agentFrame(frame, playoutAtMs),
        playedFrames: (responseId) => this.output.playedFrames?.(responseId),
        finished: (reply, heardText, spoken, status) => this.replyFinished(reply, heardText, spoken, status),
      },
      clock: this.clock,
      leadMs: options.config.audioOut.leadMs,
      metrics: this.metrics,
      logger: this.log,
      redact: options.config.privacy.redact,
    });
    // The recogniser reports to the turn manager, which reads the recogniser back: built in turn, joined here.
    this.recogniser = new Recogniser({
      vad: options.providers.vad,
      asr: options.providers.asr,
      turn: options.config.turn,
      logger: this.log,
      hooks: {
        onEnergyOnset: () => this.turns.onEnergyOnset(),
        onSignal: (signal) => this.turns.onSignal(signal),
        onSpeechAudio: () => this.turns.onSpeechAudio(),
        onFrameProcessed: () => this.turns.onFrameProcessed(),
        onPartial: (partial) => this.turns.onPartial(partial),
        onError: (err) => this.fail('internal_error', 'audio processing failed', err),
      },
      clock: this.clock,
      language,
      // A language chosen for the call (query parameter, dialled number) is not re-detected per turn.
      languageFixed: options.language !== undefined,
      ...(options.inputSampleRate ? { sourceSampleRate: options.inputSampleRate } : {}),
    });
    const languages = options.providers.asr.languages;
    this.turns = new TurnManager({
      turn: options.config.turn,
      clock: this.clock,
      logger: this.log,
      recogniser: this.recogniser,
      player: this.player,
      language,
      // The recogniser tells the caller's languages apart (several grammars, or a multilingual model).
      detectsLanguage: languages.length > 1 || languages.includes('*'),
      hooks: {
        event: (event) => this.emit(event),
        fail: (code, message, err) => {
          this.fail(code, message, err);
          // A caller must never be left in silence (the LLM's failure says so too): the turn was not heard.
          if (code === 'asr_failed') void this.sayLine(this.lineFor(this.config.agent.fallbackReplies));
        },
        partial: (turn, text, heard) => {
          if (!this.expectingSensitive) this.emit({ type: 'transcript.partial', turn, text: redactPartial(text, this.config.privacy.redact), language: heard });
        },
        prepareReply: (turn, heard, text, input) => this.startReply(turn, heard, text, input),
        callerSaid: (words) => this.callerSaid(words),
        addUser: (text, input) => this.addUser(text, input),
        forgetUser: (text) => this.conversation.remove('user', text),
      },
    });
    if (this.recording) {
      // Before anything else the caller hears that the call is recorded and how to refuse.
      this.consentPending = true;
      const line = this.lineFor(this.config.recording.consentLine);
      this.turns.enqueue(async () => {
        void this.sayLine(line, { notice: true });
      });
    }
  }

  /** Inbound caller audio, one internal 20 ms frame at a time, in order. */
  pushAudio(frame: AudioFrame): void {
    if (this.closed) return;
    this.lastInputMs = this.clock.now();
    if (this.recogniser.push(frame)) this.recording?.caller(frame.samples);
  }

  /** The client says the caller's turn is over (push-to-talk release). False when no speech was heard. */
  commitInput(): boolean {
    return this.turns.commitInput();
  }

  /** Ask the transport to end the call now (idle link, policy), with the reason in the call's events. */
  hangUp(reason: string): void {
    if (this.closed) return;
    this.log.info({ reason }, 'hanging up');
    this.emit({ type: 'call.action', action: 'hangup' });
  }

  /** The client asks the agent to stop talking. */
  cancelResponse(): void {
    this.turns.interruptReply();
  }

  /** Resolves once the agent's audio so far has played at the caller (by the pacer's clock), or after `maxMs`. */
  waitForPlayout(maxMs: number): Promise<void> {
    return this.player.whenIdle(maxMs);
  }

  /** True while the agent has audio queued or playing. */
  get agentSpeaking(): boolean {
    return this.player.audible;
  }

  /** Ends the call: cancels work in flight and releases the per-call model state. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.recogniser.stop();
    this.keypad.cancel();
    this.turns.close();
    this.player.close();
    await Promise.allSettled([this.recogniser.idle, this.turns.idle]);
    this.recogniser.release();
    this.log.info({ turns: this.turns.lastTurn, durationMs: Math.round(this.clock.now() - this.startedAt) }, 'session closed');
  }

  /**
   * A caller turn that arrives as text rather than speech (keypad digits, a typed message, a realtime
   * client's text item): it interrupts the agent and is answered like a spoken turn.
   */
  submitText(text: string, language: string = this.language, options: { respond?: boolean; source?: 'text' | 'keypad' } = {}): void {
    const trimmed = text.trim();
    if (this.closed || !trimmed) return;
    this.lastInputMs = this.clock.now();
    this.turns.textTurn(trimmed, language, options.respond ?? true, options.source ?? 'text');
  }

  /**
   * Answer the conversation as it stands, without new caller words (a realtime client's response.create
   * after text items, a manual commit or a tool result). Interrupts the agent if it is talking.
   */
  respond(): void {
    if (this.closed) return;
    this.turns.respond();
  }

  /** The language the agent speaks and expects now (BCP-47 primary tag); the caller may switch it. */
  get language(): string {
    return this.turns.language;
  }

  /** The client chose the call's language (a setting, a menu): later turns are spoken and heard in it. */
  setLanguage(language: string): void {
    this.turns.language = language;
  }

  /**
   * How turns end: `auto` on the VAD's silence, or only on commitInput() (push-to-talk); `respond`: answer
   * each turn at once rather than on respond(). Without `auto` there is no automatic answer either.
   */
  setTurnDetection(options: { auto: boolean; respond: boolean }): void {
    this.turns.autoEndpoint = options.auto;
    this.turns.autoRespond = options.auto && options.respond;
  }

  /** The conversation as the agent's model gets it (read-only; change it through `conversation`). */
  get history(): readonly ChatMessage[] {
    return this.conversation.messages;
  }

  /** Replace the agent's instructions (system prompt) for the rest of the call. */
  setInstructions(instructions: string): void {
    this.conversation.setInstructions(instructions);
  }

  /**
   * A keypad digit (RFC 4733 telephone-event, a media-stream dtmf message). Digits are gathered until '#'
   * or a pause of dtmfTimeoutMs, then handed to the agent as one text turn.
   */
  pushDtmf(digit: string): void {
    if (this.closed || !/^[0-9*#A-D]$/.test(digit)) return;
    this.lastInputMs = this.clock.now();
    // A PIN typed on the keypad must not show up digit by digit in the events; nor a card number beyond its
    // first six digits (the issuer prefix PCI DSS allows shown) when cards are redacted.
    const keyedCard = (this.config.privacy.redact.includes('card') || this.config.privacy.redact.includes('digits')) && /^\d$/.test(digit) && this.keypad.pending.replace(/\D/g, '').length >= 6;
    if (!this.expectingSensitive && !keyedCard) this.emit({ type: 'dtmf.received', digit });
    this.keypad.push(digit);
  }

  /**
   * Say a fixed line, without the LLM, then ask the transport to hang up: the service's last words when
   * it shuts down (or a limit ends the call). Resolves once the line has played, or after `timeoutMs`.
   */
  async endWithNotice(line: string, timeoutMs = 10_000): Promise<void> {
    if (this.closed) return;
    await this.sayLine(line, { timeoutMs });
    this.emit({ type: 'call.action', action: 'hangup' });
  }

  /** What the agent waits for next ("<intent>.<slot>"), when it says. */
  get expecting(): string | undefined {
    return this.expectation;
  }

  /** A caller turn is final: shown (masked), logged, kept in the transcript; the consent answer is taken here. */
  private callerSaid(words: CallerWords): boolean {
    const { turn, language } = words;
    const shown = this.shownText(words.text);
    if (this.config.privacy.logTranscripts) this.log.info({ turn, text: shown, source: words.source }, 'caller said');
    if (!words.understood) this.notUnderstood++;
    this.emit({ type: 'transcript.final', turn, text: shown, language, ...(words.understood ? {} : { understood: false as const }) });
    this.transcript.push({ role: 'caller', turn, text: shown, language, atMs: Date.now() });
    return this.answerConsent(words.text, language);
  }

  /** The caller's first turn after the consent line: true when it refused the recording (and was answered). */
  private answerConsent(text: string, language: string): boolean {
    if (!this.consentPending || !this.recording) return false;
    this.consentPending = false;
    const refused = refusesRecording(text, language);
    this.recording.consent(!refused);
    if (!refused) return false;
    this.turns.interruptReply();
    void this.sayLine(this.lineFor(this.config.recording.refusedLine, language), { notice: true });
    return true;
  }

  private lineFor(lines: Record<string, string>, language = this.language): string {
    return lines[language] ?? lines[language.split('-')[0]] ?? lines.en ?? Object.values(lines)[0] ?? '';
  }

  /** Say a fixed line without the LLM; resolves once it has played, or after `timeoutMs`. */
  private async sayLine(line: string, options: { timeoutMs?: number; notice?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.turns.interruptReply();
    this.turns.dropPrepared();
    const { tts } = this.providers;
    const noTools: ToolExecutor = { definitions: () => [], execute: async () => ({ content: '{}' }) };
    const turn = this.turns.lastTurn;
    const task = new ReplyTask(
      { callId: this.callId, llm: new ScriptedLine(line), tts, tools: noTools, agent: this.config.agent, logger: this.log, clock: this.clock, spoken: this.spoken, voices: this.providers.voices },
      turn,
      this.language,
      [],
    );
    const played = this.player.whenFinished(options.timeoutMs ?? 10_000);
    // A line is not a caller turn answered: it reports no turn metrics.
    this.player.play({ task, turn, userText: '', lastVoicedMs: this.clock.now(), stages: {}, preemptive: false, discardedPreemptive: 0, measured: false, notice: options.notice });
    await played;
  }

  private startReply(turn: number, language: string, userText: string | null, input: InputMeta): ReplyTask {
    const { llm, tts, tools } = this.providers;
    const history = this.conversation.messages;
    const messages: ChatMessage[] = userText === null ? [...history] : [...history, this.userMessage(userText, input)];
    return new ReplyTask({ callId: this.callId, llm, tts, tools, agent: this.config.agent, logger: this.log, caller: this.caller, clock: this.clock, spoken: this.spoken, voices: this.providers.voices }, turn, language, messages);
  }

  /** A frame of agent audio leaving for the caller: recorded, the echo guard's reference, and the transport's. */
  private agentFrame(frame: OutboundFrame, playoutAtMs: number): void {
    this.recording?.agent(frame.samples);
    // Echo follows playout, not the send burst ahead of it.
    this.recogniser.agentAudio(frame.samples, playoutAtMs);
    this.output.audio(frame);
  }

  /** Record the reply in the conversation: only what the caller heard, plus the tool calls that ran. */
  private replyFinished(reply: ReplyToPlay, heardText: string, spoken: string, status: ReplyEnd): void {
    for (const message of reply.notice ? [] : reply.task.newMessages) {
      if (message.role === 'assistant' && !message.toolCalls) continue;
      this.conversation.addToolRound(message);
    }
    if (spoken) {
      if (this.config.privacy.logTranscripts) this.log.info({ turn: reply.turn, text: spoken, status }, 'agent said');
      // A confirmation question counts once the caller heard it (a "yes" over its last words is common).
      const confirms = reply.task.confirms && (status === 'completed' || heardMostOf(heardText, reply.task.text)) ? reply.task.confirms : undefined;
      if (!reply.notice) this.conversation.addHeard(spoken, confirms);
      this.transcript.push({ role: 'agent', turn: reply.turn, text: spoken, language: reply.task.language, atMs: Date.now(), status });
    }
    // The caller switched language: speak and listen in it from now on.
    this.turns.language = reply.task.language;
    // A reply cut before a word of it was heard changes nothing the agent waits for: when its caller words were carried
    // into the turn going on (continuation), that turn is still answering the question the reply would have asked.
    if (spoken || status !== 'interrupted') this.updateExpectation();
    // Hang up or transfer only once the caller has heard the goodbye.
    if (status === 'completed' && reply.task.action) {
      if (reply.task.action === 'transfer') {
        this.handover = this.prepareHandover(reply.task.newMessages);
        this.emit({ type: 'call.action', action: 'transfer', queue: this.handover.queue });
      } else {
        this.emit({ type: 'call.action', action: reply.task.action });
      }
    }
  }

  /** The transfer the agent just made, with its context (integration/handover.ts). */
  private prepareHandover(newMessages: readonly ChatMessage[]): Handover {
    return prepareHandover({
      callId: this.callId,
      config: this.providers.handover,
      legacyTarget: this.config.sip.transferTarget,
      newMessages,
      messages: this.conversation.messages,
      agent: this.providers.llm,
      language: this.language,
      lastWords: [...this.transcript].reverse().find((t) => t.role === 'caller' && t.text)?.text,
      notUnderstood: this.notUnderstood,
      caller: this.caller,
      log: this.log,
    });
  }

  /** Ask the agent what it waits for now, tell the recogniser, and mask the answer if it is sensitive. */
  private updateExpectation(): void {
    const llm = this.providers.llm;
    let expectation: string | undefined;
    try {
      expectation = llm.expectation?.(this.conversation.messages);
    } catch (err) {
      this.log.warn({ err }, 'agent expectation failed');
    }
    this.expectation = expectation;
    this.expectingSensitive = expectation !== undefined && (llm.isSensitive?.(expectation) ?? false);
    this.recogniser.expect(expectation);
    this.recording?.sensitive(this.expectingSensitive);
    this.log.debug({ expectation, sensitive: this.expectingSensitive }, 'agent expects');
  }

  private addUser(text: string, input: InputMeta): void {
    const message = this.userMessage(text, input);
    this.conversation.addUser(message.content, input, message.secret);
    // The agent's question follows from these words: listen for its answer already while it is asked, since a
    // caller often answers over it, or goes on with a request they had paused in ("… for six people | tomorrow").
    this.updateExpectation();
  }

  /** A caller turn as the conversation keeps it: masked (with the words kept aside for the agent) when sensitive. */
  private userMessage(text: string, given: InputMeta): ChatMessage {
    const input = this.expectingSensitive ? withoutHeardAs(given) : given;
    const shown = this.shownText(text);
    if (shown === text) return { role: 'user', content: text, input };
    return { role: 'user', content: shown, secret: text, input };
  }

  /** A caller's words as everything but the embedded agent sees them: masked when sensitive, payment data redacted. */
  private shownText(text: string): string {
    return this.expectingSensitive ? maskSecret(text) : redact(text, this.config.privacy.redact);
  }

  private emit(event: SessionEvent): void {
    this.observer?.(event);
    if (this.closed && event.type !== 'error') return;
    if (event.type === 'error') this.metrics.error(event.code);
    this.output.event(event);
  }

  private fail(code: ErrorCode, message: string, err: unknown): void {
    this.log.error({ err, code }, message);
    this.emit({ type: 'error', code, message: `${message}: ${err instanceof Error ? err.message : String(err)}` });
  }
}

/** The caller heard at least half of the reply's words. */
function heardMostOf(heard: string, full: string): boolean {
  const count = (t: string): number => t.split(/\s+/).filter(Boolean).length;
  return count(heard.replace(/…$/, '')) * 2 >= count(full);
}

/** Kept here for the modules that import it from the session. */
export { isBackchannel };
