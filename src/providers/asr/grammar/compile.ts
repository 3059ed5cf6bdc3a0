/**
 * GrammarSpec → what a PocketSphinx decoder needs: JSGF text, a pronouncing dictionary holding only the
 * grammar's words, and a matcher that tells whether a (partial) hypothesis already completes a sentence.
 *
 * Rejection is not done here: the decoder compares the grammar path with a free phone loop of the same
 * model (pocketsphinx/grammar.ts). An optional garbage loop (single-phone pseudo-words around the sentence)
 * can be compiled in; measured, it does not pay (see CompileOptions.garbageWeight).
 */
import { readFile } from 'node:fs/promises';
import type { GrammarSpec } from './spec.js';
import { spanishDialectVariants, spanishG2p } from './g2p-es.js';
import { sentenceFsg, type Token } from './fsg.js';
import { isWholeSentence, SentenceMatcher, type SentenceStanding } from './sentence-matcher.js';

/** Prefix of the garbage pseudo-words in the dictionary and in hypotheses. */
export const GARBAGE_PREFIX = 'gbg_';


export interface CompileOptions {
  /**
   * Optional garbage loop around the sentences: the probability-like JSGF weight of each garbage phone (e.g.
   * 1e-20), the cost of explaining a phone as garbage rather than as part of a sentence. Off by default:
   * measured, it either swallowed short in-domain sentences or let noise through (BENCHMARKS.md); the
   * phone-loop likelihood ratio is the better rejection signal.
   */
  garbageWeight?: number;
  /** Weight given to an expectation's sentences over the rest of the grammar in its search. */
  expectationWeight?: number;
  /** The decoders' `-lw` (language weight), which scales an FSG file's probabilities (fsg.ts). */
  languageWeight?: number;
  /**
   * Spanish words also in their seseo and yeísmo readings (`spanishDialectVariants`): the model's dictionary is
   * Castilian, most callers are not. Default true; false keeps the dictionary's pronunciations alone.
   */
  spanishDialects?: boolean;
}

/** PocketSphinx's default `-lw`. */
export const DEFAULT_LANGUAGE_WEIGHT = 6.5;

export interface CompiledGrammar {
  language: string;
  /** The main search. */
  jsgf: string;
  /** One search per expectation name: the same grammar with that expectation's sentences weighted up. */
  expectationJsgf: Record<string, string>;
  /**
   * The same searches as minimal word automata (fsg.ts), which decode the same sentences for a fraction of the CPU;
   * absent with a garbage loop (its cycles are left to the JSGF compiler).
   */
  fsg?: string;
  expectationFsg: Record<string, string>;
  /** Dictionary lines (`word PH ON ES`) for every word the grammars use, garbage phones included. */
  dict: string;
  /** Words not in the model's dictionary, with how they were handled. */
  missing: Array<{ word: string; resolution: 'g2p' | 'dropped' }>;
  /** Sentences left out because a word had no pronunciation. */
  dropped: string[];
  /** Number of sentence templates compiled. */
  sentenceCount: number;
  /** True when `text` (words separated by spaces) is a whole sentence of the grammar. */
  isComplete(text: string): boolean;
  /** Where `text` stands: no sentence's start, a strict prefix, a whole sentence, or one that can also go on. */
  standing(text: string): SentenceStanding;
}

export type PronouncingDictionary = Map<string, string[][]>;

const dictCache = new Map<string, Promise<PronouncingDictionary>>();

/** Reads a CMU-format dictionary (`word PH ...`, alternates as `word(2)`); cached per path. */
export function loadDictionary(file: string): Promise<PronouncingDictionary> {
  let cached = dictCache.get(file);
  if (!cached) {
    cached = readFile(file, 'utf8').then(parseDictionary);
    cached.catch(() => dictCache.delete(file));
    dictCache.set(file, cached);
  }
  return cached;
}

