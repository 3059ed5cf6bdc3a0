/**
 * What callers can say to the rule-based agent, per language, as a GrammarSpec for a recogniser: every
 * intent phrase, slot answers ("{party_size} people"), yes/no, corrections and cancel, the spoken forms of
 * each slot's values, and the sentences to weight while a particular question is open. Each value form is
 * generated together with its meaning, so a test can check that the agent's parsers read it back right.
 */
import { ASK_BACK, OFFER_PERSON } from './state.js';
import type { GrammarSpec } from '../../asr/grammar/spec.js';
import type { RulesConfig, SlotSpec } from './config.js';
import type { Lexicon } from './lexicon.js';
import { spokenNumber, writtenNumber, type OpeningHours } from './values.js';

/** A spoken value with what it means. */
export interface ValueForm<T> {
  form: string;
  value: T;
}

const PEOPLE: Record<string, string> = { en: 'people', fr: 'personnes', de: 'personen', es: 'personas', it: 'persone' };
const FOR: Record<string, string> = { en: 'for', fr: 'pour', de: 'für', es: 'para', it: 'per' };
// Spanish and Italian time forms carry their own article ("a las ocho", "alle otto"): no second carrier.
const AT: Record<string, string> = { en: 'at', fr: 'à', de: 'um', es: '', it: '' };
const MY_NAME: Record<string, string> = { en: 'my name is', fr: "je m'appelle", de: 'ich heiße', es: 'me llamo', it: 'mi chiamo' };
const NAME_UNDER: Record<string, string> = { en: 'under the name', fr: 'au nom de', de: 'auf den namen', es: 'a nombre de', it: 'a nome di' };
/** How many of the lexicon's yes and no words (commonest first) are sentences when no question is open. */
const OPEN_YES_NO = 3;
/** Words a caller puts before a short phrase without changing it (no bare vowels such as "oh": any tone or chord fits one). */
const ACKNOWLEDGEMENTS: Record<string, string[]> = { en: ['okay', 'well'], fr: ['bon', 'alors'], de: ['also', 'okay'], es: ['bueno', 'vale'], it: ['allora', 'va bene'] };
const RELATIVE_DAYS: Record<string, [string, number][]> = {
  en: [['today', 0], ['tomorrow', 1], ['the day after tomorrow', 2]],
  fr: [["aujourd'hui", 0], ['demain', 1], ['après-demain', 2]],
  de: [['heute', 0], ['morgen', 1], ['übermorgen', 2]],
  es: [['hoy', 0], ['mañana', 1], ['pasado mañana', 2]],
  it: [['oggi', 0], ['domani', 1], ['dopodomani', 2]],
};
/** A weekday said with its preposition or article ("on friday", "el viernes"); French and Italian say the bare day. */
const ON_WEEKDAY: Record<string, (day: string) => string> = {
  en: (d) => `on ${d}`,
  de: (d) => `am ${d}`,
  es: (d) => `el ${d}`,
};
const NEXT_WEEKDAY: Record<string, (day: string) => string> = {
  en: (d) => `next ${d}`,
  fr: (d) => `${d} prochain`,
  de: (d) => `nächsten ${d}`,
  es: (d) => `el ${d} que viene`,
  it: (d) => `${d} prossimo`,
};

