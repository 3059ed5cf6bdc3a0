/**
 * The pre-roll: the audio from before speech start handed to the recogniser, so a first word is not clipped, even one
 * the VAD heard under its speech threshold, and never the previous turn's words.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { FRAME_SAMPLES } from '../../src/audio/format.js';
import { preRollStart } from '../../src/session/recogniser.js';
import { CallHarness } from './harness.js';

/** A voiced frame as a line carries it: loud enough for the energy onset (about -20 dBFS). */
const loudFrame = (): Int16Array => Int16Array.from({ length: FRAME_SAMPLES }, (_, i) => Math.round(3000 * Math.sin(i / 3)));
const frames = (pattern: string): boolean[] => [...pattern].map((c) => c === '#');

describe('preRollStart', () => {
  it('starts the usual pre-roll before the frame that started speech when nothing before it was voice', () => {
    // 30 frames of history, the last three the onset run; 10 frames of pre-roll.
    expect(preRollStart(frames(`${'.'.repeat(27)}###`), 10)).toBe(20);
  });

  it('reaches back over a soft first word, keeping the usual lead of silence before it', () => {
    // A word (5 frames), a 140 ms closure, then the onset run: the usual pre-roll starts 7 frames before the onset.
    const history = frames(`${'.'.repeat(20)}#####.......###`);
    const start = preRollStart(history, 10);
    expect(start).toBe(20 - 7);
    expect(history.slice(start).filter(Boolean)).toHaveLength(8);
  });

  it('does not take voice more than 200 ms before the onset for the same word', () => {
    expect(preRollStart(frames(`${'.'.repeat(10)}###${'.'.repeat(11)}###`), 10)).toBe(27 - 10);
  });

  it('never starts before the history it has', () => {
    expect(preRollStart(frames('##.....###'), 10)).toBe(0);
    expect(preRollStart(frames('###'), 10)).toBe(0);
  });
});

describe('pre-roll in a call', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('keeps a soft first word the VAD heard under its speech threshold', async () => {
    call = new CallHarness();
    await call.silence(600);
    // "What" loud on the line but at VAD 0.25–0.49 (under speechThreshold 0.5), the stop before "time", then the words
    // that start the turn: as eSpeak's "What time is it?" came through G.711 on some turns.
    for (const p of [0.33, 0.33, 0.49, 0.28, 0.28, 0.3, 0.3, 0.25]) await call.frame(p, 'what', loudFrame());
    await call.silence(140);
    await call.say('time is it', 500);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('speech.started')).toHaveLength(1);
    expect(call.of('transcript.final')[0].text).toBe('what time is it');
  });

  it('does not reach back over a quiet frame the VAD barely heard', async () => {
    call = new CallHarness();
    await call.silence(600);
    // Not loud on the line and under the silence threshold: not voice.
    for (const p of [0.3, 0.3]) await call.frame(p, 'uh');
    await call.silence(140);
    await call.say('time is it', 500);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    expect(call.of('transcript.final')[0].text).toBe('time is it');
    expect(call.asr.finals[0].audioMs).toBe(call.config.turn.preRollMs + (500 - call.config.turn.minSpeechMs) + call.config.turn.preemptiveSilenceMs);
  });

  it('starts the next utterance after the last turn, not inside it', async () => {
    call = new CallHarness();
    await call.silence(600);
    await call.say('hello', 400);
    await call.silenceUntil((e) => e.type === 'transcript.final');
    // The caller goes on almost at once: the pre-roll may only hold what came after the first turn ended.
    await call.silence(40);
    await call.say('there', 400);
    await call.silenceUntil(() => call.of('transcript.final').length === 2);
    // What the recogniser heard of each utterance (the session carries "hello" into the second turn's text itself:
    // the caller went on within continuationWindowMs).
    expect(call.asr.finals.map((f) => f.text)).toEqual(['hello', 'there']);
    // The second utterance: the 40 ms of silence since the first turn ended (not the whole preRollMs), "there" and
    // the silence up to the likely end.
    expect(call.asr.finals[1].audioMs).toBe(40 + 400 + call.config.turn.preemptiveSilenceMs);
  });
});
