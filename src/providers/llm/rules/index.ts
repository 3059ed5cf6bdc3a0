/**
 * RuleBasedAgent: the zero-download default "LLM". Not a language model: it scores the caller's
 * utterance against per-language example phrases and keywords from `config/agent-rules.json`,
 * then answers from templates. It honours the LlmProvider contract (history in, streamed text or
 * tool calls out) so the session cannot tell it apart from a real model.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ChatMessage, LlmEvent, LlmProvider, LlmRequest, ToolCall } from '../types.js';

// ---------------------------------------------------------------------------------------------
// Config

/** Text per language: `{ en: "...", fr: "..." }`. */
export type LangText = Record<string, string>;

export interface RuleToolSpec {
  name: string;
  /** Constant values, or "{party_size}" / "{time}" / "{name}" filled from the utterance (omitted when absent). */
  arguments?: Record<string, string | number | boolean>;
}

export interface RuleIntent {
  name: string;
  /** Added to the score: breaks ties between intents (e.g. "thanks, bye" must hang up). */
  priority?: number;
  /** Example phrases per language; matched by fuzzy token overlap, not exact strings. */
  phrases: Record<string, string[]>;
  /** Single strong cue words per language; a trailing `*` matches any word with that prefix. */
  keywords?: Record<string, string[]>;
  /** Spoken before the tool call (e.g. the farewell before end_call). */
  say?: LangText;
  tool?: RuleToolSpec;
  /**
   * The reply. Without a tool: spoken directly. With a tool: spoken after the tool result, may use
   * `{args.x}` and `{result.x}`. A list gives variants: the first whose placeholders all resolve wins.
   * An empty string means nothing more to say.
   */
  reply: Record<string, string | string[]>;
}

export interface RulesConfig {
  version: 1;
  languages: string[];
  defaultLanguage: string;
  /** Minimum score (about 0..1) for an intent to win; default 0.55. */
  threshold?: number;
  /** Spoken when the history has no user turn yet (call opening). Defaults to the fallback. */
  welcome?: LangText;
  fallback: LangText;
  /** Spoken when a tool result carries an error. */
  toolError: LangText;
  /** Spoken after a tool result that no intent owns. */
  toolDone: LangText;
  intents: RuleIntent[];
}

export class RulesConfigError extends Error {
  override readonly name = 'RulesConfigError';
}

export interface RuleBasedAgentOptions {
  /** Path to the rules JSON; default: the nearest `config/agent-rules.json` above this module. */
  rulesPath?: string;
  /** Inline rules (take precedence over rulesPath). */
  rules?: RulesConfig;
}

const SLOT_NAMES = ['party_size', 'time', 'name'] as const;
type SlotName = (typeof SLOT_NAMES)[number];
type Slots = Partial<Record<SlotName, string | number>>;

