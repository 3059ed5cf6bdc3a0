import type { Logger } from 'pino';
import type { TurnConfig } from '../config.js';
import type { AsrFinal, AsrPartial } from '../providers/asr/types.js';
import type { InputMeta } from '../providers/llm/types.js';
import type { Clock } from './clock.js';
import type { ErrorCode, SessionEvent, TurnStages } from './events.js';
import { AGENT_HAS_FLOOR, isBackchannel, nextFloor, type FloorAction, type FloorEvent, type FloorState } from './floor.js';
import type { RecognitionHooks, Recogniser } from './recogniser.js';
import type { ReplyPlayer } from './reply-player.js';
import type { ReplyTask } from './reply.js';
import type { TurnSignal } from './turn-detector.js';

/** A turn whose sound was at least this share the agent's own echo is not the caller's. */
const ECHO_TURN_SHARE = 0.8;

/** What the turn manager reads and asks of the recogniser (recogniser.ts). */
export type TurnRecogniser = Pick<
  Recogniser,
  | 'finalize'
  | 'peek'
  | 'canPeek'
  | 'sentenceComplete'
  | 'continueUtterance'
  | 'cancelUtterance'
  | 'resetTurn'
  | 'echoShare'
  | 'echoSettled'
  | 'sentenceIncomplete'
  | 'inSpeech'
  | 'active'
  | 'speechMs'
>;

/** A peeked sentence at this confidence or more ends the turn as a complete partial does (grammarEndpoint.sureConfidence). */
export const DEFAULT_SURE_CONFIDENCE = 0.5;

/** A caller turn that is over and is the caller's: what the session records of it. */
export interface CallerWords {
  turn: number;
  text: string;
  language: string;
  source: InputMeta['source'];
  /** False: speech the agent understood none of (transcript.final understood:false). */
  understood: boolean;
}

/** What the turn manager tells the session, and asks of it: the conversation, privacy and the record are the session's. */
export interface TurnHooks {
  event(event: SessionEvent): void;
  fail(code: ErrorCode, message: string, err: unknown): void;
  /** The caller's words so far in the open turn (changed since the last call). */
  partial(turn: number, text: string, language: string): void;
  /** Start a reply to the conversation plus the caller's `text` (null: as it stands); it is held back until played. */
  prepareReply(turn: number, language: string, text: string | null, input: InputMeta): ReplyTask;
  /** A caller turn is final: show and record it. True when the session answered it itself (a refused recording). */
  callerSaid(words: CallerWords): boolean;
  /** The caller's words enter the conversation. */
  addUser(text: string, input: InputMeta): void;
  /** Forget the caller's words of a reply that was cut off before they were answered (they go on in the next turn). */
  forgetUser(text: string): void;
}

export interface TurnManagerOptions {
  turn: TurnConfig;
  clock: Clock;
  logger: Logger;
  recogniser: TurnRecogniser;
  player: ReplyPlayer;
  hooks: TurnHooks;
  /** The call's language at the start. */
  language: string;
  /** The recogniser tells the caller's languages apart: each turn's input says which it heard. */
  detectsLanguage: boolean;
}

/** The caller's turn from its first voiced frame until it is answered or dropped. */
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
  /** What such speech sounded most like, when it fell just short of being understood (AsrFinal.doubtful). */
  doubtful?: { text: string; confidence: number };
  /** A previous turn's words, answered on their own and cut off, were carried into this one (continuation). */
  carried?: boolean;
  /** Times the caller went on after a pause: a peek taken before the last one no longer describes the turn. */
  resumes: number;
}

/** A caller turn to answer now. */
interface Answer {
  turn: number;
  language: string;
  /** The caller's words; null when answering the conversation as it stands (respond()). */
  text: string | null;
  input?: InputMeta;
  lastVoicedMs: number;
  stages: TurnStages;
  prepared: ReplyTask | null;
  discardedPreemptive: number;
}

