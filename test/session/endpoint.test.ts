import { afterEach, describe, expect, it } from 'vitest';
import { CallHarness } from './harness.js';

describe('endpoint', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('ends the turn after ~180 ms of silence and answers it at once', async () => {
    call = new CallHarness();
    await call.silence(200);
    await call.say('book a table for two', 800);
    const lastVoiced = call.clock.now() - 20;
    await call.silenceUntil((e) => e.type === 'transcript.final');

    const stopped = call.of('speech.stopped')[0];
    expect(stopped.atMs).toBe(lastVoiced);
    const endAt = call.timeOf((e) => e.type === 'transcript.final')!;
    // The endpoint: silence after the last voiced frame before the turn is committed.
    expect(endAt - lastVoiced).toBeGreaterThanOrEqual(150);
    expect(endAt - lastVoiced).toBeLessThanOrEqual(220);
    expect(call.of('transcript.final')[0]).toMatchObject({ turn: 1, text: 'book a table for two' });

    await call.silenceUntil((e) => e.type === 'response.done');
    const done = call.of('response.done')[0];
    expect(done).toMatchObject({ turn: 1, status: 'completed', text: 'You said book a table for two. Anything else?' });
    // 9 words at 100 ms each, paced in real time: the whole reply reached the caller.
    expect(call.framesOf(done.responseId)).toBe(45);
    const metrics = call.metrics.turns[0];
    expect(metrics.stages.endpointMs).toBeGreaterThanOrEqual(150);
    expect(metrics.stages.endpointMs).toBeLessThanOrEqual(220);
    expect(call.session.history.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
  });

  it('does not end a turn on a pause shorter than the endpoint', async () => {
    call = new CallHarness();
    await call.say('I would like', 400);
    await call.silence(120);
    await call.say('a table', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('speech.started')).toHaveLength(1);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['I would like a table']);
  });

  it('takes a click shorter than minSpeechMs for nothing', async () => {
    call = new CallHarness();
    await call.noise(40);
    await call.silence(600);
    expect(call.of('speech.started')).toHaveLength(0);
    expect(call.llmRequests).toHaveLength(0);
  });
});