/** Validates untrusted JSON; throws RulesConfigError listing every problem with its path. */
export function validateRulesConfig(raw: unknown, source = 'rules'): RulesConfig {
  const errors: string[] = [];
  const err = (where: string, msg: string): void => {
    errors.push(`${where}: ${msg}`);
  };
  if (!isRecord(raw)) throw new RulesConfigError(`${source}: expected a JSON object at the top level`);

  if (raw.version !== 1) err('version', `must be 1 (got ${JSON.stringify(raw.version)})`);
  const languages: string[] = [];
  if (Array.isArray(raw.languages) && raw.languages.length > 0 && raw.languages.every((l) => typeof l === 'string' && l !== '')) {
    languages.push(...(raw.languages as string[]));
  } else {
    err('languages', 'must be a non-empty array of language codes');
  }
  if (typeof raw.defaultLanguage !== 'string' || !languages.includes(raw.defaultLanguage)) {
    err('defaultLanguage', `must be one of languages [${languages.join(', ')}]`);
  }
  if (raw.threshold !== undefined && (typeof raw.threshold !== 'number' || raw.threshold <= 0 || raw.threshold > 2)) {
    err('threshold', 'must be a number in (0, 2]');
  }

  const checkLangText = (where: string, v: unknown, required: boolean, allowEmpty: boolean): void => {
    if (v === undefined && !required) return;
    if (!isRecord(v)) return err(where, 'must be an object of language → text');
    for (const lang of languages) {
      const t = v[lang];
      if (typeof t !== 'string' || (!allowEmpty && t.trim() === '')) err(`${where}.${lang}`, 'missing or empty text');
    }
  };
  checkLangText('welcome', raw.welcome, false, false);
  checkLangText('fallback', raw.fallback, true, false);
  checkLangText('toolError', raw.toolError, true, false);
  checkLangText('toolDone', raw.toolDone, true, false);

  if (!Array.isArray(raw.intents) || raw.intents.length === 0) {
    err('intents', 'must be a non-empty array');
  } else {
    const names = new Set<string>();
    raw.intents.forEach((intent: unknown, i: number) => {
      const at = `intents[${i}]`;
      if (!isRecord(intent)) return err(at, 'must be an object');
      const where = typeof intent.name === 'string' ? `${at} (${intent.name})` : at;
      if (typeof intent.name !== 'string' || intent.name === '') err(at, 'name must be a non-empty string');
      else if (names.has(intent.name)) err(where, 'duplicate intent name');
      else names.add(intent.name);
      if (intent.priority !== undefined && typeof intent.priority !== 'number') err(`${where}.priority`, 'must be a number');

      let cueCount = 0;
      for (const key of ['phrases', 'keywords'] as const) {
        const v = intent[key];
        if (v === undefined && key === 'keywords') continue;
        if (!isRecord(v)) {
          err(`${where}.${key}`, 'must be an object of language → array of strings');
          continue;
        }
        for (const [lang, list] of Object.entries(v)) {
          if (!languages.includes(lang)) err(`${where}.${key}.${lang}`, `language not in languages [${languages.join(', ')}]`);
          if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && tokenize(s).length > 0)) {
            err(`${where}.${key}.${lang}`, 'must be an array of non-empty strings');
          } else cueCount += list.length;
        }
      }
      if (cueCount === 0) err(where, 'needs at least one phrase or keyword');

      let tool: RuleToolSpec | undefined;
      if (intent.tool !== undefined) {
        const t = intent.tool;
        if (!isRecord(t) || typeof t.name !== 'string' || t.name === '') {
          err(`${where}.tool`, 'must be { name: string, arguments?: object }');
        } else if (t.arguments !== undefined && !isRecord(t.arguments)) {
          err(`${where}.tool.arguments`, 'must be an object');
        } else {
          tool = t as unknown as RuleToolSpec;
          for (const [k, v] of Object.entries(tool.arguments ?? {})) {
            if (!['string', 'number', 'boolean'].includes(typeof v)) {
              err(`${where}.tool.arguments.${k}`, 'must be a string, number or boolean');
            } else if (typeof v === 'string') {
              for (const ph of placeholders(v)) {
                if (!(SLOT_NAMES as readonly string[]).includes(ph)) {
                  err(`${where}.tool.arguments.${k}`, `unknown slot {${ph}} (known: ${SLOT_NAMES.join(', ')})`);
                }
              }
            }
          }
        }
      }

      if (intent.say !== undefined) {
        if (intent.tool === undefined) err(`${where}.say`, 'only makes sense with a tool');
        checkLangText(`${where}.say`, intent.say, true, false);
      }
      if (!isRecord(intent.reply)) {
        err(`${where}.reply`, 'must be an object of language → text or list of variants');
      } else {
        for (const lang of languages) {
          const r = intent.reply[lang];
          const variants = typeof r === 'string' ? [r] : Array.isArray(r) ? r : undefined;
          if (!variants || variants.length === 0 || !variants.every((s) => typeof s === 'string')) {
            err(`${where}.reply.${lang}`, 'missing (a reply is needed for every language)');
            continue;
          }
          if (!intent.tool && variants.some((s) => (s as string).trim() === '')) {
            err(`${where}.reply.${lang}`, 'empty reply is only allowed for intents with a tool');
          }
          for (const s of variants as string[]) {
            for (const ph of placeholders(s)) {
              if (!intent.tool || !/^(args|result)\.[A-Za-z0-9_]+$/.test(ph)) {
                err(`${where}.reply.${lang}`, `placeholder {${ph}} not allowed (use {args.x} or {result.x} with a tool)`);
              }
            }
          }
        }
      }
    });
  }

  if (errors.length > 0) {
    throw new RulesConfigError(`${source}: invalid rules config:\n  - ${errors.join('\n  - ')}`);
  }
  return raw as unknown as RulesConfig;
}

