/** Intent matching: fuzzy, weighted token overlap between the utterance and each intent's example phrases. */
import type { RulesConfig, RuleIntent } from './config.js';

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
  /** Language of the phrase that matched best: the caller's language for this turn. */
  language: string;
}

export class IntentMatcher {
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
    const best = new Map<number, { score: number; language: string }>();

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
      if (score > (best.get(p.intent)?.score ?? 0)) best.set(p.intent, { score, language: p.language });
    }
    return [...best.entries()]
      .map(([i, b]) => ({ intent: this.config.intents[i], score: b.score, language: b.language }))
      .sort((a, b) => b.score - a.score);
  }
}

