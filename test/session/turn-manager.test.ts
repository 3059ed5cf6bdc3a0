/**
 * The turn manager alone, without a Session: the test plays the recogniser (turn signals and the words each
 * utterance's finalize returns) on a fake clock, and the manager's replies are real ReplyTasks (a scripted
 * language model, a TTS of 100 ms per word) played by a real ReplyPlayer into a real Conversation.
 */
import pino from 'pino';
import { afterEach, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, type ServiceConfig } from '../../src/config.js';
import { FRAME_MS } from '../../src/audio/format.js';
import type { AsrFinal } from '../../src/providers/asr/types.js';
import type { InputMeta } from '../../src/providers/llm/types.js';
import { ScriptedLlm } from '../../src/providers/llm/scripted.js';
import { FakeClock } from '../../src/session/clock.js';
import { Conversation } from '../../src/session/conversation.js';
import type { ErrorCode, SessionEvent } from '../../src/session/events.js';
import type { MetricsSink } from '../../src/session/ports.js';
import { ReplyPlayer, type ReplyEnd } from '../../src/session/reply-player.js';
import { ReplyTask, type ToolExecutor } from '../../src/session/reply.js';
import { TurnManager, type CallerWords, type TurnRecogniser } from '../../src/session/turn-manager.js';
import { settle, WordTts } from './harness.js';

/** The recogniser as the turn manager sees it: each finalize() returns the words heard since the last one. */
class HeardWords implements TurnRecogniser {
  inSpeech = false;
  active = false;
  speechMs = 0;
  echoSettled = true;
  sentenceIncomplete = false;
  /** A grammar decoder's verdict on each final (undefined: an open-vocabulary recogniser). */
  verdict: Pick<AsrFinal, 'inGrammar' | 'confidence'> | undefined;
  /** A recogniser that can tell a final at a pause without ending the utterance (a grammar decoder's peek). */
  canPeek = false;
  /** Times a peek told the turn manager the words so far are a whole sentence. */
  completeMarks = 0;
  /** Times the turn manager went on with an utterance after an unsure peek. */
  continued = 0;
  /** Peeks taken, and finalizes that had to decode (a finalize right after a peek answers it). */
  peeks = 0;
  private words: string[] = [];

  hear(words: string): void {
    this.words.push(words);
  }

  async finalize(): Promise<AsrFinal> {
    const text = this.words.join(' ');
    this.words = [];
    return { text, language: 'en', audioMs: 0, ...(text ? this.verdict : {}) };
  }

  async peek(): Promise<AsrFinal | undefined> {
    if (!this.canPeek) return undefined;
    this.peeks++;
    const text = this.words.join(' ');
    return { text, language: 'en', audioMs: 0, ...(text ? this.verdict : {}) };
  }

  sentenceComplete(): void {
    this.completeMarks++;
  }

  continueUtterance(): void {
    this.continued++;
  }

  cancelUtterance(): void {
    this.words = [];
  }

  resetTurn(): void {}

  echoShare(): number | null {
    return null;
  }
}

const noTools: ToolExecutor = { definitions: () => [], execute: async () => ({ content: '{}' }) };
const LONG_REPLY = 'Certainly. We have tables at seven, at eight and at nine tonight, and the terrace is open until late.';
const ignoreMetrics: MetricsSink = { sessionOpened() {}, sessionClosed() {}, turnCompleted() {}, interruption() {}, error() {} };

/** One turn manager, the parts around it real, and what it did. */
class TurnsUnderTest {
  readonly clock = new FakeClock();
  readonly recogniser = new HeardWords();
  readonly conversation = new Conversation('You are a test agent.');
  readonly events: SessionEvent[] = [];
  readonly errors: ErrorCode[] = [];
  /** Every reply the manager asked for, with the caller words it answers (null: the conversation as it stands). */
  readonly prepared: { text: string | null; input: InputMeta; task: ReplyTask }[] = [];
  readonly said: CallerWords[] = [];
  readonly forgotten: string[] = [];
  readonly finished: { turn: number; heardText: string; status: ReplyEnd }[] = [];
  readonly player: ReplyPlayer;
  readonly turns: TurnManager;

