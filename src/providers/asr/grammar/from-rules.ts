/**
 * GrammarSpecs built from the current rule-based agent's config (config/agent-rules.json): its intent
 * phrases per language, plus booking answers with slots (party size, time, name) and yes/no.
 * A stand-in until the agent implements VocabularySource itself; `grammarSource()` is the one place that
 * chooses where the service's grammars come from.
 */
import { readFile } from 'node:fs/promises';
import type { LlmProvider } from '../../llm/types.js';
import { defaultRulesPath, normalizeText, validateRulesConfig, type RulesConfig } from '../../llm/rules/index.js';
import type { GrammarSpec, VocabularySource } from './spec.js';

export interface RulesGrammarOptions {
  /** Languages to build (default: every language of the rules that has templates here: en, es). */
  languages?: readonly string[];
  /** Names callers may give for a booking, per language (default: a short list of common names). */
  names?: Record<string, readonly string[]>;
}

const EN_NUMBERS = ['one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine', 'ten', 'eleven', 'twelve',
  'thirteen', 'fourteen', 'fifteen', 'sixteen', 'seventeen', 'eighteen', 'nineteen', 'twenty'];
const ES_NUMBERS = ['una', 'dos', 'tres', 'cuatro', 'cinco', 'seis', 'siete', 'ocho', 'nueve', 'diez', 'once', 'doce',
  'trece', 'catorce', 'quince', 'dieciseis', 'diecisiete', 'dieciocho', 'diecinueve', 'veinte'];

const DEFAULT_NAMES: Record<string, readonly string[]> = {
  en: ['smith', 'johnson', 'brown', 'jones', 'miller', 'davis', 'wilson', 'taylor', 'john', 'mary', 'david', 'sarah',
    'michael', 'anna', 'peter', 'laura', 'james', 'emma'],
  es: ['garcia', 'martinez', 'lopez', 'sanchez', 'perez', 'gomez', 'fernandez', 'rodriguez', 'maria', 'jose', 'carmen',
    'juan', 'lucia', 'carlos', 'ana', 'pablo', 'elena', 'javier'],
};

function englishTimes(): string[] {
  const hours = EN_NUMBERS.slice(0, 12);
  const out: string[] = ['noon', 'midday'];
  for (const h of hours) {
    out.push(h, `${h} pm`, `${h} am`, `${h} o'clock`, `half past ${h}`, `quarter past ${h}`, `${h} thirty`, `${h} fifteen`,
      `${h} in the evening`, `${h} tonight`);
  }
  return out;
}

function spanishTimes(): string[] {
  const hours = ['una', ...ES_NUMBERS.slice(1, 12)];
  const out: string[] = ['mediodia'];
  for (const h of hours) {
    const article = h === 'una' ? 'la' : 'las';
    out.push(`${article} ${h}`, `${article} ${h} y media`, `${article} ${h} y cuarto`, `${article} ${h} de la tarde`,
      `${article} ${h} de la noche`, `${article} ${h} en punto`);
  }
  return out;
}

