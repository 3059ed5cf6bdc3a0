import type { Logger } from 'pino';
import type { TurnConfig } from '../config.js';
import { FRAME_MS, type AudioFrame } from '../audio/format.js';
import type { AsrFinal, AsrPartial, AsrProvider, AsrStream } from '../providers/asr/types.js';
import type { VadProvider, VadStream } from '../providers/vad/types.js';
import { within } from '../core/timeouts.js';
import { EnergyOnset } from './energy-onset.js';
import { DEFAULT_ECHO_GUARD, EchoGuard } from './echo-guard.js';
import { TurnDetector, type TurnSignal } from './turn-detector.js';
import type { Clock } from './clock.js';

/** What the recogniser tells the session, in the order it learns it. */
export interface RecognitionHooks {
  /** The first loud frames, before the VAD has seen them: the caller may be starting to talk. */
  onEnergyOnset(): void;
  /** The turn detector's conclusion from one frame (all signals of a frame come after its onSpeechAudio). */
  onSignal(signal: TurnSignal): void;
  /** Voiced caller audio reached the recogniser in this frame: the current utterance needs a finalize. */
  onSpeechAudio(): void;
  /** One frame has been fully handled (its signals given). */
  onFrameProcessed(): void;
  /** The recogniser's running hypothesis for the current utterance. */
  onPartial(partial: AsrPartial): void;
  /** Handling a frame failed (the VAD threw): the frame is lost, the call goes on. */
  onError(err: unknown): void;
}

export interface RecogniserOptions {
  vad: VadProvider;
  asr: AsrProvider;
  turn: TurnConfig;
  logger: Logger;
  hooks: RecognitionHooks;
  /** Times the ASR's final (asrFinalTimeoutMs). */
  clock: Clock;
  /** Expected language (the call's), and whether it was chosen for the call (then not re-detected per turn). */
  language: string;
  languageFixed: boolean;
  /** The caller's audio rate before the edge resampled it (8000: a phone line). */
  sourceSampleRate?: number;
}

/** Frames waiting for VAD beyond this (5 s) are dropped: the call has fallen hopelessly behind real time. */
const MAX_INBOUND_BACKLOG = 250;
/** Under overload, one warning per this much time (with the count), not one per dropped frame. */
const DROP_WARNING_INTERVAL_MS = 1_000;

/**
 * The caller's side of a call: energy onset → VAD → turn detector, with the pre-roll and the speech frames
 * handed to streaming ASR. It turns 20 ms frames into turn signals and transcripts; what a turn means to the
 * conversation (preemption, barge-in, answers) is the session's.
 */
export class Recogniser {
  private readonly detector: TurnDetector;
  private readonly vad: VadStream;
  private readonly asr: AsrStream;
  private readonly energyOnset = new EnergyOnset();
  private readonly echoGuard: EchoGuard;
  /** The echo path's delay last logged (-1: none). */
  private echoPathMs = -1;
  /** Recent frames, and whether each sounded like voice at all, for the pre-roll (preRollStart). */
  private readonly preRoll: Array<{ frame: AudioFrame; voice: boolean }> = [];
  private readonly hooks: RecognitionHooks;
  private readonly turn: TurnConfig;
  private readonly log: Logger;
  private readonly clock: Clock;
  private inbound: Promise<void> = Promise.resolve();
  private inboundBacklog = 0;
  /** Frames dropped since the last warning, and when that warning was logged. */
  private dropped = 0;
  private lastDropWarningMs = -Infinity;
  private stopped = false;
  /**
   * Frames of a pause after a peek, held back from the ASR: if the caller goes on they follow the peeked words
   * into the same utterance; if the turn ends there they were only its trailing silence.
   */
  private held: Int16Array[] | null = null;

  constructor(options: RecogniserOptions) {
    this.turn = options.turn;
    this.hooks = options.hooks;
    this.log = options.logger;
    this.clock = options.clock;
    this.detector = new TurnDetector(options.turn);
    this.echoGuard = new EchoGuard(options.turn.echoGuard ?? DEFAULT_ECHO_GUARD);
    this.vad = options.vad.createStream();
    this.asr = options.asr.createStream({
      language: options.language,
      ...(options.sourceSampleRate ? { sourceSampleRate: options.sourceSampleRate } : {}),
      languageFixed: options.languageFixed,
      logger: options.logger,
      onPartial: (partial) => {
        this.detector.setComplete(partial.complete, partial.continuable);
        this.hooks.onPartial(partial);
      },
    });
  }