  constructor(reply: (userText: string) => string = (text) => `You said ${text}.`, turn: Partial<ServiceConfig['turn']> = {}) {
    const config: ServiceConfig = { ...DEFAULT_CONFIG, turn: { ...DEFAULT_CONFIG.turn, ...turn } };
    const logger = pino({ level: 'silent' });
    const llm = new ScriptedLlm((messages) => ({ text: reply(messages.findLast((m) => m.role === 'user')?.content ?? '') }));
    const tts = new WordTts(false);
    this.player = new ReplyPlayer({
      hooks: {
        event: (event) => this.events.push(event),
        frame: () => {},
        playedFrames: () => undefined,
        finished: (played, heardText, _spoken, status) => this.finished.push({ turn: played.turn, heardText, status }),
      },
      clock: this.clock,
      leadMs: config.audioOut.leadMs,
      metrics: ignoreMetrics,
      logger,
      redact: [],
    });
    this.turns = new TurnManager({
      turn: config.turn,
      clock: this.clock,
      logger,
      recogniser: this.recogniser,
      player: this.player,
      language: 'en',
      detectsLanguage: false,
      hooks: {
        event: (event) => this.events.push(event),
        fail: (code) => this.errors.push(code),
        partial: () => {},
        prepareReply: (turn, language, text, input) => {
          const messages = text === null ? [...this.conversation.messages] : [...this.conversation.messages, { role: 'user' as const, content: text, input }];
          const task = new ReplyTask({ callId: 'turns-under-test', llm, tts, tools: noTools, agent: config.agent, logger, clock: this.clock }, turn, language, messages);
          this.prepared.push({ text, input, task });
          return task;
        },
        callerSaid: (words) => {
          this.said.push(words);
          return false;
        },
        addUser: (text, input) => this.conversation.addUser(text, input),
        forgetUser: (text) => {
          this.forgotten.push(text);
          this.conversation.remove('user', text);
        },
      },
    });
  }

  /** The caller talks from now for `ms` (the recogniser hears `words`); returns the time of the last voiced frame. */
  async speak(words: string, ms: number, opensTurn: boolean): Promise<number> {
    if (opensTurn) this.turns.onSignal({ kind: 'speech_start', atMs: this.clock.now() });
    else this.turns.onSignal({ kind: 'speech_resume', atMs: this.clock.now() });
    this.turns.onSpeechAudio();
    this.recogniser.hear(words);
    await this.wait(ms - FRAME_MS);
    const lastVoicedMs = this.clock.now();
    await this.wait(FRAME_MS);
    return lastVoicedMs;
  }

  /** The pause the turn detector takes for a likely end (a reply is prepared), then `more` ms of it. */
  async pause(lastVoicedMs: number, more = 40): Promise<void> {
    this.turns.onSignal({ kind: 'likely_end', lastVoicedMs });
    await this.wait(more);
  }

  /** A pause long enough (grammarEndpoint.peekMs) to ask the recogniser's final when the words are no sentence yet. */
  async longPause(lastVoicedMs: number, more = 20): Promise<void> {
    this.turns.onSignal({ kind: 'long_pause', lastVoicedMs });
    await this.wait(more);
  }

  async endTurn(lastVoicedMs: number): Promise<void> {
    this.turns.onSignal({ kind: 'end_of_turn', lastVoicedMs, speechMs: 0, forced: false });
    await this.wait(FRAME_MS);
  }

  async wait(ms: number): Promise<void> {
    await settle();
    await this.clock.advanceAsync(ms, settle);
  }

  userWords(): string[] {
    return this.conversation.messages.filter((m) => m.role === 'user').map((m) => m.content);
  }

  async close(): Promise<void> {
    this.turns.close();
    this.player.close();
    await this.turns.idle;
  }
}