/** Lowercase words, accents kept (a recogniser's dictionary needs them), punctuation but apostrophes dropped. */
const plain = (s: string): string =>
  s.toLowerCase().replace(/[’‘`´]/g, "'").split(/[^\p{L}\p{N}']+/u).filter(Boolean).join(' ');

/** Counts a number slot accepts, spoken ("four") with their values. */
export function numberForms(slot: SlotSpec, lang: string): ValueForm<number>[] {
  const out: ValueForm<number>[] = [];
  for (let n = slot.min ?? 1; n <= (slot.max ?? 20); n++) out.push({ form: writtenNumber(n, lang), value: n });
  return out;
}

/** Digit words 0–9 (a digits value is a run of them: the slot's templates repeat the reference per digit). */
export function digitForms(lang: string): ValueForm<string>[] {
  return Array.from({ length: 10 }, (_, d) => ({ form: writtenNumber(d, lang), value: String(d) }));
}

/**
 * Times within the opening hours on the hour and half hour, in each language's usual ways of saying them.
 * A form with no am/pm is listed only where the opening hours leave one reading.
 */
export function timeForms(lang: string, hours: OpeningHours | undefined): ValueForm<number>[] {
  const open = hours?.open ?? 0;
  const close = hours?.close ?? 24 * 60;
  const inHours = (m: number): boolean => m >= open && m < close;
  const out: ValueForm<number>[] = [];
  const n = (x: number): string => writtenNumber(x, lang);
  for (let minutes = Math.ceil(open / 30) * 30; minutes < close; minutes += 30) {
    const h = Math.floor(minutes / 60);
    const half = minutes % 60 === 30;
    const h12 = h % 12 === 0 ? 12 : h % 12;
    // The other half of the day would also be open: only a 24-hour or am/pm form is unambiguous.
    const oneReading = h12 === 12 || !inHours(((h + 12) % 24) * 60 + (minutes % 60));
    const add = (form: string, bareOk = true): void => {
      if (bareOk || oneReading) out.push({ form: plain(form), value: minutes });
    };
    switch (lang) {
      case 'en':
        add(half ? `${n(h12)} thirty ${h < 12 ? 'am' : 'pm'}` : `${n(h12)} ${h < 12 ? 'am' : 'pm'}`);
        add(half ? `half past ${n(h12)}` : `${n(h12)} o'clock`, false);
        if (!half) add(n(h12), false);
        break;
      case 'fr':
        add(half ? `${n(h)} heures trente` : `${n(h)} heures`);
        if (half) add(`${n(h)} heures et demie`);
        break;
      case 'de':
        add(half ? `${n(h)} uhr dreißig` : `${n(h)} uhr`);
        if (half) add(`halb ${n(h12 === 12 ? 1 : h12 + 1)}`, false);
        break;
      case 'es': {
        const w = h12 === 1 ? 'la una' : `las ${n(h12)}`;
        add(half ? `a ${w} y media` : `a ${w}`, false);
        add(half ? `${n(h)} treinta` : `a las ${n(h)}`);
        break;
      }
      case 'it':
        add(half ? `alle ${n(h)} e trenta` : `alle ${n(h)}`);
        if (half) add(`alle ${n(h12)} e mezza`, false);
        break;
      default:
        add(half ? `${n(h)} ${n(30)}` : n(h));
    }
  }
  return out;
}

/** Day words with their meaning: days from today, or a weekday (0 = Sunday) on or after tomorrow. */
export function dateForms(lang: string): ValueForm<{ days: number } | { weekday: number }>[] {
  const out: ValueForm<{ days: number } | { weekday: number }>[] = [];
  for (const [form, days] of RELATIVE_DAYS[lang] ?? []) out.push({ form: plain(form), value: { days } });
  for (let wd = 0; wd < 7; wd++) {
    // 2024-01-07 was a Sunday; Intl gives each language's weekday names.
    const name = new Intl.DateTimeFormat(lang, { weekday: 'long', timeZone: 'UTC' }).format(new Date(Date.UTC(2024, 0, 7 + wd)));
    out.push({ form: plain(name), value: { weekday: wd } });
    const on = ON_WEEKDAY[lang];
    if (on) out.push({ form: plain(on(name.toLowerCase())), value: { weekday: wd } });
    const next = NEXT_WEEKDAY[lang];
    if (next) out.push({ form: plain(next(name.toLowerCase())), value: { weekday: wd } });
  }
  return out;
}