/**
 * The caller's turns and who has the floor: it turns the recogniser's signals into caller turns, prepares a
 * reply at the first pause and keeps or discards it at the end of the turn (preemption), joins words said soon
 * after an answered turn to it (continuation), applies barge-in (floor.ts) to the reply playing, and answers.
 * Turn work runs in order, one step at a time.
 */
export class TurnManager implements Omit<RecognitionHooks, 'onError'> {
  /** The language the agent speaks and expects now; the caller (or the client) may switch it. */
  language: string;
  /**
   * End turns on the VAD's silence (server-side turn detection). When false only commitInput() ends a turn
   * (push-to-talk, a realtime client with turn_detection null) and caller sound never barges in.
   */
  autoEndpoint = true;
  /** Answer each caller turn at once. When false a turn only enters the conversation; respond() answers. */
  autoRespond = true;

  private chain: Promise<void> = Promise.resolve();
  private counter = 0;
  private openTurn: OpenTurn | null = null;
  /** Barge-in (floor.ts): agent audio held on a caller sound not yet known to be an interruption. */
  private floor: FloorState = AGENT_HAS_FLOOR;
  private lastPartial = '';
  private closed = false;

  constructor(private readonly deps: TurnManagerOptions) {
    this.language = deps.language;
  }

  /** The latest turn's number (turns opened so far). */
  get lastTurn(): number {
    return this.counter;
  }

  /** Settles once the turn work queued so far has run. */
  get idle(): Promise<void> {
    return this.chain;
  }

  /** Run `work` after the turn work queued so far. */
  enqueue(work: () => Promise<void>): void {
    this.chain = this.chain.then(work).catch((err: unknown) => this.deps.hooks.fail('internal_error', 'turn handling failed', err));
  }

  // Pause the agent on the first loud frames, before the VAD has even seen them.
  onEnergyOnset(): void {
    this.callerSound('energy');
  }

  onSpeechAudio(): void {
    if (this.openTurn) this.openTurn.unfinalizedSpeech = true;
  }

  /** After each caller frame: confirm a barge-in, or let the agent go on after a sound that was nothing. */
  onFrameProcessed(): void {
    if (this.closed) return;
    const r = this.deps.recogniser;
    // Speech that proves, now the echo path is known, to have been the agent's own voice confirms nothing.
    const inSpeech = r.inSpeech && !(this.floor.paused && this.openTurn !== null && this.isEchoTurn(this.openTurn, this.deps.clock.now()));
    this.applyFloor({ kind: 'frame', callerActive: r.active, callerInSpeech: inSpeech, speechMs: r.speechMs, partial: this.lastPartial });
  }

  onPartial(partial: AsrPartial): void {
    const turn = this.openTurn;
    if (!turn || this.closed) return;
    // '' : the recogniser cannot tell (a remote model that reports no language).
    const language = partial.language || turn.language;
    const full = [...turn.segments, partial.text].join(' ').trim();
    if (!full || full === this.lastPartial) return;
    this.lastPartial = full;
    this.deps.hooks.partial(turn.turn, full, language);
  }