describe('turn manager', () => {
  let t: TurnsUnderTest;
  afterEach(async () => t?.close());

  describe('preemption', () => {
    it('keeps the reply prepared at the pause when the caller stays silent', async () => {
      t = new TurnsUnderTest();
      const last = await t.speak('what time is it', 600, true);
      await t.pause(last);
      // Prepared during the pause, held back: nothing plays and nothing has entered the conversation.
      expect(t.prepared.map((p) => p.text)).toEqual(['what time is it']);
      expect(t.player.current).toBeNull();
      expect(t.userWords()).toEqual([]);

      await t.endTurn(last);
      // The same reply plays: no second one was asked for.
      expect(t.prepared).toHaveLength(1);
      expect(t.player.current?.task).toBe(t.prepared[0].task);
      expect(t.player.current).toMatchObject({ turn: 1, userText: 'what time is it', preemptive: true, discardedPreemptive: 0 });
      expect(t.prepared[0].task.signal.aborted).toBe(false);
      expect(t.said.map((w) => w.text)).toEqual(['what time is it']);
      expect(t.userWords()).toEqual(['what time is it']);

      await t.wait(2_000);
      expect(t.finished).toEqual([{ turn: 1, heardText: 'You said what time is it.', status: 'completed' }]);
    });

    it('discards it when the caller goes on, and answers the whole turn', async () => {
      t = new TurnsUnderTest();
      const first = await t.speak('I want', 400, true);
      await t.pause(first);
      expect(t.prepared.map((p) => p.text)).toEqual(['I want']);

      const last = await t.speak('a pizza', 400, false);
      // Thrown away as soon as the caller went on, unheard.
      expect(t.prepared[0].task.signal.aborted).toBe(true);
      expect(t.player.current).toBeNull();
      await t.pause(last);
      await t.endTurn(last);

      expect(t.prepared.map((p) => p.text)).toEqual(['I want', 'I want a pizza']);
      expect(t.player.current?.task).toBe(t.prepared[1].task);
      expect(t.player.current).toMatchObject({ turn: 1, userText: 'I want a pizza', preemptive: true, discardedPreemptive: 1 });
      expect(t.said.map((w) => w.text)).toEqual(['I want a pizza']);
      expect(t.userWords()).toEqual(['I want a pizza']);
      expect(t.events.filter((e) => e.type === 'response.started')).toHaveLength(1);
    });
  });

  describe('a peek at the pause', () => {
    const PEEK_AT_LIKELY_END = { grammarEndpoint: { completeMs: 120, incompleteMs: 700, peek: true } };

    it('peeks at the likely end by default, and finalizes there with peek: false', async () => {
      t = new TurnsUnderTest();
      t.recogniser.canPeek = true;
      const first = await t.speak('I want', 400, true);
      await t.pause(first);
      expect(t.recogniser.peeks).toBe(1);
      expect(t.prepared.map((p) => p.text)).toEqual(['I want']);
      await t.close();

      t = new TurnsUnderTest(undefined, { grammarEndpoint: { completeMs: 120, incompleteMs: 700, peek: false } });
      t.recogniser.canPeek = true;
      const again = await t.speak('I want', 400, true);
      await t.pause(again);
      expect(t.recogniser.peeks).toBe(0);
      expect(t.prepared.map((p) => p.text)).toEqual(['I want']);
    });

    it('prepares the reply from the peeked sentence and lets a sure one end the turn at the short pause', async () => {
      t = new TurnsUnderTest();
      t.recogniser.canPeek = true;
      t.recogniser.verdict = { inGrammar: true, confidence: 0.9 };
      // A phone line: the running hypothesis was still a prefix, the peek's final is the whole sentence.
      t.recogniser.sentenceIncomplete = true;
      const last = await t.speak('what time is it', 600, true);
      await t.pause(last);
      // A prefix at the likely end: no peek yet (each one costs a second decode if the caller goes on).
      expect(t.recogniser.peeks).toBe(0);
      await t.longPause(last);
      expect(t.recogniser.completeMarks).toBe(1);
      expect(t.recogniser.continued).toBe(0);
      expect(t.prepared.map((p) => p.text)).toEqual(['what time is it']);
      expect(t.prepared[0].input).toMatchObject({ source: 'speech', inGrammar: true, confidence: 0.9 });
      expect(t.userWords()).toEqual([]);

      await t.endTurn(last);
      expect(t.player.current?.task).toBe(t.prepared[0].task);
      expect(t.player.current).toMatchObject({ turn: 1, userText: 'what time is it', preemptive: true });
    });

    it('does not call an unsure or out-of-grammar final complete, and still prepares what it heard', async () => {
      for (const verdict of [{ inGrammar: true, confidence: 0.3 }, { inGrammar: false, confidence: 0 }]) {
        t = new TurnsUnderTest();
        t.recogniser.canPeek = true;
        t.recogniser.verdict = verdict;
        t.recogniser.sentenceIncomplete = true;
        const last = await t.speak('book a table', 600, true);
        await t.pause(last);
        await t.longPause(last);
        expect(t.recogniser.completeMarks).toBe(0);
        // The end is far off: the utterance goes on, so its final hears the whole pause.
        expect(t.recogniser.continued).toBe(1);
        expect(t.prepared.map((p) => p.text)).toEqual(['book a table']);
        await t.close();
      }
    });

    it('keeps one utterance when the caller goes on: the turn is answered whole, the peeked reply thrown away', async () => {
      t = new TurnsUnderTest(undefined, PEEK_AT_LIKELY_END);
      t.recogniser.canPeek = true;
      t.recogniser.verdict = { inGrammar: true, confidence: 0.9 };
      const first = await t.speak('I want', 400, true);
      await t.pause(first);
      const last = await t.speak('a pizza', 400, false);
      expect(t.prepared[0].task.signal.aborted).toBe(true);
      await t.pause(last);
      await t.endTurn(last);
      // No segment was cut at the pause: the recogniser's one utterance is the turn.
      expect(t.said.map((w) => w.text)).toEqual(['I want a pizza']);
      expect(t.prepared.map((p) => p.text)).toEqual(['I want', 'I want a pizza']);
      expect(t.player.current).toMatchObject({ userText: 'I want a pizza', preemptive: true, discardedPreemptive: 1 });
      expect(t.recogniser.peeks).toBe(2);
    });

    it('ignores a peek that comes back after the caller went on', async () => {
      t = new TurnsUnderTest(undefined, PEEK_AT_LIKELY_END);
      t.recogniser.canPeek = true;
      t.recogniser.verdict = { inGrammar: true, confidence: 0.9 };
      const first = await t.speak('I want', 400, true);
      // The pause and the resume come before the peek's answer (a busy recogniser).
      t.turns.onSignal({ kind: 'likely_end', lastVoicedMs: first });
      t.turns.onSignal({ kind: 'speech_resume', atMs: t.clock.now() });
      await t.wait(FRAME_MS);
      expect(t.recogniser.completeMarks).toBe(0);
      expect(t.prepared).toEqual([]);
    });
  });

  describe('continuation', () => {
    /** Turn 1 ("I need a table") is answered and its reply is playing; the caller speaks again `gapMs` after its end. */
    async function answeredThenAgain(gapMs: number): Promise<number> {
      t = new TurnsUnderTest(() => LONG_REPLY);
      t.recogniser.verdict = { inGrammar: true, confidence: 0.97 };
      const first = await t.speak('I need a table', 600, true);
      await t.pause(first);
      await t.endTurn(first);
      expect(t.player.current).toMatchObject({ turn: 1, userText: 'I need a table' });
      await t.wait(gapMs - (t.clock.now() - first));
      expect(t.player.current?.turn).toBe(1); // still talking
      const last = await t.speak('for four people', 600, true);
      await t.pause(last);
      await t.endTurn(last);
      return last;
    }

    it('carries the words of an answered turn into the next when the caller resumes within the window', async () => {
      await answeredThenAgain(500);
      // The reply to the fragment was cut and is dropped: nothing of it is kept as heard.
      expect(t.finished).toEqual([{ turn: 1, heardText: '', status: 'interrupted' }]);
      expect(t.forgotten).toEqual(['I need a table']);
      expect(t.said.map((w) => `${w.turn}: ${w.text}`)).toEqual(['1: I need a table', '2: I need a table for four people']);
      expect(t.userWords()).toEqual(['I need a table for four people']);
      // The reply prepared for the new words alone was thrown away; the joined words are answered.
      expect(t.prepared.map((p) => p.text)).toEqual(['I need a table', 'for four people', 'I need a table for four people']);
      expect(t.prepared[1].task.signal.aborted).toBe(true);
      expect(t.player.current).toMatchObject({ turn: 2, userText: 'I need a table for four people', preemptive: false });
      // Each piece was a sentence of the grammar, their sequence never is.
      expect(t.prepared[2].input).toMatchObject({ source: 'speech', inGrammar: false, confidence: 0.97 });
    });

    it('starts a new turn when the caller speaks again after the window', async () => {
      await answeredThenAgain(DEFAULT_CONFIG.turn.continuationWindowMs + 200);
      expect(t.forgotten).toEqual([]);
      expect(t.finished).toHaveLength(1);
      expect(t.finished[0]).toMatchObject({ turn: 1, status: 'interrupted' });
      expect(t.finished[0].heardText.length).toBeGreaterThan(0);
      expect(t.said.map((w) => w.text)).toEqual(['I need a table', 'for four people']);
      expect(t.userWords()).toEqual(['I need a table', 'for four people']);
      // The new words' own reply, prepared at the pause, is the one that plays; their verdict stands.
      expect(t.player.current?.task).toBe(t.prepared[1].task);
      expect(t.prepared[1].input).toMatchObject({ inGrammar: true, confidence: 0.97 });
    });
  });
});
