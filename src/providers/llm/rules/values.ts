/**
 * Slot values in en/fr/de/es/it: number words (from n2words' spellings, read backwards, so what the agent
 * says and what it understands come from one table), times (with the domain's opening hours deciding
 * 7 → 19:00), dates (chrono-node, which has locales for all five), digits (speech or keypad), names,
 * yes/no. Every parser works on folded, lowercase text and never throws.
 */
import * as chrono from 'chrono-node';
import { toCardinal as cardinalEn } from 'n2words/en-US';
import { toCardinal as cardinalFr } from 'n2words/fr-FR';
import { toCardinal as cardinalDe } from 'n2words/de-DE';
import { toCardinal as cardinalEs } from 'n2words/es-ES';
import { toCardinal as cardinalIt } from 'n2words/it-IT';

type Cardinal = (n: number) => string;
const CARDINALS: Record<string, Cardinal> = { en: cardinalEn, fr: cardinalFr, de: cardinalDe, es: cardinalEs, it: cardinalIt };
export const VALUE_LANGUAGES = Object.keys(CARDINALS);

/** Lowercase, accents and ß folded. */
export function fold(s: string): string {
  return s
    .toLowerCase()
    .normalize('NFD')
    .replace(/\p{M}+/gu, '')
    .replace(/ß/g, 'ss')
    .replace(/æ/g, 'ae')
    .replace(/œ/g, 'oe');
}