  /** One inbound 20 ms frame, in order. False when it was dropped (the call is too far behind real time). */
  push(frame: AudioFrame): boolean {
    if (this.stopped) return false;
    if (this.inboundBacklog >= MAX_INBOUND_BACKLOG) {
      this.dropped++;
      const now = this.clock.now();
      if (now - this.lastDropWarningMs >= DROP_WARNING_INTERVAL_MS) {
        this.log.warn({ backlog: this.inboundBacklog, dropped: this.dropped }, 'inbound audio backlog full, dropping frames');
        this.lastDropWarningMs = now;
        this.dropped = 0;
      }
      return false;
    }
    // The agent's own voice returned by the line is neither an onset nor the caller's speech.
    const echo = this.echoGuard.callerFrame(frame.samples, frame.timestampMs);
    const path = this.echoGuard.path;
    if ((path?.delayMs ?? -1) !== this.echoPathMs) {
      this.echoPathMs = path?.delayMs ?? -1;
      this.log.debug({ echoPath: path }, path ? 'echo path found' : 'echo path lost');
    }
    // Before the VAD has even seen them.
    if (this.energyOnset.push(frame.samples, echo)) this.hooks.onEnergyOnset();
    const loud = this.energyOnset.loud;
    this.inboundBacklog++;
    this.inbound = this.inbound
      .then(() => this.process(frame, echo, loud))
      .catch((err: unknown) => this.hooks.onError(err))
      .finally(() => {
        this.inboundBacklog--;
      });
    return true;
  }

  /** True while the caller holds the floor (speech confirmed, turn not ended). */
  get inSpeech(): boolean {
    return this.detector.inSpeech;
  }

  /** True from the first voiced frame until the turn ends or the sound is rejected. */
  get active(): boolean {
    return this.detector.active;
  }

  /** Voiced audio in the current turn so far, ms. */
  get speechMs(): number {
    return this.detector.speechMs;
  }

  /** The ASR's grammar says the words so far are a strict prefix of a sentence: the caller is not done. */
  get sentenceIncomplete(): boolean {
    return this.detector.sentenceIncomplete;
  }

  /** The agent's audio as it leaves for the caller (clock time): the reference for telling its echo apart. */
  agentAudio(samples: Int16Array, atMs: number): void {
    this.echoGuard.agentAudio(samples, atMs);
  }

  /** Whether the line's echo is known yet (echo-guard.ts `settled`). */
  get echoSettled(): boolean {
    return this.echoGuard.settled;
  }

  /** How much of the caller's sound between two clock times was the agent's own echo (null: no echo known). */
  echoShare(fromMs: number, toMs: number): number | null {
    return this.echoGuard.echoShare(fromMs, toMs);
  }

  /** Forget the turn in progress (the client ended it by hand). */
  resetTurn(): void {
    this.detector.reset();
    this.held = null;
  }

  /** Close the current ASR utterance; rejects after turn.asrFinalTimeoutMs. */
  finalize(): Promise<AsrFinal> {
    this.held = null;
    return within(this.asr.finalize(), this.turn.asrFinalTimeoutMs, 'speech recognition', this.clock);
  }

  /** Whether the ASR can tell the final of an utterance without ending it (AsrStream.peek). */
  get canPeek(): boolean {
    return this.asr.peek !== undefined;
  }

  /**
   * The final as if the caller had finished at this pause, leaving the utterance open (AsrStream.peek): the
   * pause's frames are held back from the ASR until the caller goes on. Undefined when the ASR cannot tell.
   */
  async peek(): Promise<AsrFinal | undefined> {
    if (!this.asr.peek) return undefined;
    this.held = [];
    return within(this.asr.peek(), this.turn.asrFinalTimeoutMs, 'speech recognition', this.clock);
  }

  /**
   * Go on with the utterance a peek ended, as if there had been no peek: the pause's frames held so far, and those
   * after, reach the ASR (which decodes the utterance again). For a pause whose end is still far off: the turn's
   * final then hears the whole pause, as it would have without the peek.
   */
  continueUtterance(): void {
    const held = this.held;
    this.held = null;
    for (const samples of held ?? []) this.asr.push(samples);
  }

  /**
   * The words so far complete a sentence of the grammar (a peek said so): the turn may end at a short pause, or at
   * a longer one when that sentence can also go on.
   */
  sentenceComplete(continuable = false): void {
    this.detector.setComplete(true, continuable);
  }

