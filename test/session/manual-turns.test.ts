import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

describe('client-committed turns (turn detection off)', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('ends a turn only on commitInput(), and answers only on respond()', async () => {
    call = new CallHarness();
    call.session.setTurnDetection({ auto: false, respond: true }); // no automatic answer without automatic turns
    await call.say('hello there', 400);
    await call.silence(1_000);
    expect(call.of('transcript.final')).toHaveLength(0);
    expect(call.llmRequests).toHaveLength(0); // no preemptive reply either

    expect(call.session.commitInput()).toBe(true);
    await call.wait(100);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['hello there']);
    expect(call.session.history.at(-1)).toMatchObject({ role: 'user', content: 'hello there' });
    expect(call.llmRequests).toHaveLength(0);

    call.session.respond();
    await call.wait(1_000);
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed', text: 'You said hello there. Anything else?' });
    expect(call.session.commitInput()).toBe(false); // nothing said since
  });

  it('does not let caller sound pause or cut the agent', async () => {
    call = new CallHarness({ agent: () => ({ text: 'one two three four five six seven eight nine ten' }) });
    call.session.setTurnDetection({ auto: false, respond: false });
    call.session.submitText('count');
    await call.wait(200);
    await call.say('stop it now', 600);
    await call.silenceUntil((e) => e.type === 'response.done');
    expect(call.of('response.done')[0]).toMatchObject({ status: 'completed' });
    expect(call.of('response.interrupted')).toHaveLength(0);
    // Audio went out without a gap while the caller spoke: one frame per 20 ms.
    const times = call.audio.map((a) => a.atMs);
    const gaps = times.slice(1).map((t, i) => t - times[i]);
    expect(Math.max(...gaps)).toBeLessThanOrEqual(20);
  });
});
