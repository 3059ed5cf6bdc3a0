/** The `turn` and `audioOut` sections (endpointing, barge-in, audio pacing; src/session): options, defaults, types. */
import { common, defaultsOf, t, type LeftOutOk, type Resolved, type Static } from '../core/options.js';

/** How the echo guard tells the agent's own voice, coming back on the caller's line, from the caller (./echo-guard.ts). */
export const ECHO_GUARD_OPTIONS = t.object({
  /** Off: every caller sound may barge in, as on a line with no echo. */
  enabled: t.boolean(),
  /** Longest echo path looked for: the client's playout buffer, the line and the way back, ms. */
  maxDelayMs: t.integer(20, 2000),
  /** A frame this much louder than the echo the path predicts is the caller talking, dB. */
  marginDb: t.number(0, 40),
});
export type EchoGuardConfig = Static<typeof ECHO_GUARD_OPTIONS>;
export const DEFAULT_ECHO_GUARD: EchoGuardConfig = { enabled: true, maxDelayMs: 600, marginDb: 5 };

/** How much of the conversation a model is sent each turn (./context-window.ts); 0: no limit. */
export const CONTEXT_WINDOW_OPTIONS = t.object({
  /** Messages after the system prompt sent at most (0: no limit). */
  maxMessages: t.integer(0),
  /** Characters of those messages sent at most (0: no limit); the latest caller turn is always sent. */
  maxChars: t.integer(0),
});
export type ContextWindow = Static<typeof CONTEXT_WINDOW_OPTIONS>;
export const DEFAULT_CONTEXT_WINDOW: ContextWindow = { maxMessages: 40, maxChars: 16_000 };

