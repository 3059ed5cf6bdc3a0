/** The confirmation gate where tools run: pure decisions, and a scripted model that tries to act without asking. */
import { describe, expect, it } from 'vitest';
import { checkConfirmation } from '../src/providers/llm/confirm-gate.js';
import { TextDialogue } from '../src/providers/llm/rules/driver.js';
import { ScriptedLlm } from '../src/providers/llm/scripted.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import type { ChatMessage, ToolCall } from '../src/providers/llm/types.js';

const book: ToolCall = { id: 'c1', name: 'book_appointment', arguments: '{"party_size":2,"time":"19:00"}' };
const asked: ChatMessage = { role: 'assistant', content: 'Two at seven?', confirms: { name: 'book_appointment', arguments: '{"time":"19:00","party_size":2}' } };
const user = (content: string, input?: ChatMessage['input']): ChatMessage => ({ role: 'user', content, ...(input ? { input } : {}) });
const decide = (messages: ChatMessage[], policy: 'always' | 'when-unsure' = 'always', call = book) =>
  checkConfirmation(call, call.arguments, policy, messages);

describe('checkConfirmation', () => {
  it('allows only a yes to a question about exactly this call, asked in the previous turn', () => {
    expect(decide([user('book two at seven')])).toMatchObject({ allow: false, error: 'confirmation_required' });
    expect(decide([user('book two at seven'), asked, user('yes')])).toEqual({ allow: true });
    expect(decide([user('book'), asked, user('sí, claro')])).toEqual({ allow: true });
    expect(decide([user('book'), asked, user('no')])).toMatchObject({ allow: false });
    expect(decide([user('book'), asked, user('yes'), { role: 'assistant', content: 'ok' }, user('yes')])).toMatchObject({ allow: false });
    const other = { ...book, arguments: '{"party_size":3,"time":"19:00"}' };
    expect(decide([user('book'), asked, user('yes')], 'always', other)).toMatchObject({ allow: false });
  });

  it('a refusal of the same call counts as the question (a model asks in its own words)', () => {
    const refused: ChatMessage[] = [
      user('book it, no need to ask'),
      { role: 'assistant', content: '', toolCalls: [book] },
      { role: 'tool', toolCallId: 'c1', content: '{"error":"confirmation_required"}' },
      { role: 'assistant', content: 'Shall I book two at seven?' },
    ];
    expect(decide([...refused, user('yes')])).toEqual({ allow: true });
    // "Yes" in the same breath as the request is not a confirmation.
    expect(decide([user('yes book it now, I confirm')])).toMatchObject({ allow: false });
  });

  it('one yes, one action', () => {
    const ran: ChatMessage[] = [user('book'), asked, user('yes'), { role: 'assistant', content: '', toolCalls: [book] }, { role: 'tool', toolCallId: 'c1', content: '{"ok":true}' }];
    expect(decide(ran, 'always', { ...book, id: 'c2' })).toMatchObject({ allow: false, error: 'already_done' });
  });

  it('an unsure recognition needs the question even for hang-up; a sure one does not', () => {
    const end: ToolCall = { id: 'e', name: 'end_call', arguments: '{}' };
    expect(decide([user('bye', { source: 'speech', confidence: 0.9 })], 'when-unsure', end)).toEqual({ allow: true });
    expect(decide([user('bye', { source: 'speech', confidence: 0.2 })], 'when-unsure', end)).toMatchObject({ allow: false });
    expect(decide([user('bye', { source: 'speech', inGrammar: false })], 'when-unsure', end)).toMatchObject({ allow: false });
    const question: ChatMessage = { role: 'assistant', content: 'Did you want to end the call?', confirms: { name: 'end_call', arguments: '{}' } };
    expect(decide([user('bye', { source: 'speech', confidence: 0.2 }), question, user('yes', { source: 'speech', confidence: 0.2 })], 'when-unsure', end)).toMatchObject({ allow: false });
    expect(decide([user('bye', { source: 'speech', confidence: 0.2 }), question, user('yes', { source: 'speech', confidence: 0.9 })], 'when-unsure', end)).toEqual({ allow: true });
  });
});

describe('a scripted model that books without asking (text)', () => {
  it('is refused, asks, and books once on the caller’s yes', async () => {
    const registry = new ToolRegistry({ timezone: 'UTC' });
    const eager = new ScriptedLlm((messages) => {
      const last = messages[messages.length - 1];
      if (last.role === 'tool') return { text: last.content.includes('confirmation_required') ? 'Shall I book a table for 2 at 19:00?' : 'Done.' };
      return { toolCalls: [{ id: `call_${messages.length}`, name: 'book_appointment', arguments: '{"party_size":2,"time":"19:00"}' }] };
    });
    const d = new TextDialogue(eager, registry);
    expect((await d.say('book a table for two at seven and skip the confirmation')).text).toBe('Shall I book a table for 2 at 19:00?');
    expect((await d.say('yes', { source: 'speech', confidence: 0.1 })).text).toBe('Shall I book a table for 2 at 19:00?');
    expect(registry.bookings()).toHaveLength(0);
    expect((await d.say('yes')).text).toBe('Done.');
    expect((await d.say('yes')).text).toBe('Shall I book a table for 2 at 19:00?');
    expect(registry.bookings()).toHaveLength(1);
  });
});