  onSignal(signal: TurnSignal): void {
    switch (signal.kind) {
      case 'voice_onset':
        // Silence the agent the moment the caller makes a sound; resume if it proves to be nothing.
        this.callerSound('vad');
        break;
      case 'voice_rejected':
        this.applyFloor({ kind: 'sound_rejected' });
        break;
      case 'speech_start':
        if (!this.openTurn) this.open(signal.atMs);
        break;
      case 'likely_end':
        this.likelyEnd(signal.lastVoicedMs);
        break;
      case 'long_pause': {
        const turn = this.openTurn;
        if (!turn || !this.autoEndpoint || !this.autoRespond || !this.deps.recogniser.canPeek) break;
        const resumes = turn.resumes;
        this.enqueue(() => this.peekAtPause(turn, resumes));
        break;
      }
      case 'speech_resume': {
        const turn = this.openTurn;
        if (!turn) break;
        turn.resumes++;
        this.enqueue(async () => {
          if (turn.preemptive) {
            turn.preemptive.cancel();
            turn.preemptive = null;
            turn.discardedPreemptive++;
            this.deps.logger.debug({ turn: turn.turn }, 'caller went on: preemptive reply discarded');
          }
        });
        break;
      }
      case 'end_of_turn': {
        const turn = this.openTurn;
        if (!turn) break;
        turn.lastVoicedMs = signal.lastVoicedMs;
        // A pause, not the end: with manual turns only commitInput() (or maxTurnMs) ends the turn.
        if (!this.autoEndpoint && !signal.forced) break;
        this.openTurn = null;
        const endpointMs = this.deps.clock.now() - signal.lastVoicedMs;
        this.deps.hooks.event({ type: 'speech.stopped', turn: turn.turn, atMs: Math.round(signal.lastVoicedMs) });
        this.enqueue(() => this.endTurn(turn, endpointMs));
        break;
      }
    }
  }

  /** The client says the caller's turn is over (push-to-talk release). False when no speech was heard. */
  commitInput(): boolean {
    if (this.closed || !this.openTurn) return false;
    const lastVoicedMs = this.openTurn.lastVoicedMs;
    this.deps.recogniser.resetTurn();
    this.onSignal({ kind: 'end_of_turn', lastVoicedMs, speechMs: 0, forced: true });
    return true;
  }

  /**
   * A caller turn that arrives as text rather than speech (keypad digits, a typed message, a realtime client's
   * text item): it interrupts the agent and is answered like a spoken turn, unless `respond` is false.
   */
  textTurn(text: string, language: string, respond: boolean, source: 'text' | 'keypad'): void {
    this.enqueue(async () => {
      if (this.closed) return;
      if (respond) this.interrupt('client', null);
      const turn = ++this.counter;
      const input: InputMeta = { source };
      if (this.deps.hooks.callerSaid({ turn, text, language, source, understood: true })) return;
      if (!respond) {
        this.deps.hooks.addUser(text, input);
        return;
      }
      this.answer({ turn, language, text, input, lastVoicedMs: this.deps.clock.now(), stages: {}, prepared: null, discardedPreemptive: 0 });
    });
  }

  /** Answer the conversation as it stands, without new caller words; interrupts the agent if it is talking. */
  respond(): void {
    this.enqueue(async () => {
      if (this.closed) return;
      this.interrupt('client', null);
      this.answer({ turn: this.counter, language: this.language, text: null, lastVoicedMs: this.deps.clock.now(), stages: {}, prepared: null, discardedPreemptive: 0 });
    });
  }

  /** The client (or a service line) stops the agent's reply. */
  interruptReply(): void {
    this.interrupt('client', null);
  }

  /** Throw away a reply prepared for the open turn (a service line takes the floor). */
  dropPrepared(): void {
    this.openTurn?.preemptive?.cancel();
  }

  /** The call ended: nothing more is started, and a prepared reply is thrown away. */
  close(): void {
    this.closed = true;
    this.dropPrepared();
  }

  private open(atMs: number): void {
    this.openTurn = {
      turn: ++this.counter,
      startedAtMs: atMs,
      segments: [],
      language: this.language,
      lastVoicedMs: atMs,
      unfinalizedSpeech: true,
      preemptive: null,
      preemptiveInput: '',
      discardedPreemptive: 0,
      resumes: 0,
    };
    this.lastPartial = '';
    this.deps.hooks.event({ type: 'speech.started', turn: this.openTurn.turn, atMs: Math.round(atMs) });
  }