/** Every spoken form of a slot's values (plain words). */
export function slotForms(slot: SlotSpec, lang: string, config: RulesConfig, lexicon: Lexicon, hours: OpeningHours | undefined): string[] {
  switch (slot.type) {
    case 'number':
      return numberForms(slot, lang).map((f) => f.form);
    case 'digits':
      return digitForms(lang).map((f) => f.form);
    case 'time':
      return timeForms(lang, hours).map((f) => f.form);
    case 'date':
      return dateForms(lang).map((f) => f.form);
    case 'name':
      return (config.names ?? []).map(plain);
    case 'values':
      return Object.entries(slot.values ?? {}).flatMap(([canonical, perLang]) => [canonical, ...(perLang[lang] ?? [])].map(plain));
    case 'yesno':
      return [...(lexicon.yes[lang] ?? []), ...(lexicon.no[lang] ?? [])].map(plain);
  }
}

/** How a caller answers a question for a slot of this type, as templates. */
function answerTemplates(slot: SlotSpec, lang: string): string[] {
  const ref = `{${slot.name}}`;
  switch (slot.type) {
    case 'number':
      return [ref, `${ref} ${PEOPLE[lang] ?? ''}`.trim(), `${FOR[lang] ?? ''} ${ref}`.trim(), `${FOR[lang] ?? ''} ${ref} ${PEOPLE[lang] ?? ''}`.trim()];
    case 'time':
      return [ref, `${AT[lang] ?? ''} ${ref}`.trim()];
    case 'name':
      return [ref, `${MY_NAME[lang] ?? ''} ${ref}`.trim(), `${NAME_UNDER[lang] ?? ''} ${ref}`.trim()];
    case 'digits': {
      // A digit string is said digit by digit: one reference per digit, as many as the slot allows.
      const min = Math.max(1, slot.min ?? 1);
      const max = Math.max(min, Math.min(slot.max ?? 8, min + 4));
      return Array.from({ length: max - min + 1 }, (_, k) => Array(min + k).fill(ref).join(' '));
    }
    default:
      return [ref];
  }
}

export function buildGrammarSpecs(config: RulesConfig, lexicon: Lexicon, hours: OpeningHours | undefined): GrammarSpec[] {
  return config.languages.map((lang) => {
    const sentences = new Set<string>();
    const slots: Record<string, string[]> = {};
    const expectations: Record<string, string[]> = {};
    const add = (set: Set<string>, s: string): void => {
      const t = s.trim().replace(/\s+/g, ' ');
      if (t) set.add(t);
    };
    const yes = (lexicon.yes[lang] ?? []).map(plain);
    const no = (lexicon.no[lang] ?? []).map(plain);
    const cancel = (lexicon.cancel[lang] ?? []).map(plain);
    const corrections = (lexicon.correction[lang] ?? []).map(plain);
    // Outside a question only the commonest yes/no words stand alone ("no" to "anything else?"); fragments such
    // as "not", "don't" or "right" are words inside sentences, and alone they catch any short sound.
    for (const s of [...yes.slice(0, OPEN_YES_NO), ...no.slice(0, OPEN_YES_NO), ...cancel]) add(sentences, s);

    for (const intent of config.intents) {
      const phrases = (intent.phrases[lang] ?? []).map(plain);
      for (const p of phrases) add(sentences, p);
      // Callers run short social phrases together ("okay, bye bye, see you", "thanks, goodbye"): a leading
      // acknowledgement and two short phrases of the same intent in a row are sentences too.
      const short = phrases.filter((p) => p.split(' ').length <= 3);
      const runs = [...short, ...short.flatMap((a) => short.filter((b) => b !== a).map((b) => `${a} ${b}`))];
      for (const run of runs) {
        add(sentences, run);
        for (const ack of ACKNOWLEDGEMENTS[lang] ?? []) add(sentences, `${ack} ${run}`);
      }
      if (!intent.slots) continue;
      const confirm = new Set<string>([...yes, ...no, ...cancel]);
      intent.slots.forEach((slot, k, formSlots) => {
        slots[slot.name] = [...new Set([...(slots[slot.name] ?? []), ...slotForms(slot, lang, config, lexicon, hours)])];
        const answers = answerTemplates(slot, lang);
        const expected = new Set<string>(cancel);
        // The answer may carry the form's later values too ("for which day?" — "friday at eight under the name
        // schmidt"), as a caller who breathed after the first part of a long request goes on.
        const later = earlyFillTails(formSlots.slice(k + 1), lang);
        // Bare answers ("eight", "for two") live only in their question's expectation: in the open grammar any
        // short sound would be forced onto one of them (measured: "goodbye" heard as "at nine").
        for (const a of answers) {
          add(expected, a);
          if (slot.type !== 'digits') for (const tail of later) add(expected, `${a} ${tail}`);
          for (const c of corrections) add(expected, `${c} ${a}`);
          for (const n of no.slice(0, 1)) add(confirm, `${n} ${a}`);
          for (const c of corrections) add(confirm, `${c} ${a}`);
        }
        expectations[`${intent.name}.${slot.name}`] = [...expected];
      });
      // Early filling: the request with any of its values, in the form's order ("i would like to book a table for
      // {party_size} people {date} at {time}"), on every phrase that does not already carry a value of its own.
      const carried = earlyFillTails(intent.slots, lang);
      for (const p of phrases) {
        if (hasNumberWord(p, lang)) continue;
        for (const tail of carried) add(sentences, `${p} ${tail}`);
      }
      expectations[`${intent.name}.confirm`] = [...confirm];
    }
    for (const intent of config.intents) {
      if (!intent.confirmIfUnsure) continue;
      expectations[`${intent.name}.confirm`] = [...yes, ...no];
    }
    // "Shall I put you through to a person?"
    if (config.handover?.offerAfter) expectations[`${OFFER_PERSON}.confirm`] = [...yes, ...no];
    // "Did you say …?" (a doubtful recognition asked back outside a form).
    expectations[`${ASK_BACK}.confirm`] = [...yes, ...no];
    return { language: lang, sentences: [...sentences], slots, expectations };
  });
}

