import { describe, expect, it } from 'vitest';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { dateForms, digitForms, numberForms, timeForms } from '../src/providers/llm/rules/grammar.js';
import {
  findCount, findDate, findDigits, findName, findTime, formatClock, numbersToDigits, renderValue, words, zonedParts,
} from '../src/providers/llm/rules/values.js';

const HOURS = { open: 11 * 60, close: 22 * 60 };
// Sunday 29 November 2026, 11:00 in Paris.
const NOW = new Date('2026-11-29T10:00:00Z');
const TZ = 'Europe/Paris';

const time = (text: string, lang: string, bare = false): string | undefined => {
  const t = findTime(numbersToDigits(words(text), lang), { hours: HOURS, bare });
  return t ? formatClock(t.minutes) : undefined;
};
const count = (text: string, lang: string, bare = false): number | undefined => {
  const ws = numbersToDigits(words(text), lang);
  return findCount(ws, { bare, skip: findTime(ws, { hours: HOURS })?.used });
};

describe('times, resolved with the opening hours (11–22)', () => {
  it.each([
    ['en', 'eight', true, '20:00'],
    ['en', 'at 8 pm', false, '20:00'],
    ['en', 'half past seven', false, '19:30'],
    ['en', 'quarter to nine', false, '20:45'],
    ['en', 'at 7', false, '19:00'],
    ['en', 'at eleven thirty', false, '11:30'],
    ['en', 'seven thirty in the morning', false, '07:30'],
    ['fr', 'vingt heures', false, '20:00'],
    ['fr', 'à huit heures et demie', false, '20:30'],
    ['fr', 'vers 19h30', false, '19:30'],
    ['fr', 'à midi', false, '12:00'],
    ['de', 'um acht uhr', false, '20:00'],
    ['de', 'halb acht', false, '19:30'],
    ['de', 'viertel vor neun', false, '20:45'],
    ['de', 'um 19 uhr 30', false, '19:30'],
    ['es', 'a las ocho', false, '20:00'],
    ['es', 'a las ocho y media', false, '20:30'],
    ['es', 'a las nueve menos cuarto', false, '20:45'],
    ['es', 'a las diez de la mañana', false, '10:00'],
    ['it', 'alle otto', false, '20:00'],
    ['it', 'alle otto e mezza', false, '20:30'],
    ['it', 'alle ventuno', false, '21:00'],
  ])('[%s] "%s" → %s', (lang, text, bare, expected) => {
    expect(time(text, lang, bare)).toBe(expected);
  });

  it('a bare number is a time only when the agent asked for one', () => {
    expect(time('eight', 'en')).toBeUndefined();
    expect(time('eight', 'en', true)).toBe('20:00');
  });
});

describe('counts', () => {
  it.each([
    ['en', 'a table for four at eight', 4],
    ['en', 'five people', 5],
    ['fr', 'pour quatre personnes à vingt heures', 4],
    ['de', 'einen tisch für zwei um 19 uhr', 2],
    ['es', 'una mesa para cuatro a las ocho', 4],
    ['es', 'somos seis', 6],
    ['it', 'per sei persone alle 21', 6],
    ['en', 'actually make it five', 5],
  ])('[%s] "%s" → %d', (lang, text, expected) => {
    expect(count(text, lang)).toBe(expected);
  });

  it('the time is not read as the party size', () => {
    expect(count('for 8 pm please', 'en')).toBeUndefined();
    expect(count('four', 'en', true)).toBe(4);
  });
});

describe('dates, in the call’s time zone (chrono-node)', () => {
  it.each([
    ['en', 'tomorrow', '2026-11-30'],
    ['en', 'next Friday', '2026-12-04'],
    ['en', 'on the 3rd of December', '2026-12-03'],
    ['fr', 'demain', '2026-11-30'],
    ['fr', 'après-demain', '2026-12-01'],
    ['fr', 'vendredi prochain', '2026-12-04'],
    ['de', 'übermorgen', '2026-12-01'],
    ['de', 'am nächsten Freitag', '2026-12-04'],
    ['es', 'mañana a las ocho', '2026-11-30'],
    ['es', 'pasado mañana', '2026-12-01'],
    ['es', 'el viernes', '2026-12-04'],
    ['it', 'domani', '2026-11-30'],
    ['it', 'venerdì prossimo', '2026-12-04'],
  ])('[%s] "%s" → %s', (lang, text, expected) => {
    expect(findDate(text, lang, NOW, TZ)).toBe(expected);
  });

  it('"tomorrow" follows the call’s zone, not the server’s', () => {
    // 23:30 UTC on the 29th is already the 30th in Tokyo.
    const late = new Date('2026-11-29T23:30:00Z');
    expect(findDate('tomorrow', 'en', late, 'Asia/Tokyo')).toBe('2026-12-01');
    expect(findDate('tomorrow', 'en', late, 'America/New_York')).toBe('2026-11-30');
  });
});

describe('digits and names', () => {
  it('reads digits from the keypad and from speech', () => {
    expect(findDigits(numbersToDigits(words('DTMF: 4 1 1 1'), 'en'))).toBe('4111');
    expect(findDigits(numbersToDigits(words('four one one one'), 'en'))).toBe('4111');
    expect(findDigits(numbersToDigits(words('cuatro uno uno uno'), 'es'))).toBe('4111');
    expect(findDigits(numbersToDigits(words('vier eins eins eins'), 'de'))).toBe('4111');
  });

  it('reads names after a cue, or as a short answer', () => {
    expect(findName('my name is anna')).toBe('Anna');
    expect(findName('me llamo José García')).toBe('José García');
    expect(findName('Dupont', { bare: true })).toBe('Dupont');
    expect(findName('a table for two')).toBeUndefined();
  });
});