/** Endpointing and barge-in: the knobs that trade latency against cutting callers off. */
export const TURN_OPTIONS = t.object({
  /** Speech probability at or above which a frame counts as speech. */
  speechThreshold: t.default(t.number(0, 1), 0.5),
  /** Probability below which a frame counts as silence (hysteresis between the two). */
  silenceThreshold: t.default(t.number(0, 1), 0.35),
  /** Speech needed before a turn is considered started (filters clicks). */
  minSpeechMs: t.default(common.ms(), 60),
  /** Silence after speech at which a reply is prepared preemptively (discarded if the caller goes on). */
  preemptiveSilenceMs: t.default(common.ms(), 60),
  /** Silence after speech that ends the caller's turn. */
  endpointSilenceMs: t.default(common.ms(20), 180),
  /**
   * Optional endpoint from the ASR grammar (partials that tell whether they complete a sentence): silence
   * that ends the turn when the running hypothesis is a whole sentence, and when it is a strict prefix
   * ("book a table for"). On by default; `false` turns it off. Without it, or without a grammar decoder (an
   * LLM backend's open vocabulary), endpointSilenceMs applies.
   */
  grammarEndpoint: t.default(
    t.oneOf(
      t.literal(false),
      t.object({
        completeMs: common.ms(20),
        incompleteMs: common.ms(20, 3000),
        /**
         * Silence that ends the turn after a whole sentence that is also the start of a longer one ("book a table for
         * two", which may go on "… tomorrow at seven"): people breathe between the parts of a long request. Absent:
         * completeMs. Costs such sentences this much more latency when the caller has in fact finished.
         */
        continuableMs: t.optional(common.ms(20, 3000)),
        /**
         * A peek at the pause (the recogniser's final without ending the utterance) that is a sentence of the grammar
         * at this confidence or more counts as complete, as a complete partial does (default 0.5).
         */
        sureConfidence: t.optional(t.number(0, 1)),
        /**
         * At a likely end after a whole sentence, peek at the recogniser's final instead of ending the utterance, so a
         * caller who goes on stays one utterance (no sentence decoded in pieces). Each pause the caller talks through
         * costs a second decode of the utterance so far, cheap since grammars decode as automata (BENCHMARKS.md, "A
         * peek at the pause" and "Grammars as minimal automata"). On by default; `false` finalises at the likely end.
         */
        peek: t.optional(t.boolean()),
        /**
         * Off unless set: silence after which the final is peeked when the running hypothesis is no sentence yet (a
         * phone line's hypothesis often is a prefix when the caller has finished). Sooner ends on the phone, but a
         * caller who pauses that long mid-sentence can be cut off on a sentence forced onto the words so far
         * (BENCHMARKS.md, "A peek at the pause"); each peek the caller talks through costs a second decode.
         */
        peekMs: t.optional(common.ms(20, 3000)),
      }),
    ),
    // Measured with loadtest/endpoint-pauses.ts (BENCHMARKS.md, "Turn-taking from the grammar"): callers who
    // pause 300–600 ms mid-sentence were cut in on 19/24 times at the plain 180 ms, 0/24 with this. A breath of
    // 250 ms after a sentence that can go on ("… for three people | monday at eleven") was cut in on 8/12 at 120 ms,
    // 0/12 at 300 ms (BENCHMARKS.md, "A breath inside a long request").
    { completeMs: 120, continuableMs: 300, incompleteMs: 700, peek: true },
  ),
  /**
   * Audio kept from before speech onset and given to ASR, so first phonemes are not clipped. Reaches further back
   * (up to SOFT_ONSET_LOOKBACK_MS) over a soft first word the VAD heard under speechThreshold (recogniser.ts
   * `preRollStart`), never into the previous turn. Not longer by default: the recogniser's confidence counts the
   * silence around the words, and its calibration was fitted with this much (BENCHMARKS.md, "A soft first word").
   */
  preRollMs: t.default(common.ms(), 200),
  /** Caller speech while the agent talks pauses agent audio at once; this much confirms an interruption. */
  minInterruptionMs: t.default(common.ms(), 300),
  /** Agent audio paused on a caller sound resumes after this long if the sound never became speech. */
  pauseTimeoutMs: t.default(common.ms(), 240),
  /** Words that never count as an interruption on their own (backchannels), lower-case. */
  backchannels: t.default(t.array(t.string()), ['ok', 'okay', 'mhm', 'mm', 'uh-huh', 'yeah', 'yes', 'right', 'oui', 'ja', 'si', 'sí', 'd accord', 'hm']),
  /**
   * Caller speech that interrupts the agent this soon after the caller's previous words continues that turn
   * (they were pausing mid-thought) rather than starting a new one.
   */
  continuationWindowMs: t.default(common.ms(), 1000),
  /** ASR's final transcript within this after the endpoint, or the turn fails with asr_failed. */
  asrFinalTimeoutMs: t.default(common.ms(1), 5000),
  /** Keypad digits are gathered until '#' or this much time without a new digit. */
  dtmfTimeoutMs: t.default(common.ms(100), 1500),
  /** Longest caller turn before it is ended regardless of pauses. */
  maxTurnMs: t.default(common.ms(1000), 30_000),
  /**
   * The agent's own voice coming back on the caller's line (phone hybrids, speakerphones) is not the caller
   * barging in (./echo-guard.ts). On by default.
   */
  echoGuard: t.default(ECHO_GUARD_OPTIONS, DEFAULT_ECHO_GUARD),
});
/** A detector built without a config leaves grammarEndpoint (then off) and echoGuard (then the default) out. */
export type TurnConfig = LeftOutOk<Resolved<typeof TURN_OPTIONS>, 'grammarEndpoint' | 'echoGuard'>;
export const TURN_DEFAULTS: TurnConfig = defaultsOf(TURN_OPTIONS);

export const AUDIO_OUT_OPTIONS = t.object({
  /** How far ahead of real time agent audio is sent to the client (its playout buffer). */
  leadMs: t.default(t.integer(0, 1000), 40),
});
export type AudioOutConfig = Resolved<typeof AUDIO_OUT_OPTIONS>;
export const AUDIO_OUT_DEFAULTS: AudioOutConfig = defaultsOf(AUDIO_OUT_OPTIONS);
