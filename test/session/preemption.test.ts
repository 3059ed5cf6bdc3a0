import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

/** The caller's words in each request the language model got. */
const userWords = (call: CallHarness) => call.llmRequests.map((messages) => messages.findLast((m) => m.role === 'user')?.content);

describe('preemptive reply', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('is started at the first pause and kept when the caller stays silent', async () => {
    call = new CallHarness();
    await call.say('what time is it', 600);
    const lastVoiced = call.clock.now() - 20;
    await call.silence(100);
    // Prepared during the pause (preemptiveSilenceMs 60), before the endpoint (180): held back, unheard.
    expect(userWords(call)).toEqual(['what time is it']);
    expect(call.of('response.started')).toHaveLength(0);
    expect(call.audio).toHaveLength(0);

    await call.silenceUntil((e) => e.type === 'response.done');
    expect(userWords(call)).toEqual(['what time is it']); // no second request at the endpoint
    expect(call.metrics.turns).toEqual([expect.objectContaining({ turn: 1, preemptive: true, discardedPreemptive: 0 })]);
    // Ready before the endpoint: the first agent audio leaves as the turn ends.
    const firstAudio = call.audio[0].atMs;
    expect(firstAudio - lastVoiced).toBeLessThanOrEqual(200);
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: 'You said what time is it. Anything else?' });
  });

  it('is discarded when the caller goes on, and the whole turn is answered', async () => {
    call = new CallHarness();
    await call.say('I want', 400);
    await call.silence(100);
    expect(userWords(call)).toEqual(['I want']);
    await call.say('a pizza', 400);
    await call.silenceUntil((e) => e.type === 'response.done');

    expect(userWords(call)).toEqual(['I want', 'I want a pizza']);
    // Nothing of the discarded reply reached the caller.
    expect(call.of('response.started')).toHaveLength(1);
    expect(call.of('response.done').map((e) => e.text)).toEqual(['You said I want a pizza. Anything else?']);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['I want a pizza']);
    expect(call.metrics.turns).toEqual([expect.objectContaining({ turn: 1, preemptive: true, discardedPreemptive: 1 })]);
    expect(call.session.history.filter((m) => m.role === 'user').map((m) => m.content)).toEqual(['I want a pizza']);
  });
});