describe('read-back', () => {
  it('says times and dates the way each language does', () => {
    expect(renderValue('time', '19:30', 'en')).toBe('7:30 PM');
    expect(renderValue('time', '20:00', 'fr')).toBe('20 h');
    expect(renderValue('time', '20:00', 'de')).toBe('20 Uhr');
    expect(renderValue('date', '2026-12-04', 'es')).toBe('viernes, 4 de diciembre');
    expect(renderValue('digits', '4111', 'en')).toBe('4 1 1 1');
  });
});

describe('grammar specs: every spoken value form reads back as what it means', () => {
  const agent = new RuleBasedAgent();
  const bank = new RuleBasedAgent({ rulesPath: 'config/agent-bank.json' });

  it('lists sentences, slot forms and expectations per language', async () => {
    await Promise.all([agent.load(), bank.load()]);
    const specs = agent.grammarSpecs();
    expect(specs.map((s) => s.language)).toEqual(['en', 'fr', 'de', 'es', 'it']);
    const en = specs[0];
    expect(en.sentences).toEqual(expect.arrayContaining(['i would like to book a table', 'i would like to book a table for {party_size}', 'yes', 'cancel']));
    // Bare answers and fragments only while their question is open: in the open grammar they catch any short sound.
    for (const fragment of ['{party_size} people', 'actually {time}', '{time}', 'not', "don't"]) expect(en.sentences).not.toContain(fragment);
    expect(en.expectations?.['book_appointment.party_size']).toEqual(expect.arrayContaining(['{party_size} people', 'for {party_size}']));
    expect(en.expectations?.['book_appointment.time']).toEqual(expect.arrayContaining(['{time}', 'actually {time}']));
    expect(en.expectations?.['book_appointment.confirm']).toEqual(expect.arrayContaining(['yes', 'no', 'not', 'no {time}']));
    expect(en.slots.party_size).toContain('four');
    expect(en.slots.time).toEqual(expect.arrayContaining(['eight pm', 'half past seven']));
    expect(en.slots.name).toContain('anna');
    expect(Object.keys(en.expectations ?? {})).toEqual(
      expect.arrayContaining(['book_appointment.party_size', 'book_appointment.time', 'book_appointment.confirm', 'goodbye.confirm']),
    );
    // Written as callers say them: accents kept (the recogniser's dictionary has them, and they set the stress).
    const esRules = specs.find((s) => s.language === 'es');
    expect(esRules?.slots.party_size).toEqual(expect.arrayContaining(['dieciséis', 'veinte']));
    expect(esRules?.sentences).toEqual(expect.arrayContaining(['qué hora es', 'adiós', 'páseme con un agente']));
    const es = bank.grammarSpecs().find((s) => s.language === 'es');
    expect(es?.slots.pin).toEqual(['cero', 'uno', 'dos', 'tres', 'cuatro', 'cinco', 'seis', 'siete', 'ocho', 'nueve']);
    expect(es?.expectations?.['report_lost_card.confirm']).toContain('sí');
    // Digits are said one by one: a four-digit PIN is four references.
    expect(es?.expectations?.['verify_identity.pin']).toContain('{pin} {pin} {pin} {pin}');
    expect(es?.sentences).not.toContain('{pin} {pin} {pin}');
    // Every template names only slots the spec lists.
    for (const spec of [...specs, ...bank.grammarSpecs()]) {
      for (const s of spec.sentences) for (const [, ref] of s.matchAll(/\{(\w+)\}/g)) expect(spec.slots[ref], `${spec.language}: ${s}`).toBeDefined();
    }
  });

  for (const lang of ['en', 'fr', 'de', 'es', 'it']) {
    it(`[${lang}] numbers, digits, times and dates round-trip`, () => {
      const party = { name: 'party_size', type: 'number' as const, prompt: {}, min: 1, max: 20 };
      for (const { form, value } of numberForms(party, lang)) expect(count(form, lang, true), form).toBe(value);
      for (const { form, value } of digitForms(lang)) expect(findDigits(numbersToDigits(words(form), lang)), form).toBe(value);
      const times = timeForms(lang, HOURS);
      expect(times.length).toBeGreaterThan(20);
      for (const { form, value } of times) expect(time(form, lang, true), form).toBe(formatClock(value));
      const today = zonedParts(NOW, TZ);
      for (const { form, value } of dateForms(lang)) {
        const iso = findDate(form, lang, NOW, TZ);
        expect(iso, form).toBeDefined();
        const [y, m, d] = (iso as string).split('-').map(Number);
        const date = new Date(Date.UTC(y, m - 1, d));
        const days = Math.round((date.getTime() - Date.UTC(today.year, today.month - 1, today.day)) / 86_400_000);
        if ('days' in value) expect(days, form).toBe(value.days);
        else {
          expect(date.getUTCDay(), form).toBe(value.weekday);
          expect(days, form).toBeGreaterThanOrEqual(0);
          expect(days, form).toBeLessThanOrEqual(14);
        }
      }
    });
  }
});
