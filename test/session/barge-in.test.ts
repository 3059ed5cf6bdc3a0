import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_MS } from '../../src/audio/format.js';
import { CallHarness } from './harness.js';

const reply = 'Our menu today has a tomato soup, a roast chicken with potatoes, a mushroom risotto and an apple tart for dessert.';
const menuAgent = () => ({ text: reply });

/** A first turn, then 500 ms of the agent's (3 s) answer playing. */
async function agentTalking(call: CallHarness): Promise<void> {
  await call.say('what is on the menu', 600);
  await call.silenceUntil((e) => e.type === 'response.audio.started');
  await call.silence(500);
}

describe('barge-in', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('is confirmed by words: the agent stops, and only what was heard stays in the conversation', async () => {
    call = new CallHarness({ agent: menuAgent, config: { turn: { continuationWindowMs: 0 } } });
    await agentTalking(call);
    const onset = call.clock.now();
    await call.say('stop please', 600);

    // Agent audio paused at the caller's first voiced frame, then cut once minInterruptionMs of speech was heard.
    const afterOnset = call.audio.filter(({ atMs }) => atMs > onset + 20);
    expect(afterOnset).toHaveLength(0);
    const interrupted = call.of('response.interrupted');
    expect(interrupted).toHaveLength(1);
    const at = call.timeOf((e) => e.type === 'response.interrupted')!;
    // On the frame that completes minInterruptionMs of speech (its start is one frame earlier).
    expect(at - onset + FRAME_MS).toBe(call.config.turn.minInterruptionMs);
    expect(call.of('audio.clear')).toHaveLength(1);
    expect(call.metrics.interruptions).toBe(1);

    const heard = interrupted[0].heardText;
    expect(heard.endsWith('…')).toBe(true);
    expect(reply.startsWith(heard.slice(0, -1))).toBe(true);
    expect(call.of('response.done')[0]).toMatchObject({ status: 'interrupted', text: heard });

    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 2);
    expect(call.of('transcript.final')[1].text).toBe('stop please');
    expect(call.session.history.slice(1, 4).map((m) => `${m.role}: ${m.content}`)).toEqual([
      'user: what is on the menu',
      `assistant: ${heard}`,
      'user: stop please',
    ]);
  });

  it('is not confirmed by a backchannel: "mhm" pauses the agent, which then goes on to the end', async () => {
    call = new CallHarness({ agent: menuAgent });
    await agentTalking(call);
    const onset = call.clock.now();
    await call.say('mhm', 400);
    const resumedBy = call.clock.now();
    await call.silenceUntil((e) => e.type === 'response.done');

    expect(call.of('response.interrupted')).toHaveLength(0);
    expect(call.metrics.interruptions).toBe(0);
    // Paused while the caller made the sound, resumed after it.
    expect(call.audio.filter(({ atMs }) => atMs > onset + 20 && atMs < resumedBy)).toHaveLength(0);
    expect(call.audio.some(({ atMs }) => atMs > resumedBy)).toBe(true);
    const done = call.of('response.done')[0];
    expect(done).toMatchObject({ status: 'completed', text: reply });
    expect(call.framesOf(done.responseId)).toBe(reply.split(/\s+/).length * 5);
    // Heard, but not a turn the agent answers.
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['what is on the menu', 'mhm']);
    expect(call.llmRequests).toHaveLength(1);
  });

  it('lets the agent go on after a noise with no words in it', async () => {
    call = new CallHarness({ agent: menuAgent });
    await agentTalking(call);
    await call.noise(200);
    await call.silenceUntil((e) => e.type === 'response.done');
    expect(call.of('response.interrupted')).toHaveLength(0);
    expect(call.of('response.done')[0].status).toBe('completed');
    expect(call.llmRequests).toHaveLength(1);
  });
});
