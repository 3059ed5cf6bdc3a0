import type { Logger } from 'pino';
import type { ServiceConfig } from '../config.js';
import type { AudioFrame } from '../audio/format.js';
import type { AsrFinal, AsrProvider } from '../providers/asr/types.js';
import type { ChatMessage, InputMeta, LlmProvider } from '../providers/llm/types.js';
import { maskSecret } from '../providers/llm/masking.js';
import { redact, redactPartial } from '../privacy/redact.js';
import type { TtsProvider } from '../providers/tts/types.js';
import type { VadProvider } from '../providers/vad/types.js';
import type { ErrorCode, SessionEvent, TurnStages } from './events.js';
import { OutputPacer, type OutboundFrame } from './output-pacer.js';
import { ReplyTask, type ReplySink, type ToolExecutor } from './reply.js';
import type { TurnSignal } from './turn-detector.js';
import { Recogniser, type RecognitionHooks } from './recogniser.js';
import { Conversation } from './conversation.js';
import { realClock, type Clock } from './clock.js';
import { KeypadEntry } from './keypad.js';
import { AGENT_HAS_FLOOR, isBackchannel, nextFloor, type FloorAction, type FloorEvent, type FloorState } from './floor.js';
import { ScriptedLine } from '../providers/llm/scripted.js';
import type { MetricsSink, RecordingTap } from './ports.js';
import { refusesRecording } from '../recording/consent.js';
import { defaultQueue, summarize, targetFor, type Handover, type HandoverConfig, type HandoverFacts } from '../integration/handover.js';

/** A turn whose sound was at least this share the agent's own echo is not the caller's. */
const ECHO_TURN_SHARE = 0.8;

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

interface OpenTurn {
  turn: number;
  /** Arrival time of the turn's first voiced frame. */
  startedAtMs: number;
  /** Final text of each ASR utterance in this turn (a preemptive finalize splits a turn in several). */
  segments: string[];
  language: string;
  lastVoicedMs: number;
  asrFinalMs?: number;
  /** True when audio reached ASR after its last finalize (so the turn's end needs another one). */
  unfinalizedSpeech: boolean;
  preemptive: ReplyTask | null;
  preemptiveInput: string;
  discardedPreemptive: number;
  /** Lowest recogniser confidence of the turn's segments, when the recogniser gives one. */
  confidence?: number;
  /** False when any segment fell outside the agent's grammar. */
  inGrammar?: boolean;
  /** The recogniser heard speech that fitted nothing the agent understands (not a noise). */
  outOfDomain?: boolean;
  /** A previous turn's words, answered on their own and cut off, were carried into this one (continuation). */
  carried?: boolean;
}

interface ActiveReply {
  task: ReplyTask;
  turn: number;
  /** The caller's words this reply answers. */
  userText: string;
  lastVoicedMs: number;
  stages: TurnStages;
  preemptive: boolean;
  discardedPreemptive: number;
  framesSent: number;
  producedAll: boolean;
  metricsSent: boolean;
  /** A service line (consent notice), kept in the transcript but not in the agent's conversation. */
  notice?: boolean;
}

/**
 * One call: VAD → turn detection → streaming ASR → reply (LLM → TTS) → paced audio out. Knows nothing of
 * the transport that feeds it or of the models behind the providers.
 */
export class Session {
  readonly callId: string;
  /** The agent's conversation: change it through its methods (a transport adds or removes a client's items). */
  readonly conversation: Conversation;
  readonly transcript: TranscriptEntry[] = [];
  private currentLanguage: string;