/** Folded words; "7.30" / "19h30" / "19h" / "p.m." merged into "7:30" / "19:30" / "19:00" / "pm". */
export function words(text: string): string[] {
  const s = fold(text)
    .replace(/[’‘`´]/g, "'")
    .replace(/(?<![\p{L}\p{N}])([ap])\.?\s?m(?![\p{L}\p{N}])\.?/gu, (_, ap: string) => ` ${ap}m `)
    .replace(/(?<![\p{L}\p{N}])(\d{1,2})\s?[:h.]\s?(\d{2})(?![\p{L}\p{N}])/gu, (_, h: string, m: string) => ` ${h}:${m} `)
    .replace(/(?<![\p{L}\p{N}])(\d{1,2})\s?h(?![\p{L}\p{N}])/gu, (_, h: string) => ` ${h}:00 `);
  return s.split(/[^\p{L}\p{N}:]+/u).map((w) => w.replace(/^:+|:+$/g, '')).filter((w) => w !== '');
}

/** The spoken words of a cardinal in a language ("twenty-one" → "twenty one"), folded. */
export function spokenNumber(n: number, language: string): string {
  const cardinal = CARDINALS[language] ?? cardinalEn;
  return words(cardinal(n)).join(' ');
}

/** Where n2words' spelling is not the language's own: es-ES writes 16 without the accent it gives 22, 23 and 26. */
const SPELLING_FIXES: Record<string, Record<string, string>> = { es: { dieciseis: 'dieciséis' } };

/**
 * The written words of a cardinal, lowercase with their accents ("dieciséis", "twenty one"): what a recogniser's
 * dictionary looks up and what a caller's speech sounds like (folding "veintidós" to "veintidos" moves its stress).
 */
export function writtenNumber(n: number, language: string): string {
  const cardinal = CARDINALS[language] ?? cardinalEn;
  const fixes = SPELLING_FIXES[language] ?? {};
  return cardinal(n)
    .toLowerCase()
    .split(/[^\p{L}\p{N}']+/u)
    .filter(Boolean)
    .map((w) => fixes[w] ?? w)
    .join(' ');
}

/** Spellings that n2words does not produce but callers say: articles and colloquial forms. */
const EXTRA_NUMBER_WORDS: Record<string, Record<string, number>> = {
  en: { oh: 0 },
  fr: { une: 1 },
  de: { ein: 1, eine: 1, einen: 1, zwo: 2 },
  es: { un: 1, una: 1 },
  it: { un: 1, una: 1 },
};

const numberTables = new Map<string, Map<string, number>>();
/** Spoken form (folded, space-separated) → value, 0..100, per language. */
function numberTable(language: string): Map<string, number> {
  let table = numberTables.get(language);
  if (table) return table;
  table = new Map();
  for (let n = 0; n <= 100; n++) table.set(spokenNumber(n, language), n);
  for (const [w, n] of Object.entries(EXTRA_NUMBER_WORDS[language] ?? {})) table.set(w, n);
  numberTables.set(language, table);
  return table;
}
const MAX_NUMBER_WORDS = 5;

/** Words with every spelled-out number (longest match) replaced by its digits: "table for four" → "table for 4". */
export function numbersToDigits(tokens: readonly string[], language: string): string[] {
  const table = numberTable(language);
  const out: string[] = [];
  for (let i = 0; i < tokens.length; ) {
    let matched = 0;
    let value = 0;
    for (let len = Math.min(MAX_NUMBER_WORDS, tokens.length - i); len >= 1; len--) {
      const v = table.get(tokens.slice(i, i + len).join(' '));
      if (v !== undefined) {
        matched = len;
        value = v;
        break;
      }
    }
    if (matched > 0) {
      out.push(String(value));
      i += matched;
    } else out.push(tokens[i++]);
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Times

export interface OpeningHours {
  /** Minutes since midnight. */
  open: number;
  close: number;
}

export function parseClock(s: string): number | undefined {
  const m = /^(\d{1,2}):(\d{2})$/.exec(s);
  if (!m) return undefined;
  const h = Number(m[1]);
  const mi = Number(m[2]);
  return h < 24 && mi < 60 ? h * 60 + mi : undefined;
}

export function formatClock(minutes: number): string {
  return `${pad2(Math.floor(minutes / 60))}:${pad2(minutes % 60)}`;
}

const TIME_CUES = ['at', 'around', 'about', 'by', 'a', 'vers', 'um', 'gegen', 'ab', 'las', 'la', 'sobre', 'hacia', 'alle', 'ore', 'verso', 'all'];
const TIME_MARKERS = ['pm', 'am', 'oclock', 'heure', 'heures', 'h', 'uhr', 'hora', 'horas', 'ore'];
const EVENING = ['pm', 'evening', 'tonight', 'night', 'soir', 'abends', 'abend', 'tarde', 'noche', 'sera', 'stasera', 'nachmittags'];
const MORNING = ['am', 'morning', 'matin', 'morgens', 'vormittags', 'mattina'];
const NOON = ['noon', 'midday', 'midi', 'mittag', 'mediodia', 'mezzogiorno'];
const MIDNIGHT = ['midnight', 'minuit', 'mitternacht', 'medianoche', 'mezzanotte'];
const HALF_AFTER = [['et', 'demie'], ['y', 'media'], ['e', 'mezza'], ['e', 'mezzo'], ['und', 'halb']];
const QUARTER_AFTER = [['et', 'quart'], ['y', 'cuarto'], ['e', 'un', 'quarto'], ['e', 'quarto']];
const QUARTER_BEFORE = [['moins', 'le', 'quart'], ['moins', 'quart'], ['menos', 'cuarto'], ['meno', 'un', 'quarto'], ['meno', 'quarto']];

export interface TimeMatch {
  /** Minutes since midnight. */
  minutes: number;
  /** Token indexes the time used (so a party size is not read from them). */
  used: number[];
}

const isNum = (w: string | undefined): w is string => w !== undefined && /^\d{1,3}$/.test(w);
const seqAt = (ws: readonly string[], i: number, seq: readonly string[]): boolean => seq.every((s, k) => ws[i + k] === s);

/**
 * The time in the words (already through numbersToDigits). `bare` accepts an unmarked number
 * ("eight") because the agent just asked for a time. Opening hours pick the half of the day.
 */
export function findTime(ws: readonly string[], options: { bare?: boolean; hours?: OpeningHours } = {}): TimeMatch | undefined {
  for (let i = 0; i < ws.length; i++) {
    const w = ws[i];
    if (NOON.includes(w)) return { minutes: 12 * 60, used: [i] };
    if (MIDNIGHT.includes(w)) return { minutes: 0, used: [i] };
    const clock = parseClock(w);
    if (clock !== undefined) return { minutes: resolveHalfDay(Math.floor(clock / 60), clock % 60, ws, i, options.hours), used: [i] };

    // "half past 7", "quarter to 8", "halb 8", "viertel nach 8"
    if ((w === 'half' && ws[i + 1] === 'past' && isNum(ws[i + 2])) || (w === 'halb' && isNum(ws[i + 1]))) {
      const at = w === 'half' ? i + 2 : i + 1;
      const h = Number(ws[at]);
      // "halb eins" is half past twelve.
      const hour = w === 'halb' ? (h === 1 ? 12 : h - 1) : h;
      if (hour >= 0 && hour < 24) return { minutes: resolveHalfDay(hour, 30, ws, at, options.hours), used: range(i, at) };
    }
    if ((w === 'quarter' || w === 'viertel') && isNum(ws[i + 2]) && ['past', 'after', 'nach', 'to', 'before', 'vor'].includes(ws[i + 1])) {
      const h = Number(ws[i + 2]);
      const before = ['to', 'before', 'vor'].includes(ws[i + 1]);
      const hour = before ? (h === 1 ? 12 : h - 1) : h;
      return { minutes: resolveHalfDay(hour, before ? 45 : 15, ws, i + 2, options.hours), used: range(i, i + 2) };
    }

    if (!isNum(w)) continue;
    const h = Number(w);
    if (h > 24) continue;
    let j = i + 1;
    let marked = false;
    if (ws[j] === 'o' && ws[j + 1] === 'clock') {
      j += 2;
      marked = true;
    } else if (ws[j] !== undefined && TIME_MARKERS.includes(ws[j])) {
      marked = true;
      j += 1;
    }
    const cued = i > 0 && TIME_CUES.includes(ws[i - 1]);
    let minute = 0;
    let end = j - 1;
    const after = ws[j];
    if (isNum(after) && after.length === 2 && Number(after) < 60 && (marked || cued || options.bare || Number(after) >= 10)) {
      minute = Number(after);
      end = j;
    } else if (['e', 'y', 'et', 'und'].includes(after ?? '') && isNum(ws[j + 1]) && Number(ws[j + 1]) < 60 && (marked || cued || options.bare)) {
      // "ocho y diez", "undici e trenta"
      minute = Number(ws[j + 1]);
      end = j + 1;
    } else {
      const half = HALF_AFTER.find((s) => seqAt(ws, j, s));
      const quarter = QUARTER_AFTER.find((s) => seqAt(ws, j, s));
      const before = QUARTER_BEFORE.find((s) => seqAt(ws, j, s));
      if (half) [minute, end] = [30, j + half.length - 1];
      else if (quarter) [minute, end] = [15, j + quarter.length - 1];
      else if (before) [minute, end] = [-15, j + before.length - 1];
    }
    const explicitMinutes = end >= j;
    if (!marked && !cued && !options.bare && !explicitMinutes) continue;
    // "for 4 at 8": a number followed by a people word is a party size, not a time.
    if (!marked && !explicitMinutes && !cued && PEOPLE_WORDS.includes(ws[i + 1] ?? '')) continue;
    let hour = h === 24 ? 0 : h;
    if (minute < 0) {
      hour = hour === 1 ? 12 : hour - 1;
      minute = 45;
    }
    if (hour < 0) hour += 24;
    return { minutes: resolveHalfDay(hour, minute, ws, i, options.hours), used: range(i, Math.max(i, end)) };
  }
  return undefined;
}

/** 1–12 with no am/pm: a day-part word decides, else the opening hours do (7 → 19:00 for 11–22). */
function resolveHalfDay(hour: number, minute: number, ws: readonly string[], at: number, hours: OpeningHours | undefined): number {
  const window = ws.slice(Math.max(0, at - 3), at + 6);
  // "de la mañana" is the morning; "mañana" alone is tomorrow.
  const morning = window.some((w, k) => MORNING.includes(w) || (w === 'manana' && window[k - 1] === 'la'));
  if (hour >= 1 && hour < 12 && window.some((w) => EVENING.includes(w))) return (hour + 12) * 60 + minute;
  if (hour === 12 && morning) return minute;
  if (morning || hour === 0 || hour > 12) return hour * 60 + minute;
  if (hours && hour >= 1 && hour <= 12) {
    const am = (hour % 12) * 60 + minute;
    const pm = am + 12 * 60;
    const inHours = (m: number): boolean => m >= hours.open && m < hours.close;
    if (!inHours(am) && inHours(pm)) return pm;
  }
  return hour * 60 + minute;
}

// ---------------------------------------------------------------------------------------------
// Dates

const CHRONO: Record<string, chrono.Chrono> = { en: chrono.en.casual, fr: chrono.fr.casual, de: chrono.de.casual, es: chrono.es.casual, it: chrono.it.casual };
/** Two-day-ahead words chrono reads as "tomorrow" (it matches only their second word). */
const DAY_AFTER_TOMORROW = [['apres', 'demain'], ['pasado', 'manana'], ['day', 'after', 'tomorrow'], ['uebermorgen'], ['ubermorgen'], ['dopodomani']];
/** "This evening" words some of chrono's locales do not read as today. */
const THIS_EVENING = [['ce', 'soir'], ['esta', 'noche'], ['esta', 'tarde'], ['heute', 'abend'], ['stasera'], ['questa', 'sera'], ['tonight']];

/** Wall-clock fields of `now` in `timeZone`. */
export function zonedParts(now: Date, timeZone: string): { year: number; month: number; day: number; hour: number; minute: number; weekday: number } {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone, year: 'numeric', month: 'numeric', day: 'numeric', hour: 'numeric', minute: 'numeric', hourCycle: 'h23', weekday: 'short',
  }).formatToParts(now);
  const get = (t: Intl.DateTimeFormatPartTypes): string => parts.find((p) => p.type === t)?.value ?? '0';
  const weekday = ['Sun', 'Mon', 'Tue', 'Wed', 'Thu', 'Fri', 'Sat'].indexOf(get('weekday'));
  return { year: Number(get('year')), month: Number(get('month')), day: Number(get('day')), hour: Number(get('hour')), minute: Number(get('minute')), weekday };
}

/** Words that can start a date in each language; chrono (slow: many patterns) runs only when one is there. */
const RELATIVE_DATE_WORDS = ['today', 'tomorrow', 'tonight', 'next', 'this', 'week', 'day', 'aujourd', 'demain', 'soir', 'prochain',
  'prochaine', 'semaine', 'heute', 'morgen', 'ubermorgen', 'uebermorgen', 'nachsten', 'naechsten', 'woche', 'hoy', 'manana', 'pasado',
  'proximo', 'viene', 'semana', 'oggi', 'domani', 'dopodomani', 'prossimo', 'settimana', 'stasera', 'noche', 'tarde', 'abend', 'sera'];
const dateWordCache = new Map<string, Set<string>>();
function dateWords(language: string): Set<string> {
  let set = dateWordCache.get(language);
  if (set) return set;
  set = new Set(RELATIVE_DATE_WORDS);
  for (let k = 0; k < 12; k++) {
    const d = new Date(Date.UTC(2024, k, 10));
    for (const opt of [{ month: 'long' }, { month: 'short' }, { weekday: 'long' }, { weekday: 'short' }] as const) {
      for (const w of words(new Intl.DateTimeFormat(language, { ...opt, timeZone: 'UTC' }).format(d))) set.add(w);
    }
  }
  dateWordCache.set(language, set);
  return set;
}

/** ISO date (YYYY-MM-DD) the caller named, relative to today in the call's zone; never in the past. */
export function findDate(text: string, language: string, now: Date, timeZone: string): string | undefined {
  const ws = words(text);
  const cues = dateWords(language);
  if (!ws.some((w) => cues.has(w) || /^\d/.test(w))) return undefined;
  const z = zonedParts(now, timeZone);
  for (const seq of DAY_AFTER_TOMORROW) {
    for (let i = 0; i < ws.length; i++) if (seqAt(ws, i, seq)) return isoDate(z.year, z.month, z.day + 2);
  }
  for (const seq of THIS_EVENING) {
    for (let i = 0; i < ws.length; i++) if (seqAt(ws, i, seq)) return isoDate(z.year, z.month, z.day);
  }
  // A local Date with the zone's wall-clock fields: chrono reads "tomorrow" against them.
  const ref = new Date(z.year, z.month - 1, z.day, z.hour, z.minute);
  const parser = CHRONO[language] ?? CHRONO.en;
  for (const result of parser.parse(text, ref, { forwardDate: true })) {
    const s = result.start;
    if (!s.isCertain('day') && !s.isCertain('weekday')) continue;
    return isoDate(s.get('year') ?? z.year, s.get('month') ?? z.month, s.get('day') ?? z.day);
  }
  return undefined;
}

/**
 * Reads a date a few times in each language. The first reads build ICU's date formats for the language and zone, and
 * V8 compiles chrono's large patterns to machine code on their second use: 0.1–0.4 s per language each time,
 * measured, then ~1 ms. A service does it at load (RuleBasedAgentOptions.warmDateParsers), not in the first callers' turns, where it also stalled every other call's audio.
 */
export async function warmDateParsers(languages: readonly string[], timeZone: string): Promise<void> {
  for (let round = 0; round < 3; round++) {
    for (const language of languages) {
      findDate('12 tomorrow', language, new Date(), timeZone);
      // One language at a time: an agent loaded beside live calls leaves their audio its turn.
      await new Promise<void>((resolve) => setImmediate(resolve));
    }
  }
}

function isoDate(year: number, month: number, day: number): string {
  const d = new Date(Date.UTC(year, month - 1, day));
  return `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())}`;
}

// ---------------------------------------------------------------------------------------------
// Numbers, digits, names

const PEOPLE_WORDS = ['people', 'persons', 'person', 'guests', 'adults', 'of', 'personnes', 'personne', 'couverts', 'gens', 'personen',
  'leute', 'gaste', 'personas', 'persona', 'comensales', 'persone', 'ospiti', 'coperti'];
const COUNT_CUES = [['for'], ['pour'], ['fur'], ['para'], ['per'], ['we', 'are'], ['we', 're'], ['nous', 'sommes'], ['on', 'est'],
  ['on', 'sera'], ['wir', 'sind'], ['somos'], ['seremos'], ['siamo'], ['siamo', 'in'], ['saremo'], ['make', 'it'], ['party', 'of']];

/**
 * A count ("four people", "for 4"); `bare` accepts a lone number (the agent just asked for it).
 * `skip` are token indexes already taken by a time.
 */
export function findCount(ws: readonly string[], options: { bare?: boolean; skip?: readonly number[] } = {}): number | undefined {
  for (let i = 0; i < ws.length; i++) {
    if (options.skip?.includes(i) || !isNum(ws[i])) continue;
    const n = Number(ws[i]);
    const next = ws[i + 1];
    if (next !== undefined && (TIME_MARKERS.includes(next) || next === 'o')) continue;
    const cued = COUNT_CUES.some((c) => i - c.length >= 0 && seqAt(ws, i - c.length, c));
    if (options.bare || cued || (next !== undefined && PEOPLE_WORDS.includes(next))) return n;
  }
  return undefined;
}

/** Digits said one by one or typed on the keypad ("DTMF: 4 1 1 1", "four one one one", "41 11"): the longest run. */
export function findDigits(ws: readonly string[]): string | undefined {
  let best = '';
  let run = '';
  for (const w of ws) {
    if (/^\d+$/.test(w)) run += w;
    else {
      if (run.length > best.length) best = run;
      run = '';
    }
  }
  if (run.length > best.length) best = run;
  return best === '' ? undefined : best;
}

const NAME_CUES = [['my', 'name', 'is'], ['name', 'is'], ['under', 'the', 'name', 'of'], ['under', 'the', 'name'], ['under'], ['it', 's'],
  ['je', 'm', 'appelle'], ['au', 'nom', 'de'], ['ich', 'heisse'], ['mein', 'name', 'ist'], ['auf', 'den', 'namen'], ['me', 'llamo'],
  ['mi', 'nombre', 'es'], ['a', 'nombre', 'de'], ['mi', 'chiamo'], ['il', 'mio', 'nome', 'e'], ['a', 'nome', 'di'], ['c', 'est'], ['soy']];
const NOT_NAMES = new Set(['a', 'the', 'for', 'at', 'table', 'booking', 'reservation', 'please', 'yes', 'no', 'and', 'it', 'is', 'de',
  'la', 'le', 'el', 'il', 'un', 'une', 'una', 'ein', 'eine', 'einen', 'si', 'oui', 'ja', 'non', 'nein', 'bitte', 'por', 'favor', 'per', 'pour', 'tomorrow']);

/**
 * A name after a cue ("my name is Anna", "a nombre de García"); with `bare`, the words of a short answer.
 * `raw` keeps the caller's spelling (accents) for the read-back.
 */
export function findName(text: string, options: { bare?: boolean; known?: readonly string[] } = {}): string | undefined {
  const raw = text.toLowerCase().replace(/[’‘`´]/g, "'").split(/[^\p{L}'-]+/u).map((w) => w.replace(/^'+|'+$/g, '')).filter(Boolean);
  const ws = raw.map(fold);
  const capital = (s: string): string => s.replace(/(^|[\s-])(\p{L})/gu, (_, sep: string, c: string) => sep + c.toUpperCase());
  const known = options.known?.map((k) => ({ k, f: fold(k) })) ?? [];
  for (const name of known) {
    const parts = name.f.split(/\s+/);
    for (let i = 0; i < ws.length; i++) if (seqAt(ws, i, parts)) return name.k;
  }
  const take = (i: number): string | undefined => {
    const out: string[] = [];
    for (let k = i; k < ws.length && out.length < 2; k++) {
      if (NOT_NAMES.has(ws[k]) || ws[k].length < 2) break;
      out.push(raw[k]);
    }
    return out.length > 0 ? capital(out.join(' ')) : undefined;
  };
  for (let i = 0; i < ws.length; i++) {
    const cue = [...NAME_CUES].sort((a, b) => b.length - a.length).find((c) => seqAt(ws, i, c));
    if (cue) {
      const name = take(i + cue.length);
      if (name) return name;
    }
  }
  if (options.bare && ws.length <= 3) {
    const start = ws.findIndex((w) => !NOT_NAMES.has(w) && w.length >= 2);
    if (start >= 0) return take(start);
  }
  return undefined;
}

// ---------------------------------------------------------------------------------------------
// Speaking values back

/** A value as the agent says it in a read-back, per language. */
export function renderValue(type: string, value: string | number | boolean, language: string): string {
  if (type === 'time' && typeof value === 'string') {
    const m = parseClock(value);
    if (m === undefined) return value;
    const h = Math.floor(m / 60);
    const mi = m % 60;
    switch (language) {
      case 'en': {
        const h12 = h % 12 === 0 ? 12 : h % 12;
        return `${h12}${mi ? `:${pad2(mi)}` : ''} ${h < 12 ? 'AM' : 'PM'}`;
      }
      case 'fr':
        return `${h} h${mi ? ` ${pad2(mi)}` : ''}`;
      case 'de':
        return `${h} Uhr${mi ? ` ${pad2(mi)}` : ''}`;
      default:
        return mi ? `${h}:${pad2(mi)}` : `${h}`;
    }
  }
  if (type === 'date' && typeof value === 'string' && /^\d{4}-\d{2}-\d{2}$/.test(value)) {
    const [y, mo, d] = value.split('-').map(Number);
    return new Intl.DateTimeFormat(language, { weekday: 'long', day: 'numeric', month: 'long', timeZone: 'UTC' }).format(new Date(Date.UTC(y, mo - 1, d)));
  }
  if (type === 'digits' && typeof value === 'string') return value.split('').join(' ');
  return String(value);
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a + 1 }, (_, k) => a + k);
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}
