import type { AsrProvider } from '../types.js';

/**
 * What callers can say to the agent, per language: the seam between the agent (which knows its intents,
 * forms and slot types) and a recogniser that can decode against a grammar (PocketSphinx JSGF, a
 * server's phrase hints). The agent produces it; the ASR compiles it. Neither knows the other's internals.
 */
export interface GrammarSpec {
  /** BCP-47 primary tag ("en", "es"). */
  language: string;
  /**
   * Sentence templates: lowercase words and `{slot}` references, e.g. "a table for {party_size} at {time}".
   * Every sentence the agent understands in this language, including slot answers ("{party_size} people"),
   * yes/no, corrections and commands ("cancel", "start over").
   */
  sentences: string[];
  /** Spoken forms of each slot's values (plain lowercase words, no references), e.g. party_size → ["two", "three"]. */
  slots: Record<string, string[]>;
  /**
   * Sentences preferred while the agent waits for a particular answer, keyed by expectation name (normally
   * "<intent>.<slot>" or "<intent>.confirm"). The whole grammar stays allowed; these are weighted up.
   * A sentence listed here but not in `sentences` (a bare answer such as "{time}" or "{party_size}") is
   * allowed only while its expectation is active: out of context a lone number or name is more often a
   * misheard phrase than an answer.
   */
  expectations?: Record<string, string[]>;
}

/** Implemented by agents that can describe what they understand (the embedded rule-based brain). */
export interface VocabularySource {
  /** One spec per language the agent speaks. */
  grammarSpecs(): GrammarSpec[];
}

/** Implemented by recognisers that can use a GrammarSpec. */
export interface GrammarAware {
  /** (Re)compile the grammars; called at load and whenever the agent's definition changes. */
  setGrammars(specs: readonly GrammarSpec[]): Promise<void>;
}

/**
 * Implemented by recognisers that keep several agents' grammars side by side on one engine (src/agents): each
 * agent version's grammars under its own key, beside the default ones of setGrammars().
 */
export interface AgentGrammarAware {
  /** Compiles `key`'s grammars (an agent version); the default grammars and other keys' stay as they are. */
  setAgentGrammars(key: string, specs: readonly GrammarSpec[]): Promise<void>;
  /** Frees `key`'s decoders: call it once no call uses that agent version. */
  dropAgentGrammars(key: string): Promise<void>;
  /** The recogniser as calls of `key` see it: the shared engine, decoding against `key`'s grammars. */
  forAgent(key: string): AsrProvider;
}
