/**
 * A recognition that fell just short of the recogniser's confidence floor (`InputMeta.heardAs`) is asked back —
 * "Did you say: …?" — rather than set aside as not understood or acted on: a yes takes the words as said, a no is
 * a turn not understood (outside a form, the agent says what it can do), anything else is heard as usual. Never for a sensitive answer, a read-back, or words that
 * would mean nothing even if sure. Text against the rule-based agent and the real tool registry (and its gate).
 */
import { describe, expect, it } from 'vitest';
import type { InputMeta } from '../src/providers/llm/types.js';
import { bank, call, restaurant } from './helpers/rules-dialogue.js';

/** What the session passes for a turn the recogniser heard only doubtfully: no words, and its best guess. */
const doubtful = (text: string, confidence = 0.06): InputMeta => ({ source: 'speech', inGrammar: false, confidence: 0, heardAs: { text, confidence } });
const sure = (confidence = 0.9): InputMeta => ({ source: 'speech', inGrammar: true, confidence });

describe('asking back a doubtful recognition', () => {
  it('outside a form: asks, and a yes answers the words as said', async () => {
    const { dialogue: d } = await call(restaurant);
    const asked = await d.say('', doubtful('what time is it'));
    expect(asked.text).toBe('Did you say: what time is it?');
    expect(asked.tools).toEqual([]);
    // The recogniser listens for the yes or no.
    expect(restaurant.expectation(d.history)).toBe('ask_back.confirm');
    expect((await d.say('yes', sure())).text).toBe('It is 11:00 AM.');
    expect(restaurant.expectation(d.history)).toBeUndefined();
  });

  it('a no is a misunderstanding, answered with what the agent can do (the caller may have asked for something else)', async () => {
    const { dialogue: d } = await call(restaurant);
    await d.say('', doubtful('when are you open'));
    expect((await d.say('no', sure())).text).toMatch(/^Sorry, I can only help with .*opening hours, booking a table/);
    expect(restaurant.expectation(d.history)).toBeUndefined();
    expect((await d.say('what time is it', sure())).text).toBe('It is 11:00 AM.');
  });

  it('anything but yes or no is heard as a new turn', async () => {
    const { dialogue: d } = await call(restaurant);
    await d.say('', doubtful('when are you open'));
    expect((await d.say('what time is it', sure())).text).toBe('It is 11:00 AM.');
  });

  it('never ends the call on a doubt: the hang-up waits for a sure yes', async () => {
    const { dialogue: d } = await call(restaurant);
    const asked = await d.say('', doubtful("that's all goodbye"));
    expect(asked.text).toBe("Did you say: that's all goodbye?");
    expect(asked.action).toBeUndefined();
    // A yes the recogniser is unsure of is asked again, and still does nothing.
    const unsure = await d.say('yes', sure(0.2));
    expect(unsure.text).toBe('Please answer yes or no.');
    expect(unsure.action).toBeUndefined();
    const yes = await d.say('yes', sure());
    expect(yes.action).toBe('hangup');
  });

  it('inside a form: a yes fills the slot, and the question stays what the recogniser expects', async () => {
    const { dialogue: d, registry } = await call(restaurant);
    expect((await d.say('I would like to book a table')).text).toBe('For how many people?');
    expect((await d.say('', doubtful('for four people'))).text).toBe('Did you say: for four people?');
    // The caller may say yes, or the answer again.
    expect(restaurant.expectation(d.history)).toBe('book_appointment.party_size');
    expect((await d.say('yes', sure())).text).toBe('For which day?');
    expect((await d.say('', doubtful('tomorrow'))).text).toBe('Did you say: tomorrow?');
    // Said again instead of yes: the new words are the answer.
    expect((await d.say('monday', sure())).text).toBe('At what time?');
    expect((await d.say('', doubtful('at eight pm'))).text).toBe('Did you say: at eight pm?');
    expect((await d.say('no', sure())).text).toBe('Sorry, I misheard. At what time?');
    expect((await d.say('eight pm', sure())).text).toBe('What name should I put the booking under?');
    expect((await d.say('my name is anna', sure())).text).toBe('A table for 4 on Monday, November 30 at 8 PM, under the name Anna. Shall I book it?');
    // Not at a read-back: a doubtful yes there is no yes, and is not asked back either.
    const readBack = await d.say('', doubtful('yes'));
    expect(readBack.text).toMatch(/^Please answer yes or no\./);
    expect(registry.bookings()).toHaveLength(0);
    await d.say('yes', sure());
    expect(registry.bookings()).toEqual([expect.objectContaining({ partySize: 4, date: '2026-11-30', time: '20:00', name: 'Anna' })]);
  });

  it('words that would mean nothing even if sure get the honest answer, not a question', async () => {
    const { dialogue: d } = await call(restaurant);
    expect((await d.say('', doubtful('purple elephants dancing'))).text).toMatch(/^Sorry, I can only help with/);
    expect(restaurant.expectation(d.history)).toBeUndefined();
  });

  it('in the caller\'s language', async () => {
    const { dialogue: d } = await call(restaurant, 'es');
    expect((await d.say('', doubtful('qué hora es'))).text).toBe('¿Ha dicho: qué hora es?');
    expect((await d.say('sí', sure())).text).toMatch(/^Son las 11:00/);
  });

  it('never repeats a sensitive answer back', async () => {
    const { dialogue: d } = await call(bank, 'en', { bank: true });
    expect((await d.say('i lost my card')).text).toMatch(/eight-digit customer number/);
    expect(bank.isSensitive('verify_identity.customer_number')).toBe(true);
    const answer = await d.say('', doubtful('one two three four five six seven eight'));
    expect(answer.text).not.toMatch(/Did you say|one two|1234/);
    expect(answer.tools).toEqual([]);
    // The driver, like the session, keeps no doubtful hearing of a sensitive answer at all.
    expect(d.history.some((m) => m.input?.heardAs !== undefined)).toBe(false);
  });
});
