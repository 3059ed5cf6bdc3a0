/** `providers.asr` with provider "pocketsphinx": the options it accepts and their defaults. */
import { common, defaultsOf, langMap, t, type Static } from '../../../core/options.js';

export const POCKETSPHINX_OPTIONS = t.object({
  /** Holds `en-us/`, `en-us.lm.bin` and `cmudict-en-us.dict`. */
  modelDir: t.optional(t.text()),
  /** Decoders kept ready for new calls (~95 MB each); a burst of new calls beyond it waits ~0.4 s per decoder. */
  spareDecoders: t.default(t.integer(1, 64), 4),
  /** Idle decoders kept for reuse after calls end. */
  maxIdleDecoders: t.default(t.integer(0, 256), 4),
  /**
   * Decoders kept ready in each grammar pool (a language's grammar and its phone loop, wideband and narrowband): a
   * call takes one from each of its languages' pools, so this many new calls at once start decoding without waiting
   * for a build. They are small (~5 MB, tens of ms to build; BENCHMARKS.md "Awaited decoders first").
   */
  grammarSpareDecoders: t.default(t.integer(1, 64), 10),
  /**
   * Decode against grammars compiled from what the agent understands (src/providers/asr/grammar): 'auto' with the
   * embedded rules agent, not with an LLM backend (a model handles open speech); 'on' always; 'off' the generic LM only.
   */
  grammar: t.default(t.enum(['auto', 'on', 'off']), 'auto'),
  /** Grammar languages to load when their model is present (default: all of en, es). */
  languages: t.optional(t.array(common.langTag, { minItems: 1 })),
  /** Spanish acoustic model directory (default env POCKETSPHINX_ES_DIR, else ../shared/models/pocketsphinx-es). */
  spanishModelDir: t.optional(t.text()),
  /**
   * Spanish grammar words also in their seseo (c/z as "s") and yeísmo ("ll" as "y") readings: the Spanish model's
   * dictionary is Castilian, most Spanish speakers are not (grammar/g2p-es.ts). false: the dictionary's alone.
   */
  spanishDialects: t.default(t.boolean(), true),
  /** Extra names callers may give, per language, added to the agent's name slots. */
  names: t.optional(langMap(common.texts)),
  /** Per-phone weight of a garbage loop that absorbs out-of-domain sound (unset: no garbage loop). */
  garbageWeight: t.optional(t.number(undefined, 1, { exclusiveMinimum: 0 })),
  /**
   * How the call's language follows the caller between grammar lanes (LanguageBelief; defaults and their
   * measurements: pocketsphinx/grammar.ts): nats of belief per unit of score gap, the chance the caller changes
   * language between turns, the head start of the call's default language, and the least score with which a turn
   * moves the call to another language, once the caller has been understood and before.
   */
  languageEvidenceScale: t.optional(t.number(0, 10)),
  languageSwitchProbability: t.optional(t.number(0, 0.5, { exclusiveMinimum: 0 })),
  languagePrior: t.optional(t.number(0, 10)),
  switchFloor: t.optional(t.number(-20, 0)),
  firstSwitchFloor: t.optional(t.number(-20, 0)),
  /**
   * Confidence from which a sentence just under the recogniser's floor (0.1) is passed on as a doubt, which the
   * embedded agent asks back ("Did you say …?"); default 0.03 (grammar.ts DEFAULT_DOUBT_CONFIDENCE). 0.1 or more:
   * never ask back.
   */
  doubtConfidence: t.optional(t.number(0, 1)),
  /**
   * Confidence of a turn in the call's language from which the other languages' decoders stop hearing the next
   * turns once they are long sentences in it, and hear a turn's rest only when it turns out unsure; default 0.5
   * (grammar.ts DEFAULT_FOCUS_CONFIDENCE). 1: every language decodes every turn.
   */
  focusConfidence: t.optional(t.number(0, 1)),
});
export type PocketSphinxSettings = Static<typeof POCKETSPHINX_OPTIONS>;
export const POCKETSPHINX_DEFAULTS = defaultsOf(POCKETSPHINX_OPTIONS);
