import { afterEach, describe, expect, it } from 'vitest';
import type { ChatMessage } from '../../src/providers/llm/types.js';
import { ScriptedLlm } from '../../src/providers/llm/scripted.js';
import { CallHarness } from './harness.js';

const longReply = () => ({ text: 'Certainly. We have tables at seven, at eight and at nine tonight, and the terrace is open until late.' });

describe('continuation', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('joins words said within continuationWindowMs of the last ones to the same turn', async () => {
    call = new CallHarness({ agent: longReply });
    await call.say('I need a table', 600);
    await call.silence(300); // past the endpoint: turn 1 ends and its reply starts playing
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['I need a table']);
    expect(call.audio.length).toBeGreaterThan(0);

    await call.say('for four people', 600);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 2);

    // The reply to the fragment was cut and dropped; the joined words are one caller turn.
    expect(call.of('response.interrupted')).toHaveLength(1);
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['I need a table', 'I need a table for four people']);
    expect(call.llmRequests.at(-1)?.findLast((m) => m.role === 'user')?.content).toBe('I need a table for four people');
    await call.silenceUntil((e) => e.type === 'response.done' && e.turn === 2);
    const history = call.session.history.map((m) => `${m.role}: ${m.content}`);
    expect(history.slice(1, 3)).toEqual(['user: I need a table for four people', `assistant: ${longReply().text}`]);
  });

  it('never takes joined words for one confident sentence of the grammar (an action on them is asked back)', async () => {
    call = new CallHarness({ agent: longReply });
    call.asr.verdict = { inGrammar: true, confidence: 0.97 };
    await call.say('a table for two tomorrow', 600);
    await call.silence(300);
    await call.say('see you', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 2);
    const lastUser = () => call.llmRequests.at(-1)?.findLast((m) => m.role === 'user');
    expect(lastUser()?.content).toBe('a table for two tomorrow see you');
    // Each piece was a sentence; their sequence never was: the agent must treat the turn as unsure.
    expect(lastUser()?.input).toMatchObject({ source: 'speech', inGrammar: false, confidence: 0.97 });
    await call.silenceUntil((e) => e.type === 'response.done' && e.turn === 2);

    await call.silence(1500);
    await call.say('see you', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 3);
    expect(lastUser()?.content).toBe('see you');
    expect(lastUser()?.input).toMatchObject({ inGrammar: true, confidence: 0.97 });

    // Pieces of one turn (a pause shorter than the endpoint) are one utterance: their verdicts stand.
    await call.silence(1500);
    await call.say('okay bye bye', 400);
    await call.silence(100);
    await call.say('see you', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 4);
    expect(call.asr.finals.slice(-2).map((f) => f.text)).toEqual(['okay bye bye', 'see you']); // two pieces
    expect(lastUser()?.content).toBe('okay bye bye see you');
    expect(lastUser()?.input).toMatchObject({ inGrammar: true, confidence: 0.97 });
  });

  it('starts a new turn when the caller speaks again after the window', async () => {
    call = new CallHarness({ agent: longReply, config: { turn: { continuationWindowMs: 400 } } });
    await call.say('I need a table', 600);
    await call.silence(600);
    await call.say('for four people', 600);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 2);

    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['I need a table', 'for four people']);
    const interrupted = call.of('response.interrupted')[0];
    expect(interrupted.heardText.length).toBeGreaterThan(0);
    // The first reply stays in the conversation as far as the caller heard it.
    const users = call.session.history.filter((m) => m.role === 'user').map((m) => m.content);
    expect(users).toEqual(['I need a table', 'for four people']);
    expect(call.session.history.some((m) => m.role === 'assistant' && m.content === interrupted.heardText)).toBe(true);
  });

  it('decodes words said over the agent\'s question against that question\'s answer (the expectation is set as the reply starts)', async () => {
    // A form agent: asks the day after a table, confirms once it has one.
    const lastUser = (messages: readonly ChatMessage[]): string => messages.findLast((m) => m.role === 'user')?.content ?? '';
    const llm = new (class extends ScriptedLlm {
      expectation(messages: readonly ChatMessage[]): string | undefined {
        const said = lastUser(messages);
        if (/tomorrow/.test(said)) return 'book.confirm';
        return /table/.test(said) ? 'book.date' : undefined;
      }
    })((messages) => ({ text: /tomorrow/.test(lastUser(messages)) ? 'A table for four tomorrow at eight: shall I book it?' : 'Certainly, a table for four. For which day would that be, and at what time?' }));
    call = new CallHarness({ llm });
    await call.say('I need a table for four', 600);
    await call.silence(300); // the turn ends; the question starts playing
    expect(call.audio.length).toBeGreaterThan(0);
    expect(call.of('response.done')).toHaveLength(0);
    // Already while the question plays, the recogniser listens for its answer.
    expect(call.asr.expectations.at(-1)).toEqual({ expectation: 'book.date', afterFinals: 1 });

    // The caller goes on over the question: that utterance is decoded against the date's answer, then joined.
    await call.say('tomorrow at eight', 600);
    await call.silenceUntil((e) => e.type === 'transcript.final' && e.turn === 2);
    expect(call.asr.finals.map((f) => f.text)).toEqual(['I need a table for four', 'tomorrow at eight']);
    const inForce = call.asr.expectations.filter((e) => e.afterFinals <= 1).at(-1);
    expect(inForce?.expectation).toBe('book.date');
    expect(call.of('transcript.final').map((e) => e.text)).toEqual(['I need a table for four', 'I need a table for four tomorrow at eight']);
    expect(call.asr.expectations.at(-1)).toEqual({ expectation: 'book.confirm', afterFinals: 2 });
  });
});