  /** Drop the current utterance (only trailing silence since the last finalize). */
  cancelUtterance(): void {
    this.held = null;
    this.asr.cancel();
  }

  /** What the agent waits for next: the recogniser weights that answer. */
  expect(expectation: string | undefined): void {
    this.asr.expect?.(expectation);
  }

  /** Take no more frames; `idle` resolves once those already taken are handled. */
  stop(): void {
    this.stopped = true;
  }

  get idle(): Promise<void> {
    return this.inbound;
  }

  /** Release the per-call model state. Call after stop() and once nothing awaits finalize() any more. */
  release(): void {
    this.asr.close();
    this.vad.close();
  }

  private async process(frame: AudioFrame, echo: boolean, loud: boolean): Promise<void> {
    if (this.stopped) return;
    // The VAD sees every frame (its state runs on), but echo counts as silence for the turn.
    const voiced = await this.vad.process(frame.samples);
    const probability = echo ? 0 : voiced;
    if (this.stopped) return;
    // Voice, for the pre-roll: not silence to the VAD, or well over the line's noise floor (a soft first word).
    this.preRoll.push({ frame, voice: probability >= this.turn.silenceThreshold || loud });
    const maxPreRoll = Math.max(1, Math.round((this.turn.preRollMs + SOFT_ONSET_LOOKBACK_MS) / FRAME_MS));
    while (this.preRoll.length > maxPreRoll) this.preRoll.shift();

    const wasInSpeech = this.detector.inSpeech;
    const signals = this.detector.push(probability, frame.timestampMs);
    const startsSpeech = signals.some((s) => s.kind === 'speech_start');
    if (this.held && signals.some((s) => s.kind === 'speech_resume')) {
      // The caller goes on after a peek: the pause joins the utterance, as it would have without the peek.
      for (const samples of this.held) this.asr.push(samples);
      this.held = null;
    }
    if (startsSpeech) {
      // Give ASR the audio from just before the onset so the first phoneme is not clipped.
      const start = preRollStart(this.preRoll.map((p) => p.voice), Math.round(this.turn.preRollMs / FRAME_MS));
      for (const buffered of this.preRoll.slice(start)) this.asr.push(buffered.frame.samples);
      this.preRoll.length = 0;
    } else if (wasInSpeech && this.detector.inSpeech) {
      if (this.held) this.held.push(frame.samples);
      else this.asr.push(frame.samples);
    }
    if (signals.some((s) => s.kind === 'end_of_turn')) {
      this.held = null;
      // The next utterance's pre-roll starts after this turn: its last words were this turn's, decoded already.
      this.preRoll.length = 0;
    }
    if (startsSpeech || (wasInSpeech && probability >= this.turn.silenceThreshold)) this.hooks.onSpeechAudio();
    for (const signal of signals) this.hooks.onSignal(signal);
    this.hooks.onFrameProcessed();
  }
}

/** How far before the usual pre-roll a soft first word is looked for. */
export const SOFT_ONSET_LOOKBACK_MS = 400;
/** Voice frames of one soft word are no further apart than this (a stop consonant's closure, a short breath). */
const SOFT_ONSET_GAP_FRAMES = 200 / FRAME_MS;

/**
 * Where the audio handed to ASR at speech start begins, in the recent frames (`voice`: whether each sounded like voice
 * at all, the last one the frame that started speech): `preRollFrames` before the end, unless a soft first word comes
 * before that, voice frames no more than SOFT_ONSET_GAP_FRAMES apart before the onset. Then it begins as far before
 * that word as the usual pre-roll begins before the onset, so the words keep the same lead of silence (the
 * recogniser's confidence counts it). Measured: eSpeak's "What" of "What time is it?" through G.711 reached the VAD at
 * 0.25–0.49 on some turns, 300 ms before the onset on "time"; without it the rest was decoded as "tell … can i", or
 * as Spanish (BENCHMARKS.md, "A soft first word").
 */
export function preRollStart(voice: readonly boolean[], preRollFrames: number): number {
  const end = voice.length;
  const usual = Math.max(0, end - preRollFrames);
  // The onset: the start of the voice that started speech (the detector confirms it a few frames in).
  let onset = end - 1;
  while (onset > usual && voice[onset - 1]) onset--;
  const lead = onset - usual;
  let first = onset;
  for (let i = onset - 1; i >= 0 && first - i <= SOFT_ONSET_GAP_FRAMES; i--) if (voice[i]) first = i;
  return first === onset ? usual : Math.max(0, first - lead);
}