/** Booking answers and confirmations, per language. Slot names match the agent's (party_size, time, name). */
const TEMPLATES: Record<string, { sentences: string[]; expectations: Record<string, string[]> }> = {
  en: {
    sentences: [
      'a table for {party_size}', 'a table for {party_size} people', 'a table for {party_size} at {time}', 'a table for {party_size} people at {time}',
      'i would like to book a table for {party_size} people', 'i would like to book a table for {party_size} people at {time}',
      'book a table for {party_size}', 'book a table for {party_size} at {time}', 'book a table for {party_size} people',
      'i would like to book a table for {party_size}', 'i would like to book a table for {party_size} at {time}',
      'i would like a table for {party_size} at {time}', 'can i book a table for {party_size} at {time}',
      'table for {party_size}', 'table for {party_size} at {time}', 'reserve a table for {party_size}',
      'reserve a table for {party_size} at {time}', '{party_size} people', 'for {party_size} people',
      'we are {party_size}', 'at {time}', 'around {time}', 'tonight at {time}',
      'my name is {name}', 'the name is {name}', 'under the name {name}',
      'yes', 'yes please', 'no', 'no thanks', 'no thank you', 'that is right', 'cancel', 'start over',
    ],
    expectations: {
      'book_appointment.party_size': ['{party_size}', '{party_size} people', 'for {party_size} people', 'we are {party_size}'],
      'book_appointment.time': ['{time}', 'at {time}', 'around {time}', 'tonight at {time}'],
      'book_appointment.name': ['{name}', 'my name is {name}', 'the name is {name}', 'under the name {name}'],
      'book_appointment.confirm': ['yes', 'yes please', 'yeah', 'no', 'no thanks', 'that is right', 'correct', 'cancel'],
    },
  },
  es: {
    sentences: [
      'una mesa para {party_size}', 'una mesa para {party_size} a {time}', 'una mesa para {party_size} personas',
      'quiero reservar una mesa para {party_size} personas',
      'una mesa para {party_size} personas a {time}', 'quiero reservar una mesa para {party_size}',
      'quiero reservar una mesa para {party_size} a {time}', 'quisiera reservar una mesa para {party_size} personas a {time}',
      'reservar una mesa para {party_size} a {time}', '{party_size} personas', 'para {party_size} personas',
      'somos {party_size}', 'a {time}', 'para {time}', 'sobre {time}',
      'me llamo {name}', 'mi nombre es {name}', 'a nombre de {name}',
      'si', 'si por favor', 'no', 'no gracias', 'eso es', 'cancelar', 'empezar de nuevo',
    ],
    expectations: {
      'book_appointment.party_size': ['{party_size}', '{party_size} personas', 'para {party_size} personas', 'somos {party_size}'],
      'book_appointment.time': ['{time}', 'a {time}', 'para {time}', 'sobre {time}'],
      'book_appointment.name': ['{name}', 'me llamo {name}', 'mi nombre es {name}', 'a nombre de {name}'],
      'book_appointment.confirm': ['si', 'si por favor', 'vale', 'no', 'no gracias', 'correcto', 'eso es', 'cancelar'],
    },
  },
};

/** GrammarSpecs for the languages that have both phrases in the rules and slot templates here. */
export function grammarSpecsFromRules(rules: RulesConfig, options: RulesGrammarOptions = {}): GrammarSpec[] {
  const wanted = options.languages ?? Object.keys(TEMPLATES);
  const specs: GrammarSpec[] = [];
  for (const language of wanted) {
    const templates = TEMPLATES[language];
    if (!templates || !rules.languages.includes(language)) continue;
    const sentences = new Set<string>();
    for (const intent of rules.intents) {
      // normalizeText folds accents and punctuation the same way the agent reads a transcript.
      for (const phrase of intent.phrases[language] ?? []) sentences.add(normalizeText(phrase));
    }
    for (const s of templates.sentences) sentences.add(s);
    const numbers = language === 'es' ? ES_NUMBERS : EN_NUMBERS;
    specs.push({
      language,
      sentences: [...sentences],
      slots: {
        party_size: language === 'es' ? ['una', 'un', 'uno', ...numbers.slice(1)] : numbers,
        time: language === 'es' ? spanishTimes() : englishTimes(),
        name: [...(options.names?.[language] ?? DEFAULT_NAMES[language] ?? [])],
      },
      expectations: templates.expectations,
    });
  }
  return specs;
}

export async function loadRulesGrammarSpecs(rulesPath?: string, options: RulesGrammarOptions = {}): Promise<GrammarSpec[]> {
  const file = rulesPath ?? defaultRulesPath();
  const rules = validateRulesConfig(JSON.parse(await readFile(file, 'utf8')) as unknown, file);
  return grammarSpecsFromRules(rules, options);
}

export function isVocabularySource(value: unknown): value is VocabularySource {
  return typeof value === 'object' && value !== null && typeof (value as Partial<VocabularySource>).grammarSpecs === 'function';
}

/**
 * Where the service's grammars come from: the agent itself when it can describe what it understands,
 * else the rules file it reads. The one place to change when the agent implements VocabularySource.
 */
export async function grammarSource(
  llm: LlmProvider,
  config: { rulesPath?: string; languages?: readonly string[]; names?: Record<string, readonly string[]> },
): Promise<GrammarSpec[]> {
  if (isVocabularySource(llm)) {
    const specs = llm.grammarSpecs();
    return config.languages ? specs.filter((s) => config.languages?.includes(s.language)) : specs;
  }
  return loadRulesGrammarSpecs(config.rulesPath, { languages: config.languages, names: config.names });
}
