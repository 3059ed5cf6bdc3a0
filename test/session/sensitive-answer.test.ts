import { afterEach, describe, expect, it } from 'vitest';
import type { ChatMessage } from '../../src/providers/llm/types.js';
import { ScriptedLlm } from '../../src/providers/llm/scripted.js';
import { CallHarness } from './harness.js';

/** An agent that asks for a PIN after a lost card, and treats that answer as sensitive. */
class PinAgent extends ScriptedLlm {
  constructor() {
    super(() => ({ text: 'I can block that card for you. To check it is you, please tell me your four digit PIN, one digit at a time.' }));
  }
  expectation(messages: readonly ChatMessage[]): string | undefined {
    return messages.some((m) => m.role === 'user' && /card/.test(m.content)) ? 'block_card.pin' : undefined;
  }
  isSensitive(expectation: string): boolean {
    return expectation.endsWith('.pin');
  }
}

describe('a sensitive answer said over its question', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('is masked from the moment the question starts: no partial shows the digits, the final is masked', async () => {
    call = new CallHarness({ llm: new PinAgent() });
    await call.say('I lost my card', 600);
    await call.silence(1500); // past the continuation window: the question is playing
    expect(call.of('response.done')).toHaveLength(0);
    const partialsBefore = call.of('transcript.partial').length;
    expect(partialsBefore).toBeGreaterThan(0); // the first turn's words were shown as they came

    await call.say('one two three four', 800);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 2);
    // Not one partial of the PIN, although the caller spoke while the question was still being asked.
    expect(call.of('transcript.partial').slice(partialsBefore)).toEqual([]);
    const final = call.of('transcript.final').find((e) => e.turn === 2);
    expect(final?.text).not.toMatch(/one|two|three|four/);
    expect(final?.text).toContain('****');
  });
});
