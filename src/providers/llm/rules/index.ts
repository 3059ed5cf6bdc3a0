/**
 * RuleBasedAgent: the zero-download default "LLM". Not a language model: a dialogue engine driven by
 * `config/agent-rules.json` (or another domain's file): intents matched on per-language example phrases,
 * forms that collect slots one question at a time, confirmation, corrections, and replies in the caller's
 * language. It honours the LlmProvider contract (history in, streamed text or tool calls out) so the
 * session cannot tell it apart from a real model.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { readFile } from 'node:fs/promises';
import type { GrammarSpec, VocabularySource } from '../../asr/grammar/spec.js';
import type { ChatMessage, LlmEvent, LlmProvider, LlmRequest } from '../types.js';
import { defaultRulesPath, RulesConfigError, validateRulesConfig, type RulesConfig } from './config.js';
import { buildVocabulary, expectationOf, isSensitiveSlot, replay, utteranceSlots, type DialogueState, type EngineContext, type Output, type ReplayPoint } from './engine.js';
import { buildGrammarSpecs } from './grammar.js';
import { DEFAULT_LEXICON, DEFAULT_MESSAGES, type Lexicon, type MessageKey } from './lexicon.js';
import { IntentMatcher, type IntentMatch } from './matcher.js';
import { numbersToDigits, parseClock, warmDateParsers, words, type OpeningHours } from './values.js';
import { isValidTimeZone } from '../tools.js';
import type { RulesSettings } from './options.js';

export * from './config.js';
export { tokenize, normalizeText, IntentMatcher, type IntentMatch, type Token } from './matcher.js';
export type { DialogueState, Output } from './engine.js';

/** The options `providers.llm` declares for provider "rules" (./options.ts), and what only code passes. */
export interface RuleBasedAgentOptions extends RulesSettings {
  /** Inline rules (take precedence over rulesPath). */
  rules?: RulesConfig;
  /** Clock injection for tests ("tomorrow" is relative to it). */
  now?: () => Date;
  /** IANA zone (default: the rules' domain.timezone, else $TZ, else the system zone). */
  timezone?: string;
  /** Read a date in each language at load (warmDateParsers), as a service answering calls wants; off for tools and tests. */
  warmDateParsers?: boolean;
}

/** Booking slots from one utterance, in whichever of the five languages it is (kept for callers of the old API). */
export function extractSlots(utterance: string, language?: string): Record<string, string | number> {
  const langs = language ? [language] : ['en', 'fr', 'de', 'es', 'it'];
  let best: Record<string, string | number> = {};
  for (const lang of langs) {
    const found = utteranceSlots(numbersToDigits(words(utterance), lang), utterance) as Record<string, string | number>;
    if (Object.keys(found).length > Object.keys(best).length) best = found;
  }
  return best;
}

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

/** Word chunks that keep their trailing space, so concatenation restores the text exactly. */
function chunkWords(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [];
}