export function parseDictionary(text: string): PronouncingDictionary {
  const dict: PronouncingDictionary = new Map();
  for (const line of text.split('\n')) {
    const parts = line.trim().split(/\s+/);
    if (parts.length < 2) continue;
    const word = parts[0].replace(/\(\d+\)$/, '');
    const list = dict.get(word);
    const phones = parts.slice(1);
    if (list) list.push(phones);
    else dict.set(word, [phones]);
  }
  return dict;
}

/** Every phone the dictionary uses: the garbage loop's alphabet. */
function phoneSet(dict: PronouncingDictionary): string[] {
  const phones = new Set<string>();
  for (const prons of dict.values()) for (const p of prons) for (const ph of p) phones.add(ph);
  return [...phones].sort();
}

const phoneSetCache = new WeakMap<PronouncingDictionary, string[]>();

/** JSGF tokens: plain lowercase words; anything else in a template is a slot reference or punctuation. */
function words(text: string): string[] {
  return text
    .toLowerCase()
    .replace(/[¿?¡!.,;]/g, ' ')
    .split(/\s+/)
    .filter((w) => w !== '');
}

const ENGLISH_CLITICS = new Set(['s', 'd', 'll', 're', 've', 'm', 't']);

/**
 * The agent's phrases are normalised text ("that s all"); the English dictionary spells the clitic joined
 * ("that's"). Join them where the dictionary knows the joined word.
 */
function joinClitics(tokens: string[], dict: PronouncingDictionary): string[] {
  const out: string[] = [];
  for (const t of tokens) {
    const prev = out[out.length - 1];
    if (prev !== undefined && ENGLISH_CLITICS.has(t) && dict.has(`${prev}'${t}`)) out[out.length - 1] = `${prev}'${t}`;
    else out.push(t);
  }
  return out;
}


function parseTemplate(template: string): Token[] {
  const out: Token[] = [];
  for (const part of template.split(/(\{[^{}]+\})/)) {
    const ref = /^\{([^{}]+)\}$/.exec(part);
    if (ref) out.push({ slot: ref[1] });
    else for (const w of words(part)) out.push({ word: w });
  }
  return out;
}

function decimal(n: number): string {
  return n.toFixed(20).replace(/0+$/, '').replace(/\.$/, '');
}

function ruleName(prefix: string, name: string): string {
  return `${prefix}_${name.replace(/[^A-Za-z0-9_]/g, '_')}`;
}

