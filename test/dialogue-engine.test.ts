/**
 * Multi-turn dialogues in text against the rule-based agent and the real tool registry (with its
 * confirmation gate), driven the way ReplyTask drives them.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import type { ChatMessage } from '../src/providers/llm/types.js';
import { bank, call, NOW, restaurant } from './helpers/rules-dialogue.js';

describe('restaurant booking form (English)', () => {
  it('elicits each missing slot, one question at a time, then reads back and books once on yes', async () => {
    const { dialogue: d, registry } = await call(restaurant);
    expect((await d.say('I would like to book a table')).text).toBe('For how many people?');
    expect(restaurant.expectation(d.history)).toBe('book_appointment.party_size');
    expect((await d.say('four people')).text).toBe('For which day?');
    expect((await d.say('tomorrow')).text).toBe('At what time?');
    expect((await d.say('eight')).text).toBe('What name should I put the booking under?');
    expect((await d.say('my name is anna')).text).toBe('A table for 4 on Monday, November 30 at 8 PM, under the name Anna. Shall I book it?');
    expect(registry.bookings()).toHaveLength(0);
    const done = await d.say('yes please');
    expect(done.text).toMatch(/^Done\. Your table for 4 on Monday, November 30 at 8 PM is booked\. Your confirmation number is \d{6}\.$/);
    expect(registry.bookings()).toEqual([expect.objectContaining({ partySize: 4, date: '2026-11-30', time: '20:00', name: 'Anna' })]);

    // No double action: another yes, or a state question, does not book again.
    expect((await d.say('yes')).text).toBe('How else can I help?');
    expect((await d.say('what did I book')).text).toMatch(/^Your booking \d{6}: a table for 4 on Monday, November 30 at 8 PM, under the name Anna\.$/);
    expect(registry.bookings()).toHaveLength(1);
  });

  it('fills slots given early and asks only for what is missing; 7 means 19:00 for a restaurant open 11–22', async () => {
    const { dialogue: d } = await call(restaurant);
    expect((await d.say('can I book a table for two tomorrow at 7')).text).toBe('What name should I put the booking under?');
    expect((await d.say('Smith')).text).toBe('A table for 2 on Monday, November 30 at 7 PM, under the name Smith. Shall I book it?');
  });

  it('takes every value of the form in one breath, as the grammar lets a caller say it', async () => {
    await restaurant.load();
    const cases = [
      { lang: 'en', values: { party_size: 'two', date: 'on friday', time: 'seven', name: 'anna' }, readBack: 'A table for 2 on Friday, December 4 at 7 PM, under the name Anna. Shall I book it?' },
      { lang: 'es', values: { party_size: 'dos', date: 'el viernes', time: 'a las siete', name: 'anna' }, readBack: 'Una mesa para 2 el viernes, 4 de diciembre a las 19, a nombre de Anna. ¿La reservo?' },
    ];
    for (const { lang, values, readBack } of cases) {
      const spec = restaurant.grammarSpecs().find((s) => s.language === lang);
      const refs = Object.keys(values).map((slot) => `{${slot}}`);
      const whole = spec?.sentences.filter((s) => refs.every((r) => s.includes(r))) ?? [];
      expect(whole.length, lang).toBeGreaterThan(0);
      for (const [slot, form] of Object.entries(values)) expect(spec?.slots[slot], `${lang} ${slot}`).toContain(form);
      for (const template of whole) {
        const { dialogue: d } = await call(restaurant, lang);
        const said = template.replace(/\{(\w+)\}/g, (_, slot: string) => values[slot as keyof typeof values]);
        expect((await d.say(said)).text, said).toBe(readBack);
      }
    }
  });

  it('an answer may carry the form\'s later values, as the expectation grammar lets a caller say them', async () => {
    await restaurant.load();
    const cases = [
      { lang: 'en', request: 'can i make a reservation for sixteen people', asked: 'For which day?', values: { date: 'next saturday', time: 'one thirty pm', name: 'schmidt' }, readBack: 'A table for 16 on Saturday, December 5 at 1:30 PM, under the name Schmidt. Shall I book it?' },
      { lang: 'es', request: 'quiero reservar una mesa para dos personas', asked: '¿Para qué día?', values: { date: 'el viernes', time: 'a las siete', name: 'anna' }, readBack: 'Una mesa para 2 el viernes, 4 de diciembre a las 19, a nombre de Anna. ¿La reservo?' },
    ];
    for (const { lang, request, asked, values, readBack } of cases) {
      const spec = restaurant.grammarSpecs().find((s) => s.language === lang);
      const answers = spec?.expectations?.['book_appointment.date'] ?? [];
      const refs = Object.keys(values).map((slot) => `{${slot}}`);
      const carrying = answers.filter((a) => a.startsWith('{date}') && refs.every((r) => a.includes(r)));
      expect(carrying.length, lang).toBeGreaterThan(0);
      for (const template of carrying) {
        const { dialogue: d } = await call(restaurant, lang);
        expect((await d.say(request)).text, request).toBe(asked);
        expect(restaurant.expectation(d.history)).toBe('book_appointment.date');
        const said = template.replace(/\{(\w+)\}/g, (_, slot: string) => values[slot as keyof typeof values]);
        expect((await d.say(said)).text, said).toBe(readBack);
      }
    }
  });

  it('corrections change a slot and read back again; "no" asks what to change', async () => {
    const { dialogue: d, registry } = await call(restaurant);
    await d.say('a table for four tomorrow at eight pm under the name Anna');
    expect((await d.say('actually make it five')).text).toBe('A table for 5 on Monday, November 30 at 8 PM, under the name Anna. Shall I book it?');
    expect((await d.say("no, nine o'clock")).text).toBe('A table for 5 on Monday, November 30 at 9 PM, under the name Anna. Shall I book it?');
    expect((await d.say('no')).text).toBe('Okay. What would you like to change?');
    expect((await d.say('next friday')).text).toBe('A table for 5 on Friday, December 4 at 9 PM, under the name Anna. Shall I book it?');
    // A state question mid-form is answered from the state, and the question asked again.
    expect((await d.say('what time was it')).text).toBe(
      'So far: a table for 5 on Friday, December 4 at 9 PM. A table for 5 on Friday, December 4 at 9 PM, under the name Anna. Shall I book it?',
    );
    await d.say('yes');
    expect(registry.bookings()).toEqual([expect.objectContaining({ partySize: 5, date: '2026-12-04', time: '21:00' })]);
  });

  it('cancel drops the form; a refused confirmation books nothing', async () => {
    const { dialogue: d, registry } = await call(restaurant);
    await d.say('book a table for two tomorrow at 8 pm for Anna');
    expect((await d.say('cancel')).text).toBe('Okay, I have cancelled that. Is there anything else?');
    expect((await d.say('yes')).text).toBe('How else can I help?');
    expect((await d.say('what did I book')).text).toBe('You have not booked anything yet.');
    expect(registry.bookings()).toHaveLength(0);
    expect((await d.say('cancel')).text).toBe('There is nothing to cancel. How can I help?');
  });

  it('a read-back the caller barely heard does not count: the gate refuses the yes and the agent reads back again', async () => {
    const { dialogue: d, registry } = await call(restaurant);
    await d.say('table for two tomorrow at 8 pm for Anna');
    // The caller cut the read-back off after its first words (the session then records no `confirms`).
    const readBack = d.history[d.history.length - 1];
    d.history[d.history.length - 1] = { role: 'assistant', content: readBack.content.split(' ').slice(0, 3).join(' ') + '…' };
    const again = await d.say('yes');
    expect(again.tools.map((t) => JSON.parse(t.result).error)).toEqual(['confirmation_required']);
    expect(again.text).toBe('A table for 2 on Monday, November 30 at 8 PM, under the name Anna. Shall I book it?');
    expect(registry.bookings()).toHaveLength(0);
    await d.say('yes');
    expect(registry.bookings()).toHaveLength(1);
  });

  it('a greeting is not a name; "this evening" is today in every language', async () => {
    const { dialogue: d } = await call(restaurant);
    await d.say('a table for 4 tonight at 8');
    expect((await d.say('hello')).text).toBe('Hello! How can I help you today? What name should I put the booking under?');
    expect((await d.say('Anna')).text).toBe('A table for 4 on Sunday, November 29 at 8 PM, under the name Anna. Shall I book it?');
    const { dialogue: fr } = await call(restaurant, 'fr');
    await fr.say('je voudrais réserver ce soir à 20h pour 3 personnes');
    expect((await fr.say('Dupont')).text).toBe('Une table pour 3 le dimanche 29 novembre à 20 h, au nom de Dupont. Je réserve ?');
  });

  it('a value outside the opening hours is refused with the hours, and asked again', async () => {
    const { dialogue: d } = await call(restaurant);
    await d.say('table for 2 tomorrow');
    expect((await d.say('at 6 in the morning')).text).toBe('We are open from 11 AM to 10 PM. What time would you like? For example: eight pm.');
  });

  it('after three answers it cannot use, the caller is handed to a person', async () => {
    const { dialogue: d } = await call(restaurant);
    await d.say('I want to book a table');
    expect((await d.say('purple monkey')).text).toBe('How many people will there be? For example: four people.');
    await d.say('dishwasher quantum');
    const last = await d.say('banana');
    expect(last.text).toMatch(/put you through to a colleague/);
    expect(last.action).toBe('transfer');
  });

  it('an unsure goodbye is confirmed before hanging up; a sure one is not', async () => {
    const { dialogue: d } = await call(restaurant);
    const unsure = await d.say('bye', { source: 'speech', confidence: 0.3 });
    expect(unsure.text).toBe('Did you want to end the call?');
    expect(unsure.action).toBeUndefined();
    const yes = await d.say('yes', { source: 'speech', confidence: 0.9 });
    expect(yes.text).toBe('Goodbye! Thank you for calling.');
    expect(yes.action).toBe('hangup');

    // An unsure yes is not enough either.
    const { dialogue: d3, registry } = await call(restaurant);
    await d3.say('table for two tomorrow at 8 pm for Anna');
    const doubtful = await d3.say('yes', { source: 'speech', confidence: 0.2 });
    expect(doubtful.text).toBe('Please answer yes or no. A table for 2 on Monday, November 30 at 8 PM, under the name Anna. Shall I book it?');
    expect(registry.bookings()).toHaveLength(0);
    await d3.say('yes', { source: 'speech', confidence: 0.8 });
    expect(registry.bookings()).toHaveLength(1);

    const { dialogue: d2 } = await call(restaurant);
    expect((await d2.say('goodbye', { source: 'speech', inGrammar: false })).text).toBe('Did you want to end the call?');
    expect((await d2.say('no')).text).toBe('Okay, I will not do that. How else can I help?');
    expect((await d2.say('goodbye', { source: 'speech', confidence: 0.95 })).action).toBe('hangup');
  });

  it('speech outside every grammar gets an honest "I can help with…", in the caller\'s language, and no action', async () => {
    const { dialogue: d, registry } = await call(restaurant);
    const heard = await d.say('', { source: 'speech', inGrammar: false, confidence: 0 });
    expect(heard.text).toMatch(/^Sorry, I can only help with .*opening hours, booking a table/);
    expect(heard.tools).toEqual([]);
    expect(heard.action).toBeUndefined();
    // Off-topic speech the recogniser forced, unsure, onto slot words outside any form: the same honest answer.
    expect((await d.say('i meant for three people', { source: 'speech', inGrammar: true, confidence: 0.13 })).text).toMatch(/^Sorry, I can only help/);
    // Typed words it cannot match are a misunderstanding, not out-of-domain speech.
    expect((await d.say('purple elephants')).text).toBe("Sorry, I didn't catch that. Could you say it again?");
    const { dialogue: es } = await call(restaurant, 'es');
    expect((await es.say('', { source: 'speech', inGrammar: false, confidence: 0 })).text).toMatch(/^Lo siento, solo puedo ayudarle/);
    const { dialogue: b } = await call(bank, 'en', { bank: true });
    expect((await b.say('', { source: 'speech', inGrammar: false })).text).toMatch(/only help with your card/);
    expect(registry.bookings()).toHaveLength(0);
  });
});

describe('Spanish, and a language switch mid-call', () => {
  it('books in Spanish with early filling and a correction', async () => {
    const { dialogue: d, registry } = await call(restaurant, 'es');
    const first = await d.say('quiero reservar una mesa para cuatro mañana a las ocho');
    expect(first.language).toBe('es');
    expect(first.text).toBe('¿A nombre de quién hago la reserva?');
    expect((await d.say('me llamo García')).text).toBe('Una mesa para 4 el lunes, 30 de noviembre a las 20, a nombre de García. ¿La reservo?');
    expect((await d.say('mejor a las nueve y media')).text).toBe(
      'Una mesa para 4 el lunes, 30 de noviembre a las 21:30, a nombre de García. ¿La reservo?',
    );
    expect((await d.say('no')).text).toBe('De acuerdo. ¿Qué quiere cambiar?');
    expect((await d.say('somos cinco')).text).toMatch(/^Una mesa para 5 /);
    expect((await d.say('sí')).text).toMatch(/^Hecho\. Su mesa para 5 el lunes, 30 de noviembre a las 21:30 está reservada\./);
    expect(registry.bookings()).toEqual([expect.objectContaining({ partySize: 5, time: '21:30', name: 'García' })]);
    expect((await d.say('¿qué he reservado?')).text).toMatch(/^Su reserva \d{6}: una mesa para 5/);
  });

  it('answers each turn in the language of the caller’s words and keeps it for short answers', async () => {
    const { dialogue: d } = await call(restaurant, 'en');
    expect((await d.say('I would like to book a table')).text).toBe('For how many people?');
    const switched = await d.say('para cuatro personas');
    expect(switched.language).toBe('es');
    expect(switched.text).toBe('¿Para qué día?');
    // "8" has no language: the call stays in Spanish.
    expect((await d.say('mañana')).text).toBe('¿A qué hora?');
    expect((await d.say('8')).text).toBe('¿A nombre de quién hago la reserva?');
    const back = await d.say('what time is it');
    expect(back.language).toBe('en');
    expect(back.text).toMatch(/^It is \d{1,2}:\d{2} (AM|PM)\. What name should I put the booking under\?$/);
    const fr = await d.say('Dupont');
    expect(fr.language).toBe('en');
    expect((await d.say('quelle heure est-il')).language).toBe('fr');
  });
});

describe('the dialogue state is replayed from the history (pure)', () => {
  it('the same history always gives the same state; a proposed booking whose result never came is asked again', async () => {
    await restaurant.load();
    const history: ChatMessage[] = [
      { role: 'user', content: 'table for 2 tomorrow at 8 pm, my name is Anna' },
      { role: 'assistant', content: 'A table for 2 … Shall I book it?' },
      { role: 'user', content: 'yes' },
    ];
    const a = restaurant.state(history, 'en');
    expect(restaurant.state(history, 'en')).toEqual(a);
    expect(a.form).toMatchObject({ intent: 'book_appointment', executing: true, slots: { party_size: 2, time: '20:00', name: 'Anna' } });
    // The reply that would have booked was thrown away (the caller went on): nothing ran, so ask again.
    const after = [...history, { role: 'user' as const, content: 'hmm' }];
    expect(restaurant.state(after, 'en').form).toMatchObject({ executing: false, asking: 'confirm' });
  });

  it('the incremental replay (memoised per message) gives the state a fresh replay gives', async () => {
    const { dialogue: d } = await call(restaurant);
    for (const u of ['book a table for 3', 'friday', 'what time is it', 'at 9', 'Rossi', 'actually at half past eight', 'yes']) await d.say(u);
    const fresh = new RuleBasedAgent({ now: () => NOW, timezone: 'Europe/Paris' });
    await fresh.load();
    expect(fresh.state(d.history, 'en')).toEqual(restaurant.state(d.history, 'en'));
    expect(fresh.state(d.history, 'en').done).toEqual([expect.objectContaining({ slots: { party_size: 3, date: '2026-12-04', time: '20:30', name: 'Rossi' } })]);
  });
});

describe('properties over random conversations', () => {
  const pool = [
    'I would like to book a table', 'four people', 'tomorrow', 'at eight pm', 'my name is Anna', 'yes', 'no', 'cancel',
    'actually make it five', 'what did I book', 'what time is it', 'quiero reservar una mesa', 'sí', 'a las nueve', 'hello',
    'purple monkey', 'DTMF: 4 2', 'next friday', 'half past seven', 'Dupont', 'start over', 'merci', 'ja', 'bye',
  ];
  const utterance = fc.oneof(fc.constantFrom(...pool), fc.string({ maxLength: 30 }));

  it('never throws, books at most once per yes, and the memoised replay equals a fresh one', async () => {
    await restaurant.load();
    await fc.assert(
      fc.asyncProperty(fc.array(utterance, { minLength: 1, maxLength: 12 }), async (turns) => {
        const { dialogue: d, registry } = await call(restaurant);
        let yeses = 0;
        for (const t of turns) {
          if (/^(yes|sí|ja)$/.test(t)) yeses++;
          await d.say(t);
        }
        expect(registry.bookings().length).toBeLessThanOrEqual(yeses);
        const fresh = new RuleBasedAgent({ now: () => NOW, timezone: 'Europe/Paris' });
        await fresh.load();
        expect(fresh.state(d.history, 'en')).toEqual(restaurant.state(d.history, 'en'));
      }),
      { numRuns: 25 },
    );
  }, 60_000);
});

describe('bank card service', () => {
  it('verifies the caller first (keypad), reports a lost card, confirms the last four digits, blocks it once', async () => {
    const { dialogue: d, registry } = await call(bank, 'en', { bank: true });
    expect((await d.open()).text).toMatch(/^Welcome to the card service/);
    expect((await d.say('I lost my card')).text).toBe('First I need to verify your identity. Please say or type your eight-digit customer number.');
    expect(bank.expectation(d.history)).toBe('verify_identity.customer_number');
    expect(bank.isSensitive('verify_identity.customer_number')).toBe(true);
    expect((await d.say('DTMF: 1 2 3 4 5 6 7 8', { source: 'keypad' })).text).toBe('Thank you. Now your four-digit telephone PIN, please.');
    const wrong = await d.say('DTMF: 9 9 9 9', { source: 'keypad' });
    expect(wrong.text).toMatch(/^Sorry, those details do not match our records\. First I need to verify/);
    await d.say('DTMF: 1 2 3 4 5 6 7 8', { source: 'keypad' });
    const ok = await d.say('four three two one', { source: 'speech' });
    expect(ok.text).toBe('Thank you, Anna Smith, you are verified. Which card is it? Please give me its last four digits.');
    expect((await d.say('four one one one')).text).toBe('You want to block the card ending in 4 1 1 1. This cannot be undone. Shall I block it?');
    const blocked = await d.say('yes');
    expect(blocked.text).toMatch(/^Your card ending in 4 1 1 1 is blocked\. Your reference is BLK\d{6}\./);
    expect(registry.bankCustomers()[0].cards).toEqual([{ last4: '4111', blocked: true }, { last4: '5522' }]);
    expect((await d.say('yes')).tools).toEqual([]);
    expect((await d.say('which card did you block')).text).toMatch(/^The card ending in 4 1 1 1 is blocked, reference BLK\d{6}\.$/);

    // Masking: the customer number and PIN appear nowhere in the conversation the agent keeps (or a model would see).
    const record = JSON.stringify(d.history.map(({ secret: _secret, ...visible }) => visible));
    expect(record).not.toMatch(/12345678|4321|1 2 3 4 5 6 7 8|four three two one/);
    expect(record).toContain('****5678');
    // They reached the tool.
    expect(d.history.some((m) => m.role === 'tool' && m.content.includes('Anna Smith'))).toBe(true);
  });

  it('a caller who fails verification three times is handed to a person', async () => {
    const { dialogue: d } = await call(bank, 'es', { bank: true });
    await d.say('he perdido mi tarjeta');
    let last;
    for (let i = 0; i < 3; i++) {
      await d.say('DTMF: 1 1 1 1 1 1 1 1', { source: 'keypad' });
      last = await d.say('DTMF: 0 0 0 0', { source: 'keypad' });
    }
    expect(last?.text).toBe('Lo siento, no consigo entenderle. Le paso con un compañero.');
    expect(last?.action).toBe('transfer');
  });
});