export class RuleBasedAgent implements LlmProvider, VocabularySource {
  readonly name = 'rules';
  // The whole reply at once: rules compute it, nothing to stream.
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: false };
  /** Forms and confirmations are replayed from the whole conversation: no context window may cut it. */
  readonly wholeConversation = true;
  private config: RulesConfig | undefined;
  private matcher: IntentMatcher | undefined;
  private lexicon: Lexicon = DEFAULT_LEXICON;
  private messages: Record<MessageKey, Record<string, string>> = DEFAULT_MESSAGES;
  private vocabulary = new Map<string, Set<string>>();
  private loading: Promise<void> | undefined;
  /** Replays of conversations seen before, so each turn replays only its new messages (see engine.replay). */
  private memo = new WeakMap<ChatMessage, ReplayPoint>();

  constructor(private readonly options: RuleBasedAgentOptions = {}) {
    // Inline rules are validated eagerly: a bad literal is a programming error, surface it now.
    if (options.rules) this.install(validateRulesConfig(options.rules, 'inline rules'));
  }

  /** The active config (after load()). */
  get rules(): RulesConfig {
    if (!this.config) throw new Error('RuleBasedAgent: call load() first');
    return this.config;
  }

  load(): Promise<void> {
    if (this.config) return Promise.resolve();
    this.loading ??= this.loadFile().catch((e: unknown) => {
      this.loading = undefined;
      throw e;
    });
    return this.loading;
  }

  private async loadFile(): Promise<void> {
    const file = this.options.rulesPath ?? defaultRulesPath();
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      throw new RulesConfigError(`${file}: cannot read rules file (${e instanceof Error ? e.message : String(e)})`);
    }
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new RulesConfigError(`${file}: not valid JSON (${e instanceof Error ? e.message : String(e)})`);
    }
    this.install(validateRulesConfig(json, file));
    const config = this.config;
    // In the background: the agent is usable at once, and the first callers' turns come seconds later.
    if (config && this.options.warmDateParsers === true) void warmDateParsers(config.languages, this.zoneOf(config)).catch(() => undefined);
  }

  private zoneOf(config: RulesConfig): string {
    return this.options.timezone ?? config.domain?.timezone ?? process.env.TZ ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
  }

  private install(config: RulesConfig): void {
    const tz = this.options.timezone ?? config.domain?.timezone;
    if (tz !== undefined && !isValidTimeZone(tz)) throw new RulesConfigError(`domain.timezone: unknown IANA zone "${tz}"`);
    this.config = config;
    this.matcher = new IntentMatcher(config);
    const extra = config.lexicon ?? {};
    const merge = (base: Record<string, string[]>, add: Record<string, string[]> | undefined): Record<string, string[]> => {
      const out: Record<string, string[]> = { ...base };
      for (const [l, list] of Object.entries(add ?? {})) out[l] = [...(out[l] ?? []), ...list];
      return out;
    };
    this.lexicon = {
      yes: merge(DEFAULT_LEXICON.yes, extra.yes),
      no: merge(DEFAULT_LEXICON.no, extra.no),
      cancel: merge(DEFAULT_LEXICON.cancel, extra.cancel),
      correction: merge(DEFAULT_LEXICON.correction, extra.correction),
    };
    const messages = { ...DEFAULT_MESSAGES };
    for (const [k, v] of Object.entries(config.messages ?? {})) if (v) messages[k as MessageKey] = { ...messages[k as MessageKey], ...v };
    this.messages = messages;
    this.vocabulary = buildVocabulary(config, this.lexicon);
    this.memo = new WeakMap();
  }

  /** Which intent an utterance maps to (undefined → fallback). For tests and debugging. */
  classify(utterance: string, language: string): IntentMatch | undefined {
    return this.matcher?.match(utterance, this.resolveLanguage(language));
  }

  /** The language whose rules match the text best (LlmProvider.detectLanguage); undefined before load() or on no match. */
  detectLanguage(text: string): string | undefined {
    if (!this.config) return undefined;
    let best: { lang: string; score: number } | undefined;
    for (const lang of this.config.languages) {
      const match = this.classify(text, lang);
      if (match && (!best || match.score > best.score)) best = { lang, score: match.score };
    }
    return best?.lang;
  }

  /** The dialogue state after this conversation (for tests, the benchmark and debugging). */
  state(messages: readonly ChatMessage[], language: string): DialogueState {
    return replay(this.context(), messages, this.resolveLanguage(language), this.memo).state;
  }

  expectation(messages: readonly ChatMessage[]): string | undefined {
    if (!this.config) return undefined;
    return expectationOf(replay(this.context(), messages, this.config.defaultLanguage, this.memo).state);
  }

  /** For a transfer's summary: the intents asked for and the slots filled (sensitive ones masked). */
  handoverFacts(messages: readonly ChatMessage[]): { intents: string[]; slots: Record<string, string>; notUnderstood: number } {
    if (!this.config) return { intents: [], slots: {}, notUnderstood: 0 };
    const config = this.config;
    const state = replay(this.context(), messages, config.defaultLanguage, this.memo).state;
    const forms = [...state.done, ...(state.form ? [state.form] : [])];
    const slots: Record<string, string> = {};
    for (const form of forms) {
      const specs = config.intents.find((i) => i.name === form.intent)?.slots ?? [];
      for (const [name, value] of Object.entries(form.slots)) slots[name] = specs.find((s) => s.name === name)?.sensitive ? '****' : String(value);
    }
    // A goodbye is not a request; a transfer intent is (it names what the caller wanted: "card team").
    const ending = (name: string): boolean => config.intents.find((i) => i.name === name)?.tool?.name === 'end_call';
    const intents = [...new Set([...(state.asked ?? []), ...forms.map((f) => f.intent)])].filter((name) => !ending(name));
    return { intents, slots, notUnderstood: state.notUnderstood ?? 0 };
  }

  isSensitive(expectation: string): boolean {
    const [intentName, slotName] = expectation.split('.');
    return this.config !== undefined && isSensitiveSlot(this.config, intentName, slotName);
  }

  grammarSpecs(): GrammarSpec[] {
    return buildGrammarSpecs(this.rules, this.lexicon, this.hours());
  }

  async *stream(request: LlmRequest): AsyncGenerator<LlmEvent> {
    await this.load();
    const { signal } = request;
    if (signal.aborted) {
      yield { type: 'done', finishReason: 'cancelled' };
      return;
    }
    const lang = this.resolveLanguage(request.language);
    const output: Output = replay(this.context(), request.messages, lang, this.memo).output ?? { text: '', language: lang };

    if (output.language !== lang) yield { type: 'language', language: output.language };
    if (output.confirms) yield { type: 'confirmation', call: output.confirms };
    // Stream word chunks, yielding to the event loop between them so abort and downstream TTS interleave.
    for (const chunk of chunkWords(output.text)) {
      await yieldToLoop();
      if (signal.aborted) {
        yield { type: 'done', finishReason: 'cancelled' };
        return;
      }
      yield { type: 'text', text: chunk };
    }
    if (output.toolCall) {
      await yieldToLoop();
      if (signal.aborted) {
        yield { type: 'done', finishReason: 'cancelled' };
        return;
      }
      yield { type: 'tool_call', call: output.toolCall };
      yield { type: 'done', finishReason: 'tool_calls' };
      return;
    }
    yield { type: 'done', finishReason: 'stop' };
  }

  private context(): EngineContext {
    const config = this.rules;
    if (!this.matcher) throw new Error('RuleBasedAgent: call load() first');
    return {
      config,
      matcher: this.matcher,
      lexicon: this.lexicon,
      messages: this.messages,
      vocabulary: this.vocabulary,
      now: this.options.now?.() ?? new Date(),
      timeZone: this.zoneOf(config),
      hours: this.hours(),
    };
  }

  private hours(): OpeningHours | undefined {
    const h = this.config?.domain?.openingHours;
    if (!h) return undefined;
    const open = parseClock(h.open.padStart(5, '0'));
    const close = h.close === '24:00' ? 24 * 60 : parseClock(h.close.padStart(5, '0'));
    return open !== undefined && close !== undefined ? { open, close } : undefined;
  }

  private resolveLanguage(language: string): string {
    const config = this.config;
    const primary = (language || '').toLowerCase().split(/[-_]/)[0];
    if (!config) return primary || 'en';
    return config.languages.includes(primary) ? primary : config.defaultLanguage;
  }
}