export async function compileGrammar(
  spec: GrammarSpec,
  dictionary: PronouncingDictionary,
  options: CompileOptions = {},
  log?: (msg: string, data: Record<string, unknown>) => void,
): Promise<CompiledGrammar> {
  const language = spec.language.toLowerCase().split(/[-_]/)[0];
  const pronunciations = new Map<string, string[][]>();
  const missing: CompiledGrammar['missing'] = [];
  const missingSeen = new Set<string>();

  /** Pronunciations for a word, from the model's dictionary or by rule; undefined drops its sentence. */
  const pronounce = (word: string): string[][] | undefined => {
    const done = pronunciations.get(word);
    if (done) return done;
    const withDialects = (prons: string[][]): string[][] => {
      const all = language === 'es' && options.spanishDialects !== false ? spanishDialectVariants(prons) : prons;
      pronunciations.set(word, all);
      return all;
    };
    const known = dictionary.get(word);
    if (known) return withDialects(known);
    const g2p = language === 'es' ? spanishG2p(word) : undefined;
    if (!missingSeen.has(word)) {
      missingSeen.add(word);
      missing.push({ word, resolution: g2p ? 'g2p' : 'dropped' });
    }
    if (!g2p) return undefined;
    return withDialects([g2p]);
  };

  const normalise = (tokens: string[]): string[] => (language === 'en' ? joinClitics(tokens, dictionary) : tokens);

  // Slots: each value a word sequence; values with unpronounceable words are dropped.
  const slotValues = new Map<string, string[][]>();
  for (const [name, values] of Object.entries(spec.slots)) {
    const kept: string[][] = [];
    const seen = new Set<string>();
    for (const value of values) {
      const ws = normalise(words(value));
      const key = ws.join(' ');
      if (ws.length === 0 || seen.has(key)) continue;
      seen.add(key);
      if (ws.every((w) => pronounce(w) !== undefined)) kept.push(ws);
    }
    if (kept.length > 0) slotValues.set(name, kept);
  }

  const dropped: string[] = [];
  const kept: Token[][] = [];
  const keptText = new Set<string>();
  const accept = (template: string): Token[] | undefined => {
    const tokens = parseTemplate(template);
    // Re-join clitics across plain words only.
    const joined: Token[] = [];
    for (const t of tokens) {
      const prev = joined[joined.length - 1];
      if ('word' in t && prev && 'word' in prev && language === 'en' && ENGLISH_CLITICS.has(t.word) && dictionary.has(`${prev.word}'${t.word}`)) {
        joined[joined.length - 1] = { word: `${prev.word}'${t.word}` };
      } else joined.push(t);
    }
    if (joined.length === 0) return undefined;
    for (const t of joined) {
      if ('slot' in t ? !slotValues.has(t.slot) : pronounce(t.word) === undefined) {
        dropped.push(template);
        return undefined;
      }
    }
    return joined;
  };
  const sentenceIndex = new Map<string, number>();
  for (const s of spec.sentences) {
    const key = s.trim().toLowerCase();
    if (keptText.has(key)) continue;
    keptText.add(key);
    const tokens = accept(s);
    if (tokens) {
      sentenceIndex.set(key, kept.length);
      kept.push(tokens);
    }
  }
  if (dropped.length > 0 || missing.length > 0) log?.('grammar words missing from the model dictionary', { language, missing, dropped });
  if (kept.length === 0) throw new Error(`grammar ${language}: no sentence could be compiled`);

  const phones = phoneSetCache.get(dictionary) ?? phoneSet(dictionary);
  phoneSetCache.set(dictionary, phones);
  const garbageWords = phones.filter((p) => p !== 'SIL').map((p) => `${GARBAGE_PREFIX}${p.toLowerCase()}`);

  const tokenJsgf = (t: Token): string => ('slot' in t ? `<${ruleName('slot', t.slot)}>` : t.word);
  const slotRules = [...slotValues.entries()].map(
    ([name, values]) => `<${ruleName('slot', name)}> = ${values.map((v) => (v.length > 1 ? `(${v.join(' ')})` : v[0])).join(' | ')};`,
  );
  const sentenceRules = kept.map((tokens, i) => `<s${i}> = ${tokens.map(tokenJsgf).join(' ')};`);
  // Rules a search does not reference are harmless: the JSGF compiler expands only what <utt> reaches.
  // The JSGF lexer reads plain decimals only ("1e-4" is not a weight).
  const garbage = options.garbageWeight !== undefined && options.garbageWeight > 0;
  const garbageWeight = decimal(options.garbageWeight ?? 0);
  /** A search's sentences: the main ones and an expectation's own, its sentences weighted up. */
  const searchSentences = (preferred?: ReadonlySet<number>): Array<{ index: number; weight: number }> =>
    kept
      .map((_, index) => ({ index, weight: preferred?.has(index) ? (options.expectationWeight ?? 20) : 1 }))
      .filter(({ index }) => index < mainCount || preferred?.has(index));
  const build = (preferred?: ReadonlySet<number>): string => {
    const alternatives = searchSentences(preferred).map(({ index, weight }) => (preferred ? `/${decimal(weight)}/ <s${index}>` : `<s${index}>`));
    const sentences = `<sentence> = ${alternatives.join(' | ')};`;
    return [
      '#JSGF V1.0;',
      `grammar g_${language};`,
      garbage ? 'public <utt> = [<garbage>] <sentence> [<garbage>];' : 'public <utt> = <sentence>;',
      sentences,
      ...sentenceRules,
      ...slotRules,
      ...(garbage ? ['<garbage> = <phone>+;', `<phone> = ${garbageWords.map((w) => `/${garbageWeight}/ ${w}`).join(' | ')};`] : []),
      '',
    ].join('\n');
  };

  // Sentences only an expectation names (a bare "{time}" answer) are allowed only while it is active.
  const mainCount = kept.length;
  const preferredBy = new Map<string, Set<number>>();
  for (const [name, list] of Object.entries(spec.expectations ?? {})) {
    const preferred = new Set<number>();
    for (const s of list) {
      const key = s.trim().toLowerCase();
      let index = sentenceIndex.get(key);
      if (index === undefined && !keptText.has(key)) {
        // An expectation may name a sentence the main list lacks: it joins the grammar.
        keptText.add(key);
        const tokens = accept(s);
        if (tokens) {
          index = kept.length;
          kept.push(tokens);
          sentenceRules.push(`<s${index}> = ${tokens.map(tokenJsgf).join(' ')};`);
          sentenceIndex.set(key, index);
        }
      }
      if (index !== undefined) preferred.add(index);
    }
    if (preferred.size > 0) preferredBy.set(name, preferred);
  }
  // Built after all expectation sentences joined, so every search has the same sentence rules.
  const expectationJsgf: Record<string, string> = {};
  for (const [name, preferred] of preferredBy) expectationJsgf[name] = build(preferred);
  const jsgf = build();
  // The automata weigh each sentence as the JSGF compiler does: a rule's alternatives normalised to sum to 1.
  const automaton = (preferred?: ReadonlySet<number>): string => {
    const chosen = searchSentences(preferred);
    const total = chosen.reduce((sum, { weight }) => sum + weight, 0);
    const sentences = chosen.map(({ index, weight }) => ({ tokens: kept[index], weight: weight / total }));
    return sentenceFsg(`g_${language}`, sentences, slotValues, options.languageWeight ?? DEFAULT_LANGUAGE_WEIGHT);
  };
  const expectationFsg: Record<string, string> = {};
  const fsg = garbage ? undefined : automaton();
  if (!garbage) {
    for (const [name, preferred] of preferredBy) {
      // Each automaton is tens of ms: an agent compiled beside live calls leaves their audio its turn in between.
      await new Promise<void>((resolve) => setImmediate(resolve));
      expectationFsg[name] = automaton(preferred);
    }
  }

  const dictLines: string[] = [];
  for (const [word, prons] of [...pronunciations.entries()].sort(([a], [b]) => (a < b ? -1 : 1))) {
    prons.forEach((p, i) => dictLines.push(`${i === 0 ? word : `${word}(${i + 1})`} ${p.join(' ')}`));
  }
  if (garbage) for (const p of phones) if (p !== 'SIL') dictLines.push(`${GARBAGE_PREFIX}${p.toLowerCase()} ${p}`);

  // Where a partial stands: every sentence any search has, expectations' own included.
  const matcher = new SentenceMatcher(kept, slotValues);

  return {
    language,
    jsgf,
    expectationJsgf,
    ...(fsg !== undefined ? { fsg } : {}),
    expectationFsg,
    dict: `${dictLines.join('\n')}\n`,
    missing,
    dropped,
    sentenceCount: kept.length,
    isComplete: (text) => isWholeSentence(matcher.standing(text)),
    standing: (text) => matcher.standing(text),
  };
}

/** Hypothesis words without the garbage pseudo-words and fillers. */
export function sentenceWords(hyp: string): string[] {
  return hyp
    .split(/\s+/)
    .filter((w) => w !== '' && !w.startsWith(GARBAGE_PREFIX) && !/^[<[+]/.test(w))
    .map((w) => w.replace(/\(\d+\)$/, ''));
}
