import type { TurnConfig } from '../config.js';
import { FRAME_MS } from '../audio/format.js';

/**
 * What the turn detector concludes from one frame's speech probability. Times are frame timestamps
 * (performance.now() at the server edge), so latency is measured from when the audio arrived.
 */
export type TurnSignal =
  /** First voiced frame after silence: not yet a turn, but enough to pause agent audio. */
  | { kind: 'voice_onset'; atMs: number }
  /** Voiced frames that stopped before minSpeechMs: a click or noise, not a turn. */
  | { kind: 'voice_rejected' }
  /** Speech confirmed (minSpeechMs of voiced frames); `atMs` is its first voiced frame. */
  | { kind: 'speech_start'; atMs: number }
  /** Silence after speech reached preemptiveSilenceMs: prepare a reply now. */
  | { kind: 'likely_end'; lastVoicedMs: number }
  /**
   * With a grammar decoder, silence reached `grammarEndpoint.peekMs` while the words so far are not known to be a
   * whole sentence: time to ask the recogniser's final (a peek) whether they are, rather than wait `incompleteMs`.
   */
  | { kind: 'long_pause'; lastVoicedMs: number }
  /** The caller went on speaking after a pause: throw any prepared reply away. */
  | { kind: 'speech_resume'; atMs: number }
  /** Silence reached endpointSilenceMs (or the turn ran past maxTurnMs): the caller's turn is over. */
  | { kind: 'end_of_turn'; lastVoicedMs: number; speechMs: number; forced: boolean };

type State = 'idle' | 'candidate' | 'speaking';


/**
 * Endpointing with hysteresis, measured in audio time (frame counts), not wall time, so network jitter
 * that bunches frames up does not end turns early.
 */
export class TurnDetector {
  private state: State = 'idle';
  private voicedRun = 0;
  private onsetMs = 0;
  private speechStartMs = 0;
  private lastVoicedMs = 0;
  private silentFrames = 0;
  private speechFrames = 0;
  private likelyEndSent = false;
  private longPauseSent = false;
  /** From the ASR's partials: does the caller's speech so far complete a grammar sentence? */
  private complete: boolean | undefined;
  /** And is that sentence also the start of a longer one (the caller may only be breathing)? */
  private continuable = false;
  /** Whether the recogniser tells complete sentences at all (a grammar decoder does); kept for the whole call. */
  private grammarAware = false;

  constructor(private readonly config: TurnConfig) {}

  /** True while the caller holds the floor (speech confirmed, turn not ended). */
  get inSpeech(): boolean {
    return this.state === 'speaking';
  }

  /** True from the first voiced frame (candidate speech) until the turn ends or the sound is rejected. */
  get active(): boolean {
    return this.state !== 'idle';
  }

  /** Voiced audio in the current turn so far, ms. */
  get speechMs(): number {
    return this.speechFrames * FRAME_MS;
  }

  /** Silence since the last voiced frame of the current turn, ms. */
  get silenceMs(): number {
    return this.silentFrames * FRAME_MS;
  }

  /**
   * Grammar hint from the latest partial: a complete sentence ends the turn after `grammarEndpoint.completeMs`
   * of silence, or `continuableMs` when it is also the start of a longer one; a strict prefix only after
   * `incompleteMs` (bounded); undefined falls back to endpointSilenceMs.
   */
  setComplete(complete: boolean | undefined, continuable = false): void {
    if (complete !== undefined) this.grammarAware = true;
    // In a pause the recogniser goes on hypothesising words into the silence ("… for twenty the"): what it
    // adds while the VAD hears no voice does not unfinish a sentence. The reverse, the recogniser catching up
    // on the caller's last words, counts (it lags the VAD).
    if (complete === false && this.complete === true && this.state === 'speaking' && this.silentFrames > 0) return;
    this.complete = complete;
    this.continuable = complete === true && continuable;
  }

  /**
   * Cutting the utterance at this pause would split a sentence: with a grammar decoder, unless the speech so far is
   * known to complete one. A strict prefix ("book a table for") is not, and neither is speech the recogniser has
   * not named yet: the stop in "what time" comes before the first partial, and a segment cut there is decoded as
   * "what" alone and "time is it" alone, neither of them a sentence of the grammar. Without a grammar, never.
   */
  get sentenceIncomplete(): boolean {
    return this.grammarAware && this.complete !== true;
  }

