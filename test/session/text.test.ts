import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

describe('text turns', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('answers a typed turn like a spoken one', async () => {
    call = new CallHarness();
    call.session.submitText('  opening hours?  ');
    await call.wait(1_000);
    expect(call.of('transcript.final')).toEqual([{ type: 'transcript.final', turn: 1, text: 'opening hours?', language: 'en' }]);
    expect(call.llmRequests[0].at(-1)).toMatchObject({ role: 'user', content: 'opening hours?', input: { source: 'text' } });
    expect(call.of('response.done')[0]).toMatchObject({ turn: 1, status: 'completed', text: 'You said opening hours?. Anything else?' });
    expect(call.session.history.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
  });

  it('interrupts the agent when it arrives while the agent talks', async () => {
    call = new CallHarness({ agent: () => ({ text: 'one two three four five six seven eight nine ten eleven twelve' }) });
    call.session.submitText('count');
    await call.wait(500);
    call.session.submitText('stop');
    await call.wait(2_000);
    const done = call.of('response.done');
    expect(done.map((e) => e.status)).toEqual(['interrupted', 'completed']);
    expect(done[0].text).toMatch(/^one two three/);
    expect(call.session.history.filter((m) => m.role === 'user').map((m) => m.content)).toEqual(['count', 'stop']);
  });

  it('only enters the conversation with respond: false, until respond() asks for an answer', async () => {
    call = new CallHarness();
    call.session.submitText('my name is Ada', 'en', { respond: false });
    await call.wait(500);
    expect(call.llmRequests).toHaveLength(0);
    expect(call.session.history.at(-1)).toMatchObject({ role: 'user', content: 'my name is Ada' });
    call.session.respond();
    await call.wait(1_000);
    expect(call.llmRequests).toHaveLength(1);
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: 'You said my name is Ada. Anything else?' });
  });
});