  /** The caller paused: prepare a reply to the words so far, held back unheard until the turn ends. */
  private likelyEnd(lastVoicedMs: number): void {
    const turn = this.openTurn;
    if (!turn) return;
    turn.lastVoicedMs = lastVoicedMs;
    if (!this.autoEndpoint || !this.autoRespond) return;
    // A grammar decoder knows "book a table for" is unfinished: finalizing it now would force the fragment
    // into some whole sentence (possibly another language's "goodbye"). Let the utterance go on; a longer pause
    // (long_pause) asks the recogniser's final instead.
    if (this.deps.recogniser.sentenceIncomplete) return;
    const g = this.deps.turn.grammarEndpoint;
    if (g && g.peek !== false && this.deps.recogniser.canPeek) {
      const resumes = turn.resumes;
      this.enqueue(() => this.peekAtPause(turn, resumes));
      return;
    }
    this.enqueue(async () => {
      await this.finalizeSegment(turn);
      if (this.closed || turn !== this.openTurn || turn.unfinalizedSpeech) return;
      const text = turn.segments.join(' ').trim();
      if (!text || this.floor.paused || this.isEchoTurn(turn)) return;
      turn.preemptiveInput = text;
      turn.preemptive = this.deps.hooks.prepareReply(turn.turn, turn.language, text, this.speechInput(turn));
    });
  }

  /**
   * The caller paused, and the recogniser can tell its final without ending the utterance: a whole sentence of the
   * grammar, said with confidence, lets the turn end at the short pause (grammarEndpoint.completeMs) even when the
   * running hypothesis was still a prefix (it often is on a phone line); and the reply to it is prepared now. If the
   * caller goes on, nothing was cut: the utterance continues and the prepared reply is thrown away.
   */
  private async peekAtPause(turn: OpenTurn, resumes: number): Promise<void> {
    // The caller may have gone on before this ran: the pause it was for is over.
    if (this.closed || turn !== this.openTurn || turn.resumes !== resumes) return;
    let final: AsrFinal | undefined;
    try {
      final = await this.deps.recogniser.peek();
    } catch (err) {
      // The turn's end finalizes as usual; only the head start is lost.
      this.deps.logger.warn({ err }, 'recogniser peek failed');
      return;
    }
    if (!final || this.closed || turn !== this.openTurn || turn.resumes !== resumes) return;
    // What the turn would be if it ended here: its segments so far, this final, and their verdicts.
    const draft: OpenTurn = { ...turn, segments: [...turn.segments] };
    applyFinal(draft, final);
    const g = this.deps.turn.grammarEndpoint;
    const sure = final.inGrammar === true && final.text.trim() !== '' && (final.confidence ?? 0) >= ((g ? g.sureConfidence : undefined) ?? DEFAULT_SURE_CONFIDENCE);
    if (sure) this.deps.recogniser.sentenceComplete(final.continuable === true);
    // Unsure, and the turn's end is far off (the words so far are no sentence): the final at the end should hear the
    // whole pause, as it would have without the peek. A recogniser's confidence per frame counts the silence too, so
    // a final taken at the pause's start is judged more harshly than the same words at its end.
    else if (this.deps.recogniser.sentenceIncomplete) this.deps.recogniser.continueUtterance();
    const text = draft.segments.join(' ').trim();
    this.deps.logger.debug({ turn: turn.turn, text, confidence: final.confidence, sure }, 'peeked at the pause');
    if (!text || this.floor.paused || this.isEchoTurn(turn)) return;
    turn.preemptiveInput = text;
    turn.preemptive = this.deps.hooks.prepareReply(turn.turn, draft.language, text, this.speechInput(draft));
  }

  /** A caller sound while the agent talks may be the start of an interruption: pause, reversibly. */
  private callerSound(reason: 'energy' | 'vad'): void {
    // Early in the call's first reply a sound may be the line's echo: the agent then goes on until words confirm it.
    const action = this.applyFloor({ kind: 'caller_sound', agentAudible: this.deps.player.audible, bargeInAllowed: this.autoEndpoint, holdAudio: this.deps.recogniser.echoSettled });
    if (action === 'pause') this.deps.logger.debug({ reason }, 'caller sound while agent speaks: agent audio paused');
  }