  private readonly log: Logger;
  private readonly config: ServiceConfig;
  private readonly providers: SessionProviders;
  private readonly output: SessionOutput;
  private readonly observer: ((event: SessionEvent) => void) | undefined;
  private readonly metrics: MetricsSink;
  private readonly recogniser: Recogniser;
  private readonly pacer: OutputPacer;
  private turnChain: Promise<void> = Promise.resolve();
  private turnCounter = 0;
  private openTurn: OpenTurn | null = null;
  private active: ActiveReply | null = null;
  /** Barge-in (floor.ts): agent audio held on a caller sound not yet known to be an interruption. */
  private floor: FloorState = AGENT_HAS_FLOOR;
  private lastPartial = '';
  private readonly keypad: KeypadEntry;
  /** What the agent waits for (from the LLM provider), and whether that answer is sensitive (masked everywhere). */
  private expectation: string | undefined;
  private expectingSensitive = false;
  /** Resolved whenever the active reply finishes (played, interrupted or failed). */
  private replyWaiters: (() => void)[] = [];
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
  /**
   * End turns on the VAD's silence (server-side turn detection). When false only commitInput() ends a turn
   * (push-to-talk, a realtime client with turn_detection null) and caller sound never barges in.
   */
  private autoEndpoint = true;
  /** Answer each caller turn at once. When false a turn only enters the conversation; respond() answers. */
  private autoRespond = true;
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
    this.currentLanguage = options.language ?? options.config.agent.defaultLanguage;
    this.log = options.logger;
    this.conversation = new Conversation(options.config.agent.systemPrompt);
    this.pacer = new OutputPacer((frame, playoutAtMs) => this.sendFrame(frame, playoutAtMs), options.config.audioOut.leadMs, () => this.onPlaybackIdle(), this.clock);
    const hooks: RecognitionHooks = {
      // Pause the agent on the first loud frames, before the VAD has even seen them.
      onEnergyOnset: () => this.callerSound('energy'),
      onSignal: (signal) => this.handleSignal(signal),
      onSpeechAudio: () => {
        if (this.openTurn) this.openTurn.unfinalizedSpeech = true;
      },
      onFrameProcessed: () => this.afterFrame(),
      onPartial: (partial) => this.onPartial(partial.text, partial.language),
      onError: (err) => this.fail('internal_error', 'audio processing failed', err),
    };
    this.recogniser = new Recogniser({
      vad: options.providers.vad,
      asr: options.providers.asr,
      turn: options.config.turn,
      logger: this.log,
      hooks,
      clock: this.clock,
      language: this.language,
      // A language chosen for the call (query parameter, dialled number) is not re-detected per turn.
      languageFixed: options.language !== undefined,
      ...(options.inputSampleRate ? { sourceSampleRate: options.inputSampleRate } : {}),
    });
    this.recording = options.recording;
    if (this.recording) {
      // Before anything else the caller hears that the call is recorded and how to refuse.
      this.consentPending = true;
      const line = this.lineFor(this.config.recording.consentLine);
      this.enqueueTurnWork(async () => {
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
    if (this.closed || !this.openTurn) return false;
    const lastVoicedMs = this.openTurn.lastVoicedMs;
    this.recogniser.resetTurn();
    this.handleSignal({ kind: 'end_of_turn', lastVoicedMs, speechMs: 0, forced: true });
    return true;
  }

  /** Ask the transport to end the call now (idle link, policy), with the reason in the call's events. */
  hangUp(reason: string): void {
    if (this.closed) return;
    this.log.info({ reason }, 'hanging up');
    this.emit({ type: 'call.action', action: 'hangup' });
  }

  /** The client asks the agent to stop talking. */
  cancelResponse(): void {
    if (this.active) this.interrupt('client', null);
  }

  /** Resolves once the agent's audio so far has played at the caller (by the pacer's clock), or after `maxMs`. */
  waitForPlayout(maxMs: number): Promise<void> {
    return this.pacer.whenIdle(maxMs);
  }

  /** True while the agent has audio queued or playing. */
  get agentSpeaking(): boolean {
    return this.pacer.active;
  }

  /** Ends the call: cancels work in flight and releases the per-call model state. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.recogniser.stop();
    this.keypad.cancel();
    this.openTurn?.preemptive?.cancel();
    if (this.active) {
      const heard = this.active.task.heardText(this.framesPlayed(this.active));
      this.finishActive(heard, 'interrupted');
    }
    this.pacer.close();
    await Promise.allSettled([this.recogniser.idle, this.turnChain]);
    this.recogniser.release();
    this.log.info({ turns: this.turnCounter, durationMs: Math.round(this.clock.now() - this.startedAt) }, 'session closed');
  }

  /** After each caller frame: confirm a barge-in, or let the agent go on after a sound that was nothing. */
  private afterFrame(): void {
    if (this.closed) return;
    const r = this.recogniser;
    // Speech that proves, now the echo path is known, to have been the agent's own voice confirms nothing.
    const inSpeech = r.inSpeech && !(this.floor.paused && this.openTurn !== null && this.isEchoTurn(this.openTurn, this.clock.now()));
    this.applyFloor({ kind: 'frame', callerActive: r.active, callerInSpeech: inSpeech, speechMs: r.speechMs, partial: this.lastPartial });
  }

  /** A caller sound while the agent talks may be the start of an interruption: pause, reversibly. */
  private callerSound(reason: 'energy' | 'vad'): void {
    // Early in the call's first reply a sound may be the line's echo: the agent then goes on until words confirm it.
    const action = this.applyFloor({ kind: 'caller_sound', agentAudible: this.pacer.active, bargeInAllowed: this.autoEndpoint, holdAudio: this.recogniser.echoSettled });
    if (action === 'pause') this.log.debug({ reason }, 'caller sound while agent speaks: agent audio paused');
  }

  /** Decide barge-in (floor.ts) and carry out what it decided. */
  private applyFloor(event: FloorEvent): FloorAction {
    const { state, action } = nextFloor(this.floor, event, this.config.turn);
    this.floor = state;
    if (action === 'pause') this.pacer.pause();
    else if (action === 'resume') this.pacer.resume();
    else if (action === 'interrupt') this.interrupt('caller', this.openTurn);
    return action;
  }

  /** The agent's audio is held on a caller sound that is not yet known to be an interruption. */
  private get tentativeBargeIn(): boolean {
    return this.floor.paused;
  }

  private handleSignal(signal: TurnSignal): void {
    switch (signal.kind) {
      case 'voice_onset':
        // Silence the agent the moment the caller makes a sound; resume if it proves to be nothing.
        this.callerSound('vad');
        break;
      case 'voice_rejected':
        this.applyFloor({ kind: 'sound_rejected' });
        break;
      case 'speech_start': {
        if (!this.openTurn) {
          this.openTurn = {
            turn: ++this.turnCounter,
            startedAtMs: signal.atMs,
            segments: [],
            language: this.language,
            lastVoicedMs: signal.atMs,
            unfinalizedSpeech: true,
            preemptive: null,
            preemptiveInput: '',
            discardedPreemptive: 0,
          };
          this.lastPartial = '';
          this.emit({ type: 'speech.started', turn: this.openTurn.turn, atMs: Math.round(signal.atMs) });
        }
        break;
      }
      case 'likely_end': {
        const turn = this.openTurn;
        if (!turn) break;
        turn.lastVoicedMs = signal.lastVoicedMs;
        if (!this.autoEndpoint || !this.autoRespond) break;
        // A grammar decoder knows "book a table for" is unfinished: finalizing it now would force the fragment
        // into some whole sentence (possibly another language's "goodbye"). Let the utterance go on.
        if (this.recogniser.sentenceIncomplete) break;
        this.enqueueTurnWork(async () => {
          await this.finalizeSegment(turn);
          if (this.closed || turn !== this.openTurn || turn.unfinalizedSpeech) return;
          const text = turn.segments.join(' ').trim();
          if (!text || this.tentativeBargeIn || this.isEchoTurn(turn)) return;
          turn.preemptiveInput = text;
          turn.preemptive = this.startReply(turn.turn, turn.language, text, this.speechInput(turn));
        });
        break;
      }
      case 'speech_resume': {
        const turn = this.openTurn;
        if (!turn) break;
        this.enqueueTurnWork(async () => {
          if (turn.preemptive) {
            turn.preemptive.cancel();
            turn.preemptive = null;
            turn.discardedPreemptive++;
            this.log.debug({ turn: turn.turn }, 'caller went on: preemptive reply discarded');
          }
        });
        break;
      }
      case 'end_of_turn': {
        const turn = this.openTurn;
        if (!turn) break;
        if (!this.autoEndpoint && !signal.forced) {
          // A pause, not the end: with manual turns only commitInput() (or maxTurnMs) ends the turn.
          turn.lastVoicedMs = signal.lastVoicedMs;
          break;
        }
        this.openTurn = null;
        turn.lastVoicedMs = signal.lastVoicedMs;
        const endpointMs = this.clock.now() - signal.lastVoicedMs;
        this.emit({ type: 'speech.stopped', turn: turn.turn, atMs: Math.round(signal.lastVoicedMs) });
        this.enqueueTurnWork(() => this.endTurn(turn, endpointMs));
        break;
      }
    }
  }

  private enqueueTurnWork(work: () => Promise<void>): void {
    this.turnChain = this.turnChain.then(work).catch((err: unknown) => this.fail('internal_error', 'turn handling failed', err));
  }

  /** Close the current ASR utterance and keep its text in the turn. */
  private async finalizeSegment(turn: OpenTurn): Promise<void> {
    if (!turn.unfinalizedSpeech) return;
    turn.unfinalizedSpeech = false;
    const started = this.clock.now();
    let final: AsrFinal;
    try {
      final = await this.recogniser.finalize();
    } catch (err) {
      this.fail('asr_failed', 'speech recognition failed', err);
      // Whatever the recogniser still holds of this utterance must not open the caller's next turn.
      this.recogniser.cancelUtterance();
      return;
    }
    turn.asrFinalMs = this.clock.now() - started;
    if (final.text.trim()) {
      turn.segments.push(final.text.trim());
      if (final.confidence !== undefined) turn.confidence = Math.min(turn.confidence ?? 1, final.confidence);
      if (final.inGrammar !== undefined) turn.inGrammar = (turn.inGrammar ?? true) && final.inGrammar;
    } else if (final.outOfDomain) {
      turn.outOfDomain = true;
      turn.inGrammar = false;
    }
    if (final.language) turn.language = final.language;
  }

  /** Most of the turn's sound was the agent's echo, judged with the echo path known at its end (echo-guard.ts). */
  private isEchoTurn(turn: OpenTurn, untilMs = turn.lastVoicedMs): boolean {
    const share = this.recogniser.echoShare(turn.startedAtMs, untilMs);
    return share !== null && share >= ECHO_TURN_SHARE;
  }

  private async endTurn(turn: OpenTurn, endpointMs: number): Promise<void> {
    if (this.closed) return;
    if (turn.unfinalizedSpeech || turn.segments.length === 0) await this.finalizeSegment(turn);
    else this.recogniser.cancelUtterance(); // only trailing silence since the preemptive finalize
    if (this.closed) return;
    if (this.isEchoTurn(turn)) {
      // The agent's own voice returned by the line: not the caller's words, and not a reason to stop talking.
      this.log.debug({ turn: turn.turn }, 'turn was the agent\'s echo: ignored');
      this.emit({ type: 'transcript.final', turn: turn.turn, text: '', language: turn.language });
      turn.preemptive?.cancel();
      this.applyFloor({ kind: 'turn_ignored' });
      return;
    }
    this.currentLanguage = turn.language;
    const ownText = turn.segments.join(' ').trim();
    // Speech the agent understood none of still gets an answer (an honest "I can help with…"), noise does not;
    // while the agent talks it is left alone, like a backchannel.
    const notUnderstood = !ownText && turn.outOfDomain === true && !this.tentativeBargeIn;
    if ((!ownText && !notUnderstood) || (this.tentativeBargeIn && isBackchannel(ownText, this.config.turn.backchannels))) {
      // Noise, or "mhm" while the agent talks: not a turn to answer.
      this.emit({ type: 'transcript.final', turn: turn.turn, text: ownText, language: turn.language });
      turn.preemptive?.cancel();
      this.applyFloor({ kind: 'turn_ignored' });
      return;
    }
    // May carry the previous turn's words into this one (the caller was only pausing).
    if (this.active) this.interrupt('caller', turn);
    const text = turn.segments.join(' ').trim();
    const input = this.speechInput(turn);
    const shown = this.shownText(text);
    if (this.config.privacy.logTranscripts) this.log.info({ turn: turn.turn, text: shown }, 'caller said');
    if (notUnderstood) this.notUnderstood++;
    this.emit({ type: 'transcript.final', turn: turn.turn, text: shown, language: turn.language, ...(notUnderstood ? { understood: false as const } : {}) });
    this.transcript.push({ role: 'caller', turn: turn.turn, text: shown, language: turn.language, atMs: Date.now() });
    if (this.answerConsent(text, turn.language)) {
      turn.preemptive?.cancel();
      return;
    }
    if (!this.autoRespond) {
      turn.preemptive?.cancel();
      this.addUser(text, input);
      return;
    }

    let task = turn.preemptive;
    const preemptive = task !== null && turn.preemptiveInput === text && task.status !== 'cancelled';
    if (!preemptive) {
      task?.cancel();
      if (task) turn.discardedPreemptive++;
      task = null;
    }
    this.answer({
      turn: turn.turn,
      language: turn.language,
      text,
      input,
      lastVoicedMs: turn.lastVoicedMs,
      stages: { endpointMs, asrFinalMs: turn.asrFinalMs },
      prepared: task,
      discardedPreemptive: turn.discardedPreemptive,
    });
  }

  /** Commit a caller turn: it enters the conversation and its reply (prepared ahead or started now) plays. */
  private answer(input: {
    turn: number;
    language: string;
    /** The caller's words; null when answering the conversation as it stands (respond()). */
    text: string | null;
    input?: InputMeta;
    lastVoicedMs: number;
    stages: TurnStages;
    prepared: ReplyTask | null;
    discardedPreemptive: number;
  }): void {
    const meta = input.input ?? { source: 'text' as const };
    const task = input.prepared ?? this.startReply(input.turn, input.language, input.text, meta);
    if (input.text !== null) this.addUser(input.text, meta);
    this.active = {
      task,
      turn: input.turn,
      userText: input.text ?? '',
      lastVoicedMs: input.lastVoicedMs,
      stages: input.stages,
      preemptive: input.prepared !== null,
      discardedPreemptive: input.discardedPreemptive,
      framesSent: 0,
      producedAll: false,
      metricsSent: false,
    };
    const sink: ReplySink = {
      event: (event) => this.emit(event),
      frame: (frame) => this.pacer.enqueue(frame),
      finished: (reply) => this.onReplyProduced(reply),
    };
    task.attach(sink);
  }

  /**
   * A caller turn that arrives as text rather than speech (keypad digits, a typed message, a realtime
   * client's text item): it interrupts the agent and is answered like a spoken turn.
   */
  submitText(text: string, language: string = this.language, options: { respond?: boolean; source?: 'text' | 'keypad' } = {}): void {
    const trimmed = text.trim();
    if (this.closed || !trimmed) return;
    this.lastInputMs = this.clock.now();
    this.enqueueTurnWork(async () => {
      if (this.closed) return;
      const respond = options.respond ?? true;
      if (respond && this.active) this.interrupt('client', null);
      const turn = ++this.turnCounter;
      const input: InputMeta = { source: options.source ?? 'text' };
      const shown = this.shownText(trimmed);
      if (this.config.privacy.logTranscripts) this.log.info({ turn, text: shown, source: input.source }, 'caller said');
      this.emit({ type: 'transcript.final', turn, text: shown, language });
      this.transcript.push({ role: 'caller', turn, text: shown, language, atMs: Date.now() });
      if (this.answerConsent(trimmed, language)) return;
      if (!respond) {
        this.addUser(trimmed, input);
        return;
      }
      this.answer({ turn, language, text: trimmed, input, lastVoicedMs: this.clock.now(), stages: {}, prepared: null, discardedPreemptive: 0 });
    });
  }

  /**
   * Answer the conversation as it stands, without new caller words (a realtime client's response.create
   * after text items, a manual commit or a tool result). Interrupts the agent if it is talking.
   */
  respond(): void {
    if (this.closed) return;
    this.enqueueTurnWork(async () => {
      if (this.closed) return;
      if (this.active) this.interrupt('client', null);
      this.answer({ turn: this.turnCounter, language: this.language, text: null, lastVoicedMs: this.clock.now(), stages: {}, prepared: null, discardedPreemptive: 0 });
    });
  }

  /** The language the agent speaks and expects now (BCP-47 primary tag); the caller may switch it. */
  get language(): string {
    return this.currentLanguage;
  }

  /** The client chose the call's language (a setting, a menu): later turns are spoken and heard in it. */
  setLanguage(language: string): void {
    this.currentLanguage = language;
  }

  /**
   * How turns end: `auto` on the VAD's silence, or only on commitInput() (push-to-talk); `respond`: answer
   * each turn at once rather than on respond(). Without `auto` there is no automatic answer either.
   */
  setTurnDetection(options: { auto: boolean; respond: boolean }): void {
    this.autoEndpoint = options.auto;
    this.autoRespond = options.auto && options.respond;
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

  /** The caller's first turn after the consent line: true when it refused the recording (and was answered). */
  private answerConsent(text: string, language: string): boolean {
    if (!this.consentPending || !this.recording) return false;
    this.consentPending = false;
    const refused = refusesRecording(text, language);
    this.recording.consent(!refused);
    if (!refused) return false;
    if (this.active) this.interrupt('client', null);
    void this.sayLine(this.lineFor(this.config.recording.refusedLine, language), { notice: true });
    return true;
  }

  private lineFor(lines: Record<string, string>, language = this.language): string {
    return lines[language] ?? lines[language.split('-')[0]] ?? lines.en ?? Object.values(lines)[0] ?? '';
  }

  /** Say a fixed line without the LLM; resolves once it has played, or after `timeoutMs`. */
  private async sayLine(line: string, options: { timeoutMs?: number; notice?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    const timeoutMs = options.timeoutMs ?? 10_000;
    if (this.active) this.interrupt('client', null);
    this.openTurn?.preemptive?.cancel();
    const { tts } = this.providers;
    const noTools: ToolExecutor = { definitions: () => [], execute: async () => ({ content: '{}' }) };
    const task = new ReplyTask(
      { callId: this.callId, llm: new ScriptedLine(line), tts, tools: noTools, agent: this.config.agent, logger: this.log, clock: this.clock, spoken: this.spoken, voices: this.providers.voices },
      this.turnCounter,
      this.language,
      [],
    );
    const played = new Promise<void>((resolve) => {
      this.replyWaiters.push(resolve);
      this.clock.setTimeout(resolve, timeoutMs).unref();
    });
    this.active = {
      task,
      turn: this.turnCounter,
      userText: '',
      lastVoicedMs: this.clock.now(),
      stages: {},
      preemptive: false,
      discardedPreemptive: 0,
      framesSent: 0,
      producedAll: false,
      metricsSent: true, // a notice is not a turn
      notice: options.notice,
    };
    task.attach({
      event: (event) => this.emit(event),
      frame: (frame) => this.pacer.enqueue(frame),
      finished: (reply) => this.onReplyProduced(reply),
    });
    await played;
  }

  private startReply(turn: number, language: string, userText: string | null, input: InputMeta = { source: 'text' }): ReplyTask {
    const { llm, tts, tools } = this.providers;
    const history = this.conversation.messages;
    const messages: ChatMessage[] = userText === null ? [...history] : [...history, this.userMessage(userText, input)];
    return new ReplyTask({ callId: this.callId, llm, tts, tools, agent: this.config.agent, logger: this.log, caller: this.caller, clock: this.clock, spoken: this.spoken, voices: this.providers.voices }, turn, language, messages);
  }

  private sendFrame(frame: OutboundFrame, playoutAtMs: number): void {
    const active = this.active;
    if (!active || frame.responseId !== active.task.responseId) return;
    active.framesSent++;
    this.recording?.agent(frame.samples);
    // Echo follows playout, not the send burst ahead of it.
    this.recogniser.agentAudio(frame.samples, playoutAtMs);
    if (!active.metricsSent) {
      active.metricsSent = true;
      const stages: TurnStages = {
        ...active.stages,
        ...active.task.stages,
        serverV2vMs: this.clock.now() - active.lastVoicedMs,
      };
      const metrics = { turn: active.turn, stages: roundStages(stages), preemptive: active.preemptive, discardedPreemptive: active.discardedPreemptive };
      this.metrics.turnCompleted(metrics);
      this.emit({ type: 'turn.metrics', turn: active.turn, metrics });
      this.log.info({ turn: active.turn, ...metrics.stages, preemptive: active.preemptive }, 'turn answered');
    }
    this.output.audio(frame);
  }

  private onReplyProduced(reply: ReplyTask): void {
    const active = this.active;
    if (!active || active.task !== reply) return;
    active.producedAll = true;
    if (!this.pacer.active) this.onPlaybackIdle();
  }

  private onPlaybackIdle(): void {
    const active = this.active;
    if (!active || !active.producedAll || this.pacer.isPaused) return;
    this.finishActive(active.task.text.trim(), active.task.status === 'failed' ? 'failed' : 'completed');
  }

  /** Frames of the active reply the caller has heard: sent, minus what is still in their playout buffer. */
  private framesPlayed(active: ActiveReply): number {
    const reported = this.output.playedFrames?.(active.task.responseId);
    if (reported !== undefined) return Math.max(0, Math.min(active.framesSent, reported));
    return Math.max(0, active.framesSent - this.pacer.framesAhead);
  }

  /**
   * Cut the agent off. When the caller resumes within `continuationWindowMs` of their previous words, they
   * were only pausing mid-thought: the previous turn's words are carried into the new turn instead of being
   * answered on their own, and the barely-started reply is dropped from the conversation.
   */
  private interrupt(by: 'caller' | 'client', newTurn: OpenTurn | null): void {
    const active = this.active;
    if (!active) return;
    const heard = active.task.heardText(this.framesPlayed(active));
    const continuation = newTurn !== null && newTurn.startedAtMs - active.lastVoicedMs <= this.config.turn.continuationWindowMs;
    active.task.cancel();
    this.pacer.clear();
    this.applyFloor({ kind: 'reply_cut' });
    this.emit({ type: 'audio.clear' });
    this.emit({ type: 'response.interrupted', turn: active.turn, responseId: active.task.responseId, heardText: redact(heard, this.config.privacy.redact) });
    this.metrics.interruption();
    this.log.info({ turn: active.turn, by, heardChars: heard.length, continuation }, 'agent interrupted');
    if (continuation && newTurn && active.userText) {
      newTurn.segments.unshift(active.userText);
      newTurn.carried = true;
      if (newTurn.preemptive) {
        newTurn.preemptive.cancel();
        newTurn.preemptive = null;
      }
      this.conversation.remove('user', active.userText);
      this.finishActive('', 'interrupted');
    } else {
      this.finishActive(heard, 'interrupted');
    }
  }

  /** Record the reply in the conversation: only what the caller heard, plus the tool calls that ran. */
  private finishActive(heardText: string, status: 'completed' | 'interrupted' | 'failed'): void {
    const active = this.active;
    if (!active) return;
    this.active = null;
    // An agent that reads a card number back: the caller heard it, the record and the model's context do not keep it.
    const spoken = redact(heardText, this.config.privacy.redact);
    this.emit({ type: 'response.done', turn: active.turn, responseId: active.task.responseId, text: spoken, status });
    for (const message of active.notice ? [] : active.task.newMessages) {
      if (message.role === 'assistant' && !message.toolCalls) continue;
      this.conversation.addToolRound(message);
    }
    if (spoken) {
      if (this.config.privacy.logTranscripts) this.log.info({ turn: active.turn, text: spoken, status }, 'agent said');
      // A confirmation question counts once the caller heard it (a "yes" over its last words is common).
      const confirms = active.task.confirms && (status === 'completed' || heardMostOf(heardText, active.task.text)) ? active.task.confirms : undefined;
      if (!active.notice) this.conversation.addHeard(spoken, confirms);
      this.transcript.push({ role: 'agent', turn: active.turn, text: spoken, language: active.task.language, atMs: Date.now(), status });
    }
    // The caller switched language: speak and listen in it from now on.
    if (active.task.language !== this.currentLanguage) this.currentLanguage = active.task.language;
    this.updateExpectation();
    // Hang up or transfer only once the caller has heard the goodbye.
    if (status === 'completed' && active.task.action) {
      if (active.task.action === 'transfer') {
        this.handover = this.prepareHandover(active.task.newMessages);
        this.emit({ type: 'call.action', action: 'transfer', queue: this.handover.queue });
      } else {
        this.emit({ type: 'call.action', action: active.task.action });
      }
    }
    for (const resolve of this.replyWaiters.splice(0)) resolve();
  }

  /**
   * The transfer the agent just made, with its context: the queue its transfer_to_human result names, that
   * queue's target, and the summary (from the transcript, already masked, and the agent's own view of what
   * the caller asked for).
   */
  private prepareHandover(newMessages: readonly ChatMessage[]): Handover {
    const config = this.providers.handover;
    let queue = defaultQueue(config);
    let reason: string | undefined;
    const call = [...newMessages].reverse().flatMap((m) => m.toolCalls ?? []).find((c) => c.name === 'transfer_to_human');
    const result = call ? newMessages.find((m) => m.role === 'tool' && m.toolCallId === call.id) : undefined;
    const parsed = result ? safeRecord(result.content) : undefined;
    if (typeof parsed?.queue === 'string') queue = parsed.queue;
    if (typeof parsed?.reason === 'string') reason = parsed.reason;
    const messages = this.conversation.messages;
    let described: ReturnType<NonNullable<LlmProvider['handoverFacts']>> | undefined;
    try {
      described = this.providers.llm.handoverFacts?.(messages);
    } catch (err) {
      this.log.warn({ err }, 'agent could not describe the call for the handover');
    }
    // Without the agent's own view: the tools it called stand for what the caller asked for.
    const intents =
      described?.intents ??
      [...new Set(messages.flatMap((m) => m.toolCalls ?? []).map((c) => c.name).filter((n) => n !== 'transfer_to_human' && n !== 'end_call'))];
    const lastWords = [...this.transcript].reverse().find((t) => t.role === 'caller' && t.text)?.text;
    const facts: HandoverFacts = {
      language: this.language,
      intents,
      slots: described?.slots ?? {},
      ...(lastWords ? { lastWords } : {}),
      notUnderstood: Math.max(this.notUnderstood, described?.notUnderstood ?? 0),
      caller: this.caller,
    };
    const target = targetFor(config, queue, this.config.sip.transferTarget);
    return { callId: this.callId, queue, ...(reason ? { reason } : {}), ...(target ? { target } : {}), summary: summarize(facts, config?.summaryMaxChars), facts };
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

  /** What the agent waits for next ("<intent>.<slot>"), when it says. */
  get expecting(): string | undefined {
    return this.expectation;
  }

  private addUser(text: string, input: InputMeta): void {
    const message = this.userMessage(text, input);
    this.conversation.addUser(message.content, input, message.secret);
  }

  /** A caller turn as the conversation keeps it: masked (with the words kept aside for the agent) when sensitive. */
  private userMessage(text: string, input: InputMeta): ChatMessage {
    const shown = this.shownText(text);
    if (shown === text) return { role: 'user', content: text, input };
    return { role: 'user', content: shown, secret: text, input };
  }

  /** A caller's words as everything but the embedded agent sees them: masked when sensitive, payment data redacted. */
  private shownText(text: string): string {
    return this.expectingSensitive ? maskSecret(text) : redact(text, this.config.privacy.redact);
  }

  /** The recogniser tells the caller's languages apart (several grammars, or a multilingual model). */
  private get asrDetectsLanguage(): boolean {
    const languages = this.providers.asr.languages;
    return languages.length > 1 || languages.includes('*');
  }

  private speechInput(turn: OpenTurn): InputMeta {
    // A previous turn carried into this one was a sentence of the grammar, and so are the new words, but never
    // their sequence: "… tomorrow see you I would like to book …" (turns glued by continuation under load) is not
    // a confident goodbye, so an action that ends or moves the call is asked back first. Pieces of one turn ("okay
    // bye bye" | "see you") are one utterance and keep their own verdicts.
    const inGrammar = turn.carried && turn.inGrammar !== undefined ? false : turn.inGrammar;
    return {
      source: 'speech',
      ...(turn.confidence !== undefined ? { confidence: turn.confidence } : {}),
      ...(inGrammar !== undefined ? { inGrammar } : {}),
      ...(this.asrDetectsLanguage ? { language: turn.language } : {}),
    };
  }

  private onPartial(text: string, heard: string): void {
    const turn = this.openTurn;
    if (!turn || this.closed) return;
    // '' : the recogniser cannot tell (a remote model that reports no language).
    const language = heard || turn.language;
    const full = [...turn.segments, text].join(' ').trim();
    if (!full || full === this.lastPartial) return;
    this.lastPartial = full;
    if (this.expectingSensitive) return;
    this.emit({ type: 'transcript.partial', turn: turn.turn, text: redactPartial(full, this.config.privacy.redact), language });
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

function roundStages(stages: TurnStages): TurnStages {
  const out: TurnStages = {};
  for (const [key, value] of Object.entries(stages) as [keyof TurnStages, number | undefined][]) {
    if (value !== undefined) out[key] = Math.round(value * 10) / 10;
  }
  return out;
}

/** The caller heard at least half of the reply's words. */
function heardMostOf(heard: string, full: string): boolean {
  const count = (t: string): number => t.split(/\s+/).filter(Boolean).length;
  return count(heard.replace(/…$/, '')) * 2 >= count(full);
}

/** Kept here for the modules that import it from the session. */
export { isBackchannel };

function safeRecord(json: string): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(json);
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  } catch {
    return undefined;
  }
}