/** How a value is said inside a request (not bare: "for {party_size}", "at {time}", "{date}"), per slot. */
function carriers(slot: SlotSpec, lang: string): string[] {
  const ref = `{${slot.name}}`;
  switch (slot.type) {
    case 'number':
      return [`${FOR[lang] ?? ''} ${ref}`.trim(), `${FOR[lang] ?? ''} ${ref} ${PEOPLE[lang] ?? ''}`.trim()];
    case 'time':
      return [`${AT[lang] ?? ''} ${ref}`.trim()];
    case 'date':
      return [ref];
    case 'name':
      return [`${NAME_UNDER[lang] ?? ''} ${ref}`.trim()];
    default:
      return [];
  }
}

/**
 * Every run of the form's slots in the form's order, one to all of them ("for {party_size} people {date} at
 * {time} under the name {name}"), each said with its carriers. A caller who knows what they want says it in one
 * breath; in a word automaton (fsg.ts) each slot's values stay one shared sub-automaton however many runs
 * pass through it, so the whole set costs the decoder a handful of states.
 */
function earlyFillTails(slots: readonly SlotSpec[], lang: string): string[] {
  const said = slots.map((slot) => carriers(slot, lang)).filter((c) => c.length > 0);
  const tails: string[] = [];
  const walk = (from: number, prefix: string): void => {
    for (let i = from; i < said.length; i++) {
      for (const c of said[i]) {
        const tail = prefix ? `${prefix} ${c}` : c;
        tails.push(tail);
        walk(i + 1, tail);
      }
    }
  };
  walk(0, '');
  return tails;
}

/** The phrase already says a number ("book a table for two"): it is an example with its value, not a stem. */
function hasNumberWord(phrase: string, lang: string): boolean {
  const numbers = new Set(Array.from({ length: 21 }, (_, n) => [spokenNumber(n, lang), writtenNumber(n, lang)]).flat());
  return phrase.split(' ').some((w) => numbers.has(w) || /^\d+$/.test(w));
}