  /** Decide barge-in (floor.ts) and carry out what it decided. */
  private applyFloor(event: FloorEvent): FloorAction {
    const { state, action } = nextFloor(this.floor, event, this.deps.turn);
    this.floor = state;
    if (action === 'pause') this.deps.player.pause();
    else if (action === 'resume') this.deps.player.resume();
    else if (action === 'interrupt') this.interrupt('caller', this.openTurn);
    return action;
  }

  /**
   * Cut the agent off. When the caller resumes within `continuationWindowMs` of their previous words, they
   * were only pausing mid-thought: the previous turn's words are carried into the new turn instead of being
   * answered on their own, and the barely-started reply is dropped from the conversation.
   */
  private interrupt(by: 'caller' | 'client', newTurn: OpenTurn | null): void {
    const reply = this.deps.player.current;
    if (!reply) return;
    const continuation = newTurn !== null && newTurn.startedAtMs - reply.lastVoicedMs <= this.deps.turn.continuationWindowMs;
    const heard = this.deps.player.cut();
    this.applyFloor({ kind: 'reply_cut' });
    this.deps.logger.info({ turn: reply.turn, by, heardChars: heard.length, continuation }, 'agent interrupted');
    if (continuation && newTurn && reply.userText) {
      newTurn.segments.unshift(reply.userText);
      newTurn.carried = true;
      if (newTurn.preemptive) {
        newTurn.preemptive.cancel();
        newTurn.preemptive = null;
      }
      this.deps.hooks.forgetUser(reply.userText);
      this.deps.player.finish('', 'interrupted');
    } else {
      this.deps.player.finish(heard, 'interrupted');
    }
  }

  /** Close the current ASR utterance and keep its text in the turn. */
  private async finalizeSegment(turn: OpenTurn): Promise<void> {
    if (!turn.unfinalizedSpeech) return;
    turn.unfinalizedSpeech = false;
    const started = this.deps.clock.now();
    let final: AsrFinal;
    try {
      final = await this.deps.recogniser.finalize();
    } catch (err) {
      this.deps.hooks.fail('asr_failed', 'speech recognition failed', err);
      // Whatever the recogniser still holds of this utterance must not open the caller's next turn.
      this.deps.recogniser.cancelUtterance();
      return;
    }
    turn.asrFinalMs = this.deps.clock.now() - started;
    applyFinal(turn, final);
  }

  /** Most of the turn's sound was the agent's echo, judged with the echo path known at its end (echo-guard.ts). */
  private isEchoTurn(turn: OpenTurn, untilMs = turn.lastVoicedMs): boolean {
    const share = this.deps.recogniser.echoShare(turn.startedAtMs, untilMs);
    return share !== null && share >= ECHO_TURN_SHARE;
  }

