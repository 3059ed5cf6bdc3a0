import { afterEach, describe, expect, it } from 'vitest';
import type { ChatMessage } from '../../src/providers/llm/types.js';
import { ScriptedLlm } from '../../src/providers/llm/scripted.js';
import { CallHarness } from './harness.js';

/** Records what each request saw; asks for a PIN once a card was mentioned, and treats that answer as sensitive. */
class PinAgent extends ScriptedLlm {
  readonly requests: (readonly ChatMessage[])[] = [];
  constructor() {
    super((messages) => {
      this.requests.push(messages.map((m) => ({ ...m })));
      return { text: 'To check it is you, please tell me your four digit PIN.' };
    });
  }
  expectation(messages: readonly ChatMessage[]): string | undefined {
    return messages.some((m) => m.role === 'user' && /card/.test(m.content)) ? 'block_card.pin' : undefined;
  }
  isSensitive(expectation: string): boolean {
    return expectation.endsWith('.pin');
  }
}

const lastUser = (messages: readonly ChatMessage[] | undefined): ChatMessage | undefined => messages?.findLast((m) => m.role === 'user');

describe('a turn the recogniser heard only doubtfully', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('reaches the agent as no words with what it sounded like, and is answered; the caller is shown no words', async () => {
    call = new CallHarness();
    call.asr.verdict = { inGrammar: true, confidence: 0.9 };
    call.asr.doubtful = (text) => text === 'what time is it';
    await call.say('what time is it', 600);
    await call.silenceUntil((e) => e.type === 'response.done');
    const heard = lastUser(call.llmRequests.at(-1));
    expect(heard?.content).toBe('');
    expect(heard?.input).toMatchObject({ source: 'speech', inGrammar: false, heardAs: { text: 'what time is it', confidence: 0.06 } });
    expect(call.of('transcript.final').at(-1)?.text).toBe('');
  });

  it('never carries a doubtful hearing of a sensitive answer', async () => {
    const agent = new PinAgent();
    call = new CallHarness({ llm: agent });
    call.asr.verdict = { inGrammar: true, confidence: 0.9 };
    await call.say('I lost my card', 600);
    await call.silenceUntil((e) => e.type === 'response.done');
    call.asr.doubtful = (text) => text === 'one two three four';
    await call.say('one two three four', 800);
    await call.silenceUntil((e) => e.type === 'response.done' && call.of('response.done').length === 2);
    const answer = lastUser(agent.requests.at(-1));
    expect(answer?.input?.source).toBe('speech');
    expect(answer?.input?.heardAs).toBeUndefined();
    expect(JSON.stringify(agent.requests)).not.toMatch(/one two/);
  });
});