  private endpointMs(): number {
    const g = this.config.grammarEndpoint;
    if (!g || this.complete === undefined) return this.config.endpointSilenceMs;
    if (!this.complete) return g.incompleteMs;
    return this.continuable && g.continuableMs !== undefined ? g.continuableMs : g.completeMs;
  }

  /** Forget everything (e.g. when the client forces a turn end). */
  reset(): void {
    this.complete = undefined;
    this.continuable = false;
    this.state = 'idle';
    this.voicedRun = 0;
    this.silentFrames = 0;
    this.speechFrames = 0;
    this.likelyEndSent = false;
    this.longPauseSent = false;
  }

  /** Feed one frame's speech probability; returns the signals this frame produced, in order. */
  push(probability: number, timestampMs: number): TurnSignal[] {
    const { speechThreshold, silenceThreshold, minSpeechMs, preemptiveSilenceMs, maxTurnMs } = this.config;
    const endpointSilenceMs = this.endpointMs();
    const minSpeechFrames = Math.max(1, Math.ceil(minSpeechMs / FRAME_MS));
    const signals: TurnSignal[] = [];

    switch (this.state) {
      case 'idle':
        if (probability >= speechThreshold) {
          this.state = 'candidate';
          this.voicedRun = 1;
          this.onsetMs = timestampMs;
          signals.push({ kind: 'voice_onset', atMs: timestampMs });
          if (this.voicedRun >= minSpeechFrames) this.startSpeech(timestampMs, signals);
        }
        break;
      case 'candidate':
        if (probability >= silenceThreshold) {
          this.voicedRun++;
          if (this.voicedRun >= minSpeechFrames) this.startSpeech(timestampMs, signals);
        } else {
          this.state = 'idle';
          this.voicedRun = 0;
          signals.push({ kind: 'voice_rejected' });
        }
        break;
      case 'speaking': {
        // Silero-style hysteresis: a pause starts below silenceThreshold; a frame at or above speechThreshold
        // ends it; frames in between neither start nor end one.
        const inPause = this.silentFrames > 0;
        if (!inPause && probability >= silenceThreshold) {
          this.speechFrames++;
          this.lastVoicedMs = timestampMs;
        } else if (inPause && probability >= speechThreshold) {
          this.speechFrames++;
          this.silentFrames = 0;
          this.lastVoicedMs = timestampMs;
          this.longPauseSent = false;
          if (this.likelyEndSent) {
            this.likelyEndSent = false;
            // The caller goes on after a pause that may have closed the recogniser's utterance: whether the speech
            // so far was a whole sentence no longer says whether the turn is, until the next partial tells.
            this.complete = undefined;
            this.continuable = false;
            signals.push({ kind: 'speech_resume', atMs: timestampMs });
          }
        } else {
          this.silentFrames++;
        }
        const silence = this.silentFrames * FRAME_MS;
        if (this.silentFrames > 0 && !this.likelyEndSent && silence >= preemptiveSilenceMs && silence < endpointSilenceMs) {
          this.likelyEndSent = true;
          signals.push({ kind: 'likely_end', lastVoicedMs: this.lastVoicedMs });
        }
        const peekMs = this.config.grammarEndpoint ? this.config.grammarEndpoint.peekMs : undefined;
        if (peekMs !== undefined && this.sentenceIncomplete && !this.longPauseSent && silence >= peekMs && silence < endpointSilenceMs) {
          this.longPauseSent = true;
          signals.push({ kind: 'long_pause', lastVoicedMs: this.lastVoicedMs });
        }
        const forced = timestampMs - this.speechStartMs >= maxTurnMs;
        if (silence >= endpointSilenceMs || forced) {
          signals.push({ kind: 'end_of_turn', lastVoicedMs: this.lastVoicedMs, speechMs: this.speechMs, forced: forced && silence < endpointSilenceMs });
          this.reset();
        }
        break;
      }
    }
    return signals;
  }

  private startSpeech(timestampMs: number, signals: TurnSignal[]): void {
    this.longPauseSent = false;
    this.state = 'speaking';
    this.speechStartMs = this.onsetMs;
    this.speechFrames = this.voicedRun;
    this.lastVoicedMs = timestampMs;
    this.silentFrames = 0;
    this.likelyEndSent = false;
    signals.push({ kind: 'speech_start', atMs: this.onsetMs });
  }
}