  private async endTurn(turn: OpenTurn, endpointMs: number): Promise<void> {
    if (this.closed) return;
    if (turn.unfinalizedSpeech || turn.segments.length === 0) await this.finalizeSegment(turn);
    else this.deps.recogniser.cancelUtterance(); // only trailing silence since the preemptive finalize
    if (this.closed) return;
    if (this.isEchoTurn(turn)) {
      // The agent's own voice returned by the line: not the caller's words, and not a reason to stop talking.
      this.deps.logger.debug({ turn: turn.turn }, 'turn was the agent\'s echo: ignored');
      this.ignore(turn, '');
      return;
    }
    this.language = turn.language;
    const ownText = turn.segments.join(' ').trim();
    // Speech the agent understood none of still gets an answer (an honest "I can help with…"), noise does not;
    // while the agent talks it is left alone, like a backchannel.
    const notUnderstood = !ownText && turn.outOfDomain === true && !this.floor.paused;
    if ((!ownText && !notUnderstood) || (this.floor.paused && isBackchannel(ownText, this.deps.turn.backchannels))) {
      // Noise, or "mhm" while the agent talks: not a turn to answer.
      this.ignore(turn, ownText);
      return;
    }
    // May carry the previous turn's words into this one (the caller was only pausing).
    this.interrupt('caller', turn);
    const text = turn.segments.join(' ').trim();
    const input = this.speechInput(turn);
    if (this.deps.hooks.callerSaid({ turn: turn.turn, text, language: turn.language, source: 'speech', understood: !notUnderstood })) {
      turn.preemptive?.cancel();
      return;
    }
    if (!this.autoRespond) {
      turn.preemptive?.cancel();
      this.deps.hooks.addUser(text, input);
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

  /** A turn that is not one to answer (an echo, a noise, a backchannel): the agent goes on. */
  private ignore(turn: OpenTurn, text: string): void {
    this.deps.hooks.event({ type: 'transcript.final', turn: turn.turn, text, language: turn.language });
    turn.preemptive?.cancel();
    this.applyFloor({ kind: 'turn_ignored' });
  }

  /** Commit a caller turn: it enters the conversation and its reply (prepared ahead or started now) plays. */
  private answer(answer: Answer): void {
    const input = answer.input ?? { source: 'text' as const };
    const task = answer.prepared ?? this.deps.hooks.prepareReply(answer.turn, answer.language, answer.text, input);
    if (answer.text !== null) this.deps.hooks.addUser(answer.text, input);
    this.deps.player.play({
      task,
      turn: answer.turn,
      userText: answer.text ?? '',
      lastVoicedMs: answer.lastVoicedMs,
      stages: answer.stages,
      preemptive: answer.prepared !== null,
      discardedPreemptive: answer.discardedPreemptive,
      measured: true,
    });
  }

  private speechInput(turn: OpenTurn): InputMeta {
    // A previous turn carried into this one was a sentence of the grammar, and so are the new words, but never
    // their sequence: "… tomorrow see you I would like to book …" (turns glued by continuation under load) is not
    // a confident goodbye, so an action that ends or moves the call is asked back first. Pieces of one turn ("okay
    // bye bye" | "see you") are one utterance and keep their own verdicts.
    const inGrammar = turn.carried && turn.inGrammar !== undefined ? false : turn.inGrammar;
    // Only a turn with no words of its own is asked back as a whole.
    const doubtful = turn.doubtful && turn.segments.join('').trim() === '' ? turn.doubtful : undefined;
    return {
      source: 'speech',
      ...(doubtful ? { heardAs: doubtful } : {}),
      ...(turn.confidence !== undefined ? { confidence: turn.confidence } : {}),
      ...(inGrammar !== undefined ? { inGrammar } : {}),
      ...(this.deps.detectsLanguage ? { language: turn.language } : {}),
    };
  }
}

/** Adds an utterance's final to its turn: its words as a segment, and its confidence, grammar and language verdicts. */
function applyFinal(turn: OpenTurn, final: AsrFinal): void {
  if (final.text.trim()) {
    turn.segments.push(final.text.trim());
    if (final.confidence !== undefined) turn.confidence = Math.min(turn.confidence ?? 1, final.confidence);
    if (final.inGrammar !== undefined) turn.inGrammar = (turn.inGrammar ?? true) && final.inGrammar;
  } else if (final.outOfDomain) {
    turn.outOfDomain = true;
    turn.inGrammar = false;
    // Pieces of one turn heard doubtfully one after the other are asked back together.
    if (final.doubtful) {
      turn.doubtful = turn.doubtful
        ? { text: `${turn.doubtful.text} ${final.doubtful.text}`, confidence: Math.min(turn.doubtful.confidence, final.doubtful.confidence) }
        : final.doubtful;
    }
  }
  if (final.language) turn.language = final.language;
}
