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

  it('with a grammar, ends a whole sentence sooner and waits through a pause after a strict prefix', async () => {
    call = new CallHarness({ config: { turn: { grammarEndpoint: { completeMs: 120, incompleteMs: 600 } } } });
    const sentences = ['book a table for two'];
    call.asr.complete = (text) => sentences.includes(text) || (sentences.some((s) => s.startsWith(text)) ? false : undefined);

    await call.say('book a table for', 600);
    await call.silence(400); // past endpointSilenceMs (180): still the caller's turn, "for" wants more
    expect(call.of('speech.stopped')).toHaveLength(0);
    expect(call.llmRequests).toHaveLength(0); // no preemptive reply to a fragment either
    await call.say('two', 300);
    const lastVoiced = call.clock.now() - 20;
    await call.silenceUntil((e) => e.type === 'speech.stopped');
    expect(call.clock.now() - 20 - lastVoiced).toBe(120);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['book a table for two']);
  });

  it('with a grammar, a whole sentence that can go on waits continuableMs: a breath between the parts of a long request is no end', async () => {
    const grammarEndpoint = { completeMs: 120, incompleteMs: 600, continuableMs: 300 };
    const standing = (text: string) =>
      text === 'book a table for two' ? 'continuable' as const : text === 'book a table for two tomorrow at seven' ? true : undefined;
    call = new CallHarness({ config: { turn: { grammarEndpoint } } });
    call.asr.peekable = true; // as a grammar decoder does: the utterance stays open through the breath
    call.asr.complete = standing;
    await call.say('book a table for two', 600);
    await call.silence(240); // a breath: past completeMs, short of continuableMs
    expect(call.of('speech.stopped')).toHaveLength(0);
    await call.say('tomorrow at seven', 500);
    const lastVoiced = call.clock.now() - 20;
    await call.silenceUntil((e) => e.type === 'speech.stopped');
    expect(call.clock.now() - 20 - lastVoiced).toBe(120); // that one cannot go on: the short endpoint
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['book a table for two tomorrow at seven']);
    await call.close();

    // The caller who stops after the first part is answered at continuableMs.
    call = new CallHarness({ config: { turn: { grammarEndpoint } } });
    call.asr.complete = standing;
    await call.say('book a table for two', 600);
    const stoppedAfter = call.clock.now() - 20;
    await call.silenceUntil((e) => e.type === 'speech.stopped');
    expect(call.clock.now() - 20 - stoppedAfter).toBe(300);
    await call.close();

    // A sure peek of such a sentence (the running hypothesis was only a prefix, as on a phone line) waits as long.
    call = new CallHarness({ config: { turn: { grammarEndpoint: { ...grammarEndpoint, peekMs: 200 } } } });
    call.asr.peekable = true;
    call.asr.complete = () => false;
    call.asr.verdict = { inGrammar: true, confidence: 0.9, continuable: true };
    await call.say('book a table for two', 600);
    const lastWord = call.clock.now() - 20;
    await call.silenceUntil((e) => e.type === 'speech.stopped');
    expect(call.asr.peeks.map((p) => p.continuable)).toEqual([true]);
    expect(call.clock.now() - 20 - lastWord).toBe(300);
  });

  it('with a recogniser that peeks, ends the turn at peekMs when the peek finds a sentence the partials did not', async () => {
    call = new CallHarness({ config: { turn: { grammarEndpoint: { completeMs: 120, incompleteMs: 600, peekMs: 200 } } } });
    call.asr.peekable = true;
    // A phone line: the running hypothesis never completes a sentence, the final does, with confidence.
    call.asr.complete = () => false;
    call.asr.verdict = { inGrammar: true, confidence: 0.9 };
    await call.say('what time is it', 600);
    const lastVoiced = call.clock.now() - 20;
    await call.silenceUntil((e) => e.type === 'speech.stopped');
    expect(call.clock.now() - 20 - lastVoiced).toBe(220); // the peek at 200 ms, the end on the next frame
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['what time is it']);
    expect(call.asr.peeks.map((p) => p.text)).toEqual(['what time is it']);
    // The finalize answered the peek: the pause's frames after it were held back, never decoded.
    expect(call.asr.finals[0].audioMs).toBe(call.asr.peeks[0].audioMs);
  });

  it('with a recogniser that peeks, a caller who goes on after the peek stays one utterance, pause and all', async () => {
    call = new CallHarness({ config: { turn: { grammarEndpoint: { completeMs: 120, incompleteMs: 600, peek: true } } } });
    call.asr.peekable = true;
    call.asr.complete = (text) => text === 'book a table' || text === 'book a table for two';
    call.asr.verdict = { inGrammar: true, confidence: 0.9 };
    await call.silence(200);
    await call.say('book a table', 500);
    await call.silence(80); // a whole sentence: peeked at the likely end (60 ms); the caller goes on before 120 ms
    await call.say('for two', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('speech.started')).toHaveLength(1);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['book a table for two']);
    expect(call.asr.peeks.map((p) => p.text)).toEqual(['book a table', 'book a table for two']);
    // One utterance: the pre-roll, both phrases, the whole first pause (the frames held after the peek went in when
    // the caller went on) and the silence up to the second peek at the likely end.
    const { preRollMs, minSpeechMs, preemptiveSilenceMs } = call.config.turn;
    expect(call.asr.finals).toHaveLength(1);
    expect(call.asr.finals[0].audioMs).toBe(preRollMs + (500 - minSpeechMs) + 80 + 400 + preemptiveSilenceMs);
  });

  it('hands the recogniser the pre-roll, so the words of the onset frames are not clipped', async () => {
    call = new CallHarness();
    await call.silence(200);
    // Before minSpeechMs (60 ms) confirms speech, the first two frames are only a candidate onset.
    await call.say('hello', 40);
    await call.say('there', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('transcript.final')[0].text).toBe('hello there');
    // At speech start (the 3rd voiced frame) the last preRollMs of audio went in, then the 19 voiced frames
    // after it and the silence up to the likely end, where the utterance was finalised.
    expect(call.asr.finals[0].audioMs).toBe(call.config.turn.preRollMs + 19 * 20 + call.config.turn.preemptiveSilenceMs);
  });

  it('takes a click shorter than minSpeechMs for nothing', async () => {
    call = new CallHarness();
    await call.noise(40);
    await call.silence(600);
    expect(call.of('speech.started')).toHaveLength(0);
    expect(call.llmRequests).toHaveLength(0);
  });
});
