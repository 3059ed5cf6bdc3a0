import { describe, expect, it } from 'vitest';
import { Conversation } from '../../src/session/conversation.js';

describe('Conversation', () => {
  it('keeps the instructions first, whatever is added or removed', () => {
    const c = new Conversation('Be brief.');
    c.addUser('hello', { source: 'speech', confidence: 0.8 });
    c.addHeard('Hi, how can I…');
    c.addNote('The caller is a member.');
    c.setInstructions('Be very brief.');
    expect(c.messages).toEqual([
      { role: 'system', content: 'Be very brief.' },
      { role: 'user', content: 'hello', input: { source: 'speech', confidence: 0.8 } },
      { role: 'assistant', content: 'Hi, how can I…' },
      { role: 'system', content: 'The caller is a member.' },
    ]);
    // The instructions are never removed, even when a note says the same.
    expect(c.remove('system', 'Be very brief.')).toBe(false);
    expect(c.remove('system', 'The caller is a member.')).toBe(true);
    expect(c.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
  });

  it('removes the latest matching message only, and keeps a masked answer aside', () => {
    const c = new Conversation('x');
    c.addUser('yes');
    c.addHeard('Anything else?');
    c.addUser('yes');
    c.addUser('****', { source: 'keypad' }, '1234');
    expect(c.remove('user', 'yes')).toBe(true);
    expect(c.messages.slice(1)).toEqual([
      { role: 'user', content: 'yes' },
      { role: 'assistant', content: 'Anything else?' },
      { role: 'user', content: '****', secret: '1234', input: { source: 'keypad' } },
    ]);
    expect(c.remove('user', 'no')).toBe(false);
  });
});