/** Finds config/agent-rules.json walking up from this module (works from src/ and from dist/). */
export function defaultRulesPath(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'config', 'agent-rules.json');
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve('config', 'agent-rules.json');
    dir = parent;
  }
}

// ---------------------------------------------------------------------------------------------
// Text normalisation and matching

export interface Token {
  /** Lowercase, accents kept (for names). */
  raw: string;
  /** Lowercase, accents and ß folded. */
  norm: string;
}

function fold(s: string): string {
  return s.normalize('NFD').replace(/\p{M}+/gu, '').replace(/ß/g, 'ss').replace(/æ/g, 'ae').replace(/œ/g, 'oe');
}

/** Lowercase, merge spoken time forms ("7.30", "19h", "p.m."), split on anything but letters/digits/":". */
export function tokenize(text: string): Token[] {
  const s = text
    .toLowerCase()
    .replace(/[’‘`´]/g, "'")
    // Unicode-aware boundaries: \b would split "a mí" into "am" + "í".
    .replace(/(?<![\p{L}\p{N}])([ap])\.?\s?m(?![\p{L}\p{N}])\.?/gu, (_, ap: string) => ` ${ap}m `)
    .replace(/(?<![\p{L}\p{N}])(\d{1,2})\s?[:h.]\s?(\d{2})(?![\p{L}\p{N}])/gu, (_, h: string, m: string) => ` ${h}:${m} `)
    .replace(/(?<![\p{L}\p{N}])(\d{1,2})\s?h(?![\p{L}\p{N}])/gu, (_, h: string) => ` ${h}:00 `);
  const out: Token[] = [];
  for (const raw of s.split(/[^\p{L}\p{N}:]+/u)) {
    const t = raw.replace(/^:+|:+$/g, '');
    if (t !== '') out.push({ raw: t, norm: fold(t) });
  }
  return out;
}

export function normalizeText(text: string): string {
  return tokenize(text)
    .map((t) => t.norm)
    .join(' ');
}

/** Function words across the shipped languages: they count, but far less than content words. */
const STOPWORDS = new Set(
  (
    // en
    'i me my you your we us our a an the to is it its are am be do does did can could would will please of for in on at ' +
    'and or what s d ll m re ve how that this some with like want just so um uh okay ok oh yes well there ' +
    // fr
    'je j tu vous il elle on nous le la les l un une des de du au aux et est ce c qu que qui quoi pour en m moi te t se ' +
    'sur avec voudrais veux peux pouvez ai suis ' +
    // de
    'ich du sie wir es er der die das den dem des ein eine einen einem einer und oder ist zu mit fur mir mich bitte ' +
    'mochte will ja an auf im wie was haben habe ' +
    // es
    'yo usted el los las lo una unos del al y o por para con quiero quisiera le mi me ' +
    // it
    'io lei gli uno di della al alla e che per vorrei voglio si ci sono'
  ).split(/\s+/),
);

const STOPWORD_WEIGHT = 0.25;
const FUZZY_CREDIT = 0.8;
const SINGLE_FUZZY_CREDIT = 0.6;
const OTHER_LANGUAGE_FACTOR = 0.9;

function weight(tok: string): number {
  return STOPWORDS.has(tok) ? STOPWORD_WEIGHT : 1;
}

/** Bounded Levenshtein: returns max+1 once it is certain the distance exceeds max. */
function editDistance(a: string, b: string, max: number): number {
  if (Math.abs(a.length - b.length) > max) return max + 1;
  let prev = Array.from({ length: b.length + 1 }, (_, i) => i);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    let rowMin = i;
    for (let j = 1; j <= b.length; j++) {
      const v = Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
      cur.push(v);
      if (v < rowMin) rowMin = v;
    }
    if (rowMin > max) return max + 1;
    prev = cur;
  }
  return prev[b.length];
}

interface PatternToken {
  text: string;
  prefix: boolean;
  weight: number;
}

interface Pattern {
  intent: number;
  language: string;
  tokens: PatternToken[];
  totalWeight: number;
}

/**
 * Credit in [0, 1] for a pattern token against an utterance token. Near misses (ASR spelling
 * noise, inflections like "quel"/"quelle", "book"/"booked") get partial credit.
 */
function tokenCredit(p: PatternToken, u: string, single: boolean): number {
  if (p.prefix) return u.startsWith(p.text) ? 1 : 0;
  if (p.text === u) return 1;
  if (p.weight < 1 || p.text.length < 4 || u.length < 3) return 0;
  // A lone fuzzy word is weak evidence ("auto" ≈ "aiuto"): cap it below the threshold on its own.
  const credit = single ? SINGLE_FUZZY_CREDIT : FUZZY_CREDIT;
  const [short, long] = p.text.length <= u.length ? [p.text, u] : [u, p.text];
  if (short.length >= 4 && long.length - short.length <= 2 && long.startsWith(short)) return credit;
  const max = p.text.length >= 8 ? 2 : 1;
  return editDistance(p.text, u, max) <= max ? credit : 0;
}

export interface IntentMatch {
  intent: RuleIntent;
  score: number;
}

class IntentMatcher {
  private readonly patterns: Pattern[] = [];

  constructor(private readonly config: RulesConfig) {
    config.intents.forEach((intent, index) => {
      const add = (language: string, text: string, isKeyword: boolean): void => {
        const tokens = tokenize(text).map((t): PatternToken => ({ text: t.norm, prefix: false, weight: weight(t.norm) }));
        // tokenize() drops '*', so read the prefix marker off the source text.
        if (isKeyword && text.trim().endsWith('*') && tokens.length > 0) tokens[tokens.length - 1].prefix = true;
        if (tokens.length === 0) return;
        this.patterns.push({ intent: index, language, tokens, totalWeight: tokens.reduce((s, t) => s + t.weight, 0) });
      };
      for (const [lang, list] of Object.entries(intent.phrases)) for (const p of list) add(lang, p, false);
      for (const [lang, list] of Object.entries(intent.keywords ?? {})) for (const k of list) add(lang, k, true);
    });
  }

  /** Best intent for the utterance, or undefined below the threshold. */
  match(utterance: string, language: string): IntentMatch | undefined {
    const scored = this.scoreAll(utterance, language);
    const best = scored[0];
    const threshold = this.config.threshold ?? 0.55;
    return best && best.score >= threshold ? best : undefined;
  }

  /** All intents with a positive score, best first (exposed for debugging and tests). */
  scoreAll(utterance: string, language: string): IntentMatch[] {
    const words = tokenize(utterance).map((t) => t.norm);
    if (words.length === 0) return [];
    const uWeights = words.map(weight);
    const uTotal = uWeights.reduce((s, w) => s + w, 0);
    const best = new Map<number, number>();

    for (const p of this.patterns) {
      let matched = 0;
      let contentHit = false;
      let allExact = true;
      const covered = new Map<number, number>();
      const single = p.tokens.length === 1;
      for (const pt of p.tokens) {
        let bestCredit = 0;
        let bestIdx = -1;
        for (let i = 0; i < words.length; i++) {
          const c = tokenCredit(pt, words[i], single);
          if (c > bestCredit) {
            bestCredit = c;
            bestIdx = i;
            if (c === 1) break;
          }
        }
        if (bestCredit < 1) allExact = false;
        if (bestCredit > 0) {
          matched += pt.weight * bestCredit;
          covered.set(bestIdx, Math.max(covered.get(bestIdx) ?? 0, bestCredit));
          if (pt.weight === 1) contentHit = true;
        }
      }
      // Function words alone ("is it the") say nothing, unless the pattern is only function
      // words ("what can you do") and all of them are there.
      const hasContent = p.tokens.some((t) => t.weight === 1);
      if (hasContent ? !contentHit : !allExact) continue;
      const recall = matched / p.totalWeight;
      let coveredWeight = 0;
      for (const [i, credit] of covered) coveredWeight += uWeights[i] * credit;
      const precision = coveredWeight / uTotal;
      // A function-word-only pattern must also be most of what was said, or "what do you do"
      // would fire on "what time do you open".
      if (!hasContent && precision < 0.6) continue;
      // Recall of the pattern dominates; how much of the utterance it explains breaks ties
      // ("hello, what time is it" is about time, not a greeting).
      let score = recall * (0.7 + 0.3 * precision);
      // ASR may mislabel the language: other languages' cues still count, a little less.
      if (p.language !== language) score *= OTHER_LANGUAGE_FACTOR;
      score += this.config.intents[p.intent].priority ?? 0;
      if (score > (best.get(p.intent) ?? 0)) best.set(p.intent, score);
    }
    return [...best.entries()]
      .map(([i, score]) => ({ intent: this.config.intents[i], score }))
      .sort((a, b) => b.score - a.score);
  }
}

// ---------------------------------------------------------------------------------------------
// Slot extraction (party size, time, name) for en/fr/de/es/it

const NUMBER_WORDS: Record<string, number> = {
  // en
  one: 1, two: 2, three: 3, four: 4, five: 5, six: 6, seven: 7, eight: 8, nine: 9, ten: 10, eleven: 11, twelve: 12,
  // fr
  un: 1, une: 1, deux: 2, trois: 3, quatre: 4, cinq: 5, sept: 7, huit: 8, neuf: 9, dix: 10, onze: 11, douze: 12, vingt: 20,
  // de
  eins: 1, ein: 1, eine: 1, einen: 1, zwei: 2, drei: 3, vier: 4, funf: 5, sechs: 6, sieben: 7, acht: 8, neun: 9, zehn: 10,
  elf: 11, zwolf: 12, zwanzig: 20,
  // es
  uno: 1, una: 1, dos: 2, tres: 3, cuatro: 4, cinco: 5, seis: 6, siete: 7, ocho: 8, nueve: 9, diez: 10, once: 11,
  doce: 12, veinte: 20,
  // it
  due: 2, tre: 3, quattro: 4, cinque: 5, sei: 6, sette: 7, otto: 8, nove: 9, dieci: 10, undici: 11, dodici: 12, venti: 20,
};

const PEOPLE_WORDS = new Set([
  'people', 'persons', 'person', 'guests', 'adults', 'of',
  'personnes', 'personne', 'couverts', 'gens',
  'personen', 'leute', 'gaste',
  'personas', 'persona', 'comensales',
  'persone', 'ospiti', 'coperti',
]);
const PARTY_CUES = [['for'], ['pour'], ['fur'], ['para'], ['per'], ['we', 'are'], ['we', 're'], ['nous', 'sommes'],
  ['on', 'est'], ['on', 'sera'], ['wir', 'sind'], ['somos'], ['seremos'], ['siamo'], ['siamo', 'in'], ['saremo']];
const TIME_CUES = [['at'], ['around'], ['vers'], ['um'], ['gegen'], ['a', 'las'], ['a', 'la'], ['para', 'las'],
  ['sobre', 'las'], ['hacia', 'las'], ['alle'], ['alle', 'ore'], ['per', 'le'], ['verso', 'le'], ['all']];
const TIME_MARKERS = new Set(['pm', 'am', 'oclock', 'clock', 'h', 'heure', 'heures', 'uhr', 'hora', 'horas', 'ore']);
const EVENING_WORDS = new Set(['pm', 'soir', 'tarde', 'noche', 'sera', 'abends', 'abend', 'evening', 'tonight', 'night']);
const MORNING_WORDS = new Set(['am', 'matin', 'morning', 'morgens', 'mattina']);
const NOON_WORDS = new Set(['noon', 'midday', 'midi', 'mittag', 'mediodia', 'mezzogiorno']);
const HALF = [['et', 'demie'], ['y', 'media'], ['e', 'mezza'], ['e', 'mezzo'], ['thirty']];
const QUARTER = [['et', 'quart'], ['y', 'cuarto'], ['e', 'un', 'quarto'], ['fifteen']];
const NAME_CUES = [['my', 'name', 'is'], ['name', 'is'], ['under', 'the', 'name'], ['under', 'the', 'name', 'of'],
  ['je', 'm', 'appelle'], ['au', 'nom', 'de'], ['ich', 'heisse'], ['mein', 'name', 'ist'], ['auf', 'den', 'namen'],
  ['me', 'llamo'], ['mi', 'nombre', 'es'], ['a', 'nombre', 'de'], ['mi', 'chiamo'], ['il', 'mio', 'nome', 'e'],
  ['a', 'nome', 'di']];

function numberAt(words: string[], i: number): number | undefined {
  const w = words[i];
  if (w === undefined) return undefined;
  if (/^\d{1,3}$/.test(w)) return Number(w);
  return NUMBER_WORDS[w];
}

function seqAt(words: string[], i: number, seq: string[]): boolean {
  return seq.every((s, k) => words[i + k] === s);
}

/** Longest cue ending right before index `i`. */
function cueBefore(words: string[], i: number, cues: string[][]): boolean {
  return cues.some((c) => i - c.length >= 0 && seqAt(words, i - c.length, c));
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** `at` is the index of the hour word; day-part words just around it ("tonight at 8", "8 pm") shift it. */
function formatTime(hour: number, minute: number, words: string[], at: number): string | undefined {
  let h = hour;
  const window = words.slice(Math.max(0, at - 3), at + 7);
  if (h >= 1 && h < 12 && window.some((w) => EVENING_WORDS.has(w))) h += 12;
  else if (h === 12 && window.some((w) => MORNING_WORDS.has(w))) h = 0;
  if (h > 23 || minute > 59) return undefined;
  return `${pad2(h)}:${pad2(minute)}`;
}

function minutesAfter(words: string[], i: number): { minute: number } {
  const w = words[i];
  if (w !== undefined && /^\d{2}$/.test(w) && Number(w) < 60) return { minute: Number(w) };
  for (const h of HALF) if (seqAt(words, i, h)) return { minute: 30 };
  for (const q of QUARTER) if (seqAt(words, i, q)) return { minute: 15 };
  return { minute: 0 };
}

/** Extracts booking slots from an utterance. Best-effort: a missing slot is simply absent. */
export function extractSlots(utterance: string): Slots {
  const tokens = tokenize(utterance);
  const words = tokens.map((t) => t.norm);
  const slots: Slots = {};
  const timeIdx = new Set<number>();

  // Time first, so "for 8 pm" is not read as a party of eight.
  for (let i = 0; i < words.length && slots.time === undefined; i++) {
    const w = words[i];
    const clock = /^(\d{1,2}):(\d{2})$/.exec(w);
    if (clock) {
      const t = formatTime(Number(clock[1]), Number(clock[2]), words, i);
      if (t) {
        slots.time = t;
        timeIdx.add(i);
      }
      continue;
    }
    if (NOON_WORDS.has(w)) {
      slots.time = '12:00';
      timeIdx.add(i);
      continue;
    }
    const n = numberAt(words, i);
    if (n === undefined || n > 23) continue;
    const next = words[i + 1];
    const markedByNext = next !== undefined && (TIME_MARKERS.has(next) || (next === 'o' && words[i + 2] === 'clock'));
    if (!markedByNext && !cueBefore(words, i, TIME_CUES)) continue;
    // "à 8 heures 30", "at 7 30", "a las ocho y media"
    const afterMarker = markedByNext ? i + (next === 'o' ? 3 : 2) : i + 1;
    const { minute } = minutesAfter(words, afterMarker);
    const t = formatTime(n, minute, words, i);
    if (t) {
      slots.time = t;
      timeIdx.add(i);
    }
  }

  for (let i = 0; i < words.length && slots.party_size === undefined; i++) {
    if (timeIdx.has(i)) continue;
    const n = numberAt(words, i);
    if (n === undefined || n < 1 || n > 100) continue;
    const next = words[i + 1];
    const nextIsTime = next !== undefined && (TIME_MARKERS.has(next) || next === 'o');
    if (nextIsTime) continue;
    if ((next !== undefined && PEOPLE_WORDS.has(next)) || cueBefore(words, i, PARTY_CUES)) slots.party_size = n;
  }

  for (let i = 0; i < words.length && slots.name === undefined; i++) {
    for (const cue of NAME_CUES) {
      if (!seqAt(words, i, cue)) continue;
      const tok = tokens[i + cue.length];
      if (tok && /^\p{L}{2,}$/u.test(tok.raw) && !STOPWORDS.has(tok.norm)) {
        slots.name = tok.raw.charAt(0).toUpperCase() + tok.raw.slice(1);
      }
    }
  }
  return slots;
}

// ---------------------------------------------------------------------------------------------
// Templates

function placeholders(template: string): string[] {
  return [...template.matchAll(/\{([^{}]+)\}/g)].map((m) => m[1]);
}

/** Fills `{x}` / `{a.b}` from vars; undefined when any placeholder has no value. */
function fill(template: string, vars: Record<string, unknown>): string | undefined {
  let missing = false;
  const out = template.replace(/\{([^{}]+)\}/g, (_, key: string) => {
    let v: unknown = vars;
    for (const part of key.split('.')) v = isRecord(v) ? v[part] : undefined;
    if (v === undefined || v === null || v === '' || typeof v === 'object') {
      missing = true;
      return '';
    }
    return String(v);
  });
  return missing ? undefined : out;
}

function pickVariant(reply: string | string[] | undefined, vars: Record<string, unknown>): string | undefined {
  if (reply === undefined) return undefined;
  const variants = typeof reply === 'string' ? [reply] : reply;
  for (const v of variants) {
    const filled = fill(v, vars);
    if (filled !== undefined) return filled;
  }
  return undefined;
}

/** Word chunks that keep their trailing space, so concatenation restores the text exactly. */
function chunkWords(text: string): string[] {
  return text.match(/\S+\s*/g) ?? [];
}

// ---------------------------------------------------------------------------------------------
// The provider

const yieldToLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

export class RuleBasedAgent implements LlmProvider {
  readonly name = 'rules';
  private config: RulesConfig | undefined;
  private matcher: IntentMatcher | undefined;
  private loading: Promise<void> | undefined;
  private callCounter = 0;

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
  }

  private install(config: RulesConfig): void {
    this.config = config;
    this.matcher = new IntentMatcher(config);
  }

  /** Which intent an utterance maps to (undefined → fallback). For tests and debugging. */
  classify(utterance: string, language: string): IntentMatch | undefined {
    return this.matcher?.match(utterance, this.resolveLanguage(language));
  }

  async *stream(request: LlmRequest): AsyncGenerator<LlmEvent> {
    await this.load();
    const config = this.rules;
    const lang = this.resolveLanguage(request.language);
    const { signal } = request;
    if (signal.aborted) {
      yield { type: 'done', finishReason: 'cancelled' };
      return;
    }
    const plan = this.plan(request.messages, lang, config);

    // Stream word chunks, yielding to the event loop between them so abort and downstream TTS interleave.
    for (const chunk of chunkWords(plan.text)) {
      await yieldToLoop();
      if (signal.aborted) {
        yield { type: 'done', finishReason: 'cancelled' };
        return;
      }
      yield { type: 'text', text: chunk };
    }
    if (plan.toolCall) {
      await yieldToLoop();
      if (signal.aborted) {
        yield { type: 'done', finishReason: 'cancelled' };
        return;
      }
      yield { type: 'tool_call', call: plan.toolCall };
      yield { type: 'done', finishReason: 'tool_calls' };
      return;
    }
    yield { type: 'done', finishReason: 'stop' };
  }

  private resolveLanguage(language: string): string {
    const config = this.config;
    const primary = (language || '').toLowerCase().split(/[-_]/)[0];
    if (!config) return primary || 'en';
    return config.languages.includes(primary) ? primary : config.defaultLanguage;
  }

  private plan(messages: readonly ChatMessage[], lang: string, config: RulesConfig): { text: string; toolCall?: ToolCall } {
    const last = messages[messages.length - 1];
    if (last?.role === 'tool') return { text: this.replyToToolResult(messages, lang, config) };

    const utterance = [...messages].reverse().find((m) => m.role === 'user');
    if (!utterance) return { text: config.welcome?.[lang] ?? config.fallback[lang] };

    const match = this.matcher?.match(utterance.content, lang);
    if (!match) return { text: config.fallback[lang] };
    const { intent } = match;

    if (!intent.tool) return { text: pickVariant(intent.reply[lang], {}) ?? config.fallback[lang] };

    const slots = extractSlots(utterance.content);
    const args: Record<string, string | number | boolean> = {};
    for (const [key, value] of Object.entries(intent.tool.arguments ?? {})) {
      if (typeof value !== 'string') {
        args[key] = value;
        continue;
      }
      const single = /^\{(\w+)\}$/.exec(value);
      if (single) {
        // A whole-value slot keeps its type (party_size stays a number); absent slots are omitted.
        const v = slots[single[1] as SlotName];
        if (v !== undefined) args[key] = v;
        continue;
      }
      const filled = fill(value, slots);
      if (filled !== undefined) args[key] = filled;
    }
    this.callCounter += 1;
    const toolCall: ToolCall = {
      // The intent name in the id lets the tool-result turn find its reply template again.
      id: `call_rules_${intent.name}_${this.callCounter}`,
      name: intent.tool.name,
      arguments: JSON.stringify(args),
    };
    return { text: intent.say?.[lang] ?? '', toolCall };
  }

  private replyToToolResult(messages: readonly ChatMessage[], lang: string, config: RulesConfig): string {
    // The trailing run of tool messages answers the assistant turn right before it.
    let i = messages.length - 1;
    const results: ChatMessage[] = [];
    while (i >= 0 && messages[i].role === 'tool') results.unshift(messages[i--]);
    const calls = messages[i]?.role === 'assistant' ? (messages[i].toolCalls ?? []) : [];

    const texts: string[] = [];
    for (const result of results) {
      const call = calls.find((c) => c.id === result.toolCallId);
      const parsed = safeJson(result.content);
      if (isRecord(parsed) && parsed.error !== undefined) {
        texts.push(config.toolError[lang]);
        continue;
      }
      const intent = call ? this.intentForCall(call, config) : undefined;
      if (!intent) {
        texts.push(config.toolDone[lang]);
        continue;
      }
      const vars = { args: call ? safeJson(call.arguments) : {}, result: parsed };
      const text = pickVariant(intent.reply[lang], vars);
      texts.push(text ?? config.toolDone[lang]);
    }
    return [...new Set(texts.filter((t) => t !== ''))].join(' ');
  }

  private intentForCall(call: ToolCall, config: RulesConfig): RuleIntent | undefined {
    const byId = /^call_rules_(.+)_\d+$/.exec(call.id)?.[1];
    return (
      config.intents.find((it) => it.name === byId && it.tool?.name === call.name) ??
      config.intents.find((it) => it.tool?.name === call.name)
    );
  }
}

function safeJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
