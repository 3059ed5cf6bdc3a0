import type { Logger } from 'pino';
import type { ProviderCapabilities } from '../capabilities.js';
/** Streaming speech recognition. Streaming-first so that server backends (Voxtral realtime) plug in unchanged. */
export interface AsrProvider {
  readonly name: string;
  /** Where its work runs and whether results stream (src/providers/capabilities.ts). */
  readonly capabilities: ProviderCapabilities;
  /** BCP-47 language tags this provider recognises (e.g. ["en"]); ["*"] when it detects any. */
  readonly languages: readonly string[];
  load(): Promise<void>;
  createStream(options: AsrStreamOptions): AsrStream;
  close?(): Promise<void>;
}

export interface AsrStreamOptions {
  /**
   * Sample rate of the caller's audio before the edge resampled it to the internal rate (8000: a narrowband
   * telephone channel, nothing above 4 kHz). Recognisers may pick channel-matched settings from it.
   */
  sourceSampleRate?: number;
  /** Expected language, if known; a multilingual backend may detect another and report it. */
  language?: string;
  /**
   * The caller chose `language` (query parameter, dialled number, keypad): decode only that language
   * instead of detecting it per turn.
   */
  languageFixed?: boolean;
  /** Called whenever the running hypothesis for the current utterance changes. */
  onPartial?: (partial: AsrPartial) => void;
  /** The call's logger (its lines carry the call id); the provider's own when absent. */
  logger?: Logger;
}

export interface AsrPartial {
  text: string;
  /** The language heard; '' when the backend cannot tell (the session keeps its own). */
  language: string;
  /**
   * Grammar decoders: the partial already is a whole sentence of the grammar (a strong end-of-turn cue);
   * false for a strict prefix ("book a table for"). Absent when the backend cannot tell.
   */
  complete?: boolean;
  /**
   * Grammar decoders, with `complete`: the whole sentence is also the start of a longer one ("book a table for two"
   * → "… for two tomorrow at seven"): the caller may be breathing, not done.
   */
  continuable?: boolean;
}

export interface AsrWord {
  word: string;
  /** Offsets from the start of the utterance, ms. */
  startMs: number;
  endMs: number;
}

export interface AsrFinal {
  text: string;
  /**
   * The language heard; '' when the backend cannot tell (vLLM's realtime `done` carries none): the session then
   * keeps its own rather than switching to a guess.
   */
  language: string;
  /** Audio covered by this utterance, ms. */
  audioMs: number;
  /** Word timings when the backend provides them. */
  words?: AsrWord[];
  /**
   * Backend confidence in [0, 1] when provided. Grammar decoders: the share of the utterance explained by a
   * grammar sentence rather than by the garbage (phone-loop) branch; 0 when out of grammar.
   */
  confidence?: number;
  /**
   * Grammar decoders: true when the utterance reached a final state of a compiled grammar; false means out of
   * domain (text is then empty). Absent for open-vocabulary backends.
   */
  inGrammar?: boolean;
  /** Grammar decoders, in grammar: the sentence is also the start of a longer one (see AsrPartial.continuable). */
  continuable?: boolean;
  /**
   * Grammar decoders: the sound was speech (it changes phones as speech does) but fitted no sentence of any
   * grammar well enough: the caller said something the agent does not understand, not a cough or a noise.
   */
  outOfDomain?: boolean;
  /**
   * Grammar decoders, out of domain: the sentence that fitted best in the turn's language when it fell only just
   * under the confidence floor. Not a result: the agent may ask it back ("Did you say …?"), never act on it.
   */
  doubtful?: { text: string; confidence: number };
}

/**
 * One utterance at a time: push frames while the caller speaks, `finalize()` at the endpoint.
 * After finalize() resolves the stream is ready for the next utterance.
 */
export interface AsrStream {
  /** 16 kHz mono PCM16, any length (normally one 20 ms frame). Never blocks the event loop for long. */
  push(pcm: Int16Array): void;
  /** End the current utterance and return its final transcript (must not re-decode the whole utterance). */
  finalize(): Promise<AsrFinal>;
  /**
   * Optional: the final transcript as if the caller had finished now, without ending the utterance. Audio pushed
   * after it continues the same utterance; a finalize() with none since returns this result without decoding
   * again. A grammar decoder's running hypothesis may be a prefix while its final is a whole sentence, so this is
   * what tells, at a pause, whether the caller has said one. Undefined when it cannot tell this time.
   */
  peek?(): Promise<AsrFinal | undefined>;
  /** Drop the current utterance without a result. */
  cancel(): void;
  close(): void;
  /** What the agent waits for next ("<intent>.<slot>", "<intent>.confirm"), or undefined: weight that grammar. */
  expect?(expectation: string | undefined): void;
}
