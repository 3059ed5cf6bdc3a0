/**
 * A session on a fake clock, fed scripted caller audio: each 20 ms frame carries the speech probability the
 * VAD reports for it and the words the recogniser hears in it. The language model is scripted and the TTS
 * makes 100 ms of audio per word, so a test states what the caller does, frame by frame in audio time, and
 * reads what the session did, in a few milliseconds of real time.
 */
import pino, { type Logger } from 'pino';
import { DEFAULT_CONFIG, mergeConfig, type ConfigOverrides, type ServiceConfig } from '../../src/config.js';
import { FRAME_MS, FRAME_SAMPLES } from '../../src/audio/format.js';
import type { AsrFinal, AsrProvider, AsrStream, AsrStreamOptions } from '../../src/providers/asr/types.js';
import type { ChatMessage, LlmProvider } from '../../src/providers/llm/types.js';
import { ScriptedLlm, type ScriptedTurn } from '../../src/providers/llm/scripted.js';
import type { TtsOptions, TtsProvider } from '../../src/providers/tts/types.js';
import type { VadProvider, VadStream } from '../../src/providers/vad/types.js';
import type { MetricsSink, RecordingTap } from '../../src/session/ports.js';
import type { ErrorCode, SessionEvent, TurnMetrics } from '../../src/session/events.js';
import type { OutboundFrame } from '../../src/session/output-pacer.js';
import type { ToolExecutor } from '../../src/session/reply.js';
import { FakeClock } from '../../src/session/clock.js';
import { Session, type SessionOutput } from '../../src/session/session.js';
import { DEFAULT_ECHO_GUARD } from '../../src/session/echo-guard.js';

/** What one frame of caller audio is, for the fake VAD and recogniser. */
interface ScriptedFrame {
  probability: number;
  /** The words this frame belongs to (a phrase), if it is speech the recogniser understands. */
  words?: string;
}

/** Frames are told apart by identity: the session hands the same samples to the VAD and the recogniser. */
const scripts = new WeakMap<Int16Array, ScriptedFrame>();

class ScriptedVad implements VadProvider {
  readonly name = 'scripted-vad';
  readonly capabilities = { runsOn: ['cpu'] as const, streaming: true };
  /** Frames the VAD has seen. */
  processed = 0;
  async load(): Promise<void> {}
  createStream(): VadStream {
    return {
      process: async (frame) => {
        this.processed++;
        return scripts.get(frame)?.probability ?? 0;
      },
      reset: () => {},
      close: () => {},
    };
  }
}

/**
 * Hears the phrases of the frames pushed to it, in order; a partial after each frame, the phrases so far
 * on finalize(). An utterance of frames without words is noise: an empty final.
 */
export class ScriptedAsr implements AsrProvider {
  readonly name = 'scripted-asr';
  readonly capabilities = { runsOn: ['cpu'] as const, streaming: true };
  readonly languages = ['en'];
  /** Every final returned, in order. */
  readonly finals: AsrFinal[] = [];
  /** While true, finalize() never answers (a recogniser that hangs). */
  stalled = false;
  /**
   * A grammar decoder's verdict on the words so far: a whole sentence (true), one that can go on with more values
   * ('continuable'), a strict prefix (false).
   */
  complete: ((text: string) => boolean | 'continuable' | undefined) | undefined;
  /** What a grammar decoder adds to each final (in grammar, confidence, can go on); undefined: an open-vocabulary ASR. */
  verdict: Pick<AsrFinal, 'inGrammar' | 'confidence' | 'continuable'> | undefined;
  /**
   * Words a grammar decoder hears only doubtfully (just under its floor): their final has no text, is out of domain,
   * and carries them as `doubtful`.
   */
  doubtful: ((text: string) => boolean) | undefined;
  /** Streams can peek (AsrStream.peek): the final so far, the utterance left open. */
  peekable = false;
  /** Every peek's answer, in order. */
  readonly peeks: AsrFinal[] = [];
  /** Each expectation the session told a stream, with the number of finals returned by then. */
  readonly expectations: { expectation: string | undefined; afterFinals: number }[] = [];
  async load(): Promise<void> {}

  createStream(options: AsrStreamOptions): AsrStream {
    let phrases: string[] = [];
    let frames = 0;
    const partial = (): void => {
      const text = phrases.join(' ');
      const standing = this.complete?.(text);
      const complete = standing === 'continuable' ? true : standing;
      options.onPartial?.({ text, language: 'en', ...(complete !== undefined ? { complete } : {}), ...(standing === 'continuable' ? { continuable: true } : {}) });
    };
    const stream: AsrStream = {
      push: (pcm) => {
        frames++;
        const words = scripts.get(pcm)?.words;
        if (words && phrases.at(-1) !== words) phrases.push(words);
        if (phrases.length > 0) partial();
      },
      finalize: async () => {
        if (this.stalled) return new Promise<AsrFinal>(() => {});
        const final = this.finalOf(phrases, frames);
        phrases = [];
        frames = 0;
        this.finals.push(final);
        return final;
      },
      cancel: () => {
        phrases = [];
        frames = 0;
      },
      close: () => {},
      expect: (expectation) => {
        this.expectations.push({ expectation, afterFinals: this.finals.length });
      },
    };
    // Read when the recogniser asks (a test sets `peekable` after the call's stream was made).
    const peek = async (): Promise<AsrFinal> => {
      const peeked = this.finalOf(phrases, frames);
      this.peeks.push(peeked);
      return peeked;
    };
    Object.defineProperty(stream, 'peek', { get: () => (this.peekable ? peek : undefined) });
    return stream;
  }

  private finalOf(phrases: readonly string[], frames: number): AsrFinal {
    const text = phrases.join(' ');
    const audioMs = frames * FRAME_MS;
    if (text && this.doubtful?.(text)) {
      return { text: '', language: 'en', audioMs, inGrammar: false, confidence: 0, outOfDomain: true, doubtful: { text, confidence: 0.06 } };
    }
    return { text, language: 'en', audioMs, ...(phrases.length > 0 ? this.verdict : {}) };
  }
}

/**
 * 100 ms of audio per word, as soon as asked: quiet and constant by default, or (`loud`) noise at a level
 * that changes from word to word like speech does, for tests of what the line returns of it.
 */
export class WordTts implements TtsProvider {
  readonly name = 'word-tts';
  readonly capabilities = { runsOn: ['cpu'] as const, streaming: true };
  readonly languages = ['en'];
  private words = 0;
  /** The voice asked for with each text synthesized (undefined: the provider's default). */
  readonly voices: (string | undefined)[] = [];
  constructor(private readonly loud: boolean) {}
  async load(): Promise<void> {}
  async *synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array> {
    this.voices.push(options.voice);
    for (const _word of text.split(/\s+/).filter(Boolean)) {
      if (options.signal?.aborted) return;
      if (!this.loud) {
        yield new Int16Array(FRAME_SAMPLES * 5).fill(3);
        continue;
      }
      // -18 to -30 dBFS by word, a syllable-like rise and fall within it.
      const amplitude = 32768 * 10 ** ((-18 - ((this.words++ * 7) % 13)) / 20) * Math.sqrt(3);
      const pcm = new Int16Array(FRAME_SAMPLES * 5);
      for (let i = 0; i < pcm.length; i++) pcm[i] = Math.round(Math.sin((Math.PI * i) / pcm.length) * amplitude * (((i * 7919) % 2001) / 1000 - 1));
      yield pcm;
    }
  }
}

const noTools: ToolExecutor = { definitions: () => [], execute: async () => ({ content: '{}' }) };

class RecordingMetrics implements MetricsSink {
  readonly turns: TurnMetrics[] = [];
  interruptions = 0;
  readonly errors: ErrorCode[] = [];
  sessionOpened(): void {}
  sessionClosed(): void {}
  turnCompleted(metrics: TurnMetrics): void {
    this.turns.push(metrics);
  }
  interruption(): void {
    this.interruptions++;
  }
  error(code: ErrorCode): void {
    this.errors.push(code);
  }
}

/** The agent's answer to the caller's last words, unless a test says otherwise. */
export function echoAgent(messages: readonly ChatMessage[]): ScriptedTurn {
  const last = messages.findLast((m) => m.role === 'user');
  return { text: `You said ${last?.content ?? 'nothing'}. Anything else?` };
}

/** Let every promise chain the last step started run to its end (the fakes never wait on real time). */
export async function settle(): Promise<void> {
  for (let i = 0; i < 3; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

export interface HarnessOptions {
  config?: ConfigOverrides;
  agent?: (messages: readonly ChatMessage[]) => ScriptedTurn;
  llm?: LlmProvider;
  /** The session's logger (silent by default). */
  logger?: Logger;
  /** Record the call: the consent line is said first. */
  recording?: RecordingTap;
  /** The call's tools (none by default). */
  tools?: ToolExecutor;
  /** The agent's audio at speech-like levels (for echo tests) instead of near silence. */
  loudAgent?: boolean;
  /** The agent's voices per language (its file's `voices`). */
  voices?: Record<string, string>;
  /** A transport edge that also gets the session's events and audio (after the harness has noted them). */
  forward?: SessionOutput;
}

export class CallHarness {
  readonly clock = new FakeClock();
  readonly events: { atMs: number; event: SessionEvent }[] = [];
  /** Agent frames as the transport got them, with the clock time they were sent. */
  readonly audio: { atMs: number; frame: OutboundFrame }[] = [];
  readonly asr = new ScriptedAsr();
  readonly vad = new ScriptedVad();
  readonly tts: WordTts;
  readonly metrics = new RecordingMetrics();
  /** The messages each LLM request saw, in order. */
  readonly llmRequests: (readonly ChatMessage[])[] = [];
  readonly config: ServiceConfig;
  readonly session: Session;
  private seq = 0;
  /** The caller's device: agent frames played so far, and the echo path's delay line (echo()). */
  private playedFrames = 0;
  private readonly echoLine: (Int16Array | null)[] = [];

  constructor(options: HarnessOptions = {}) {
    // The scripted agent's audio is near silence, which tells the echo guard nothing: it is on only with `loudAgent`.
    const echoGuard = { ...DEFAULT_ECHO_GUARD, enabled: options.loudAgent === true };
    this.config = mergeConfig(mergeConfig(DEFAULT_CONFIG, { turn: { echoGuard } }), options.config ?? {});
    const agent = options.agent ?? echoAgent;
    this.tts = new WordTts(options.loudAgent === true);
    const llm =
      options.llm ??
      new ScriptedLlm((messages) => {
        this.llmRequests.push(messages.map((m) => ({ ...m })));
        return agent(messages);
      });
    this.session = new Session({
      callId: 'call-under-test',
      transport: 'test',
      providers: { vad: this.vad, asr: this.asr, llm, tts: this.tts, tools: options.tools ?? noTools, ...(options.voices ? { voices: options.voices } : {}) },
      config: this.config,
      logger: options.logger ?? pino({ level: 'silent' }),
      metrics: this.metrics,
      output: {
        event: (event) => {
          this.events.push({ atMs: this.clock.now(), event });
          options.forward?.event(event);
        },
        audio: (frame) => {
          this.audio.push({ atMs: this.clock.now(), frame });
          options.forward?.audio(frame);
        },
      },
      clock: this.clock,
      ...(options.recording ? { recording: options.recording } : {}),
    });
  }

  /** Hand the session one 20 ms frame of caller audio (silence unless `samples`), without letting any time pass. */
  push(probability: number, words?: string, samples: Int16Array = new Int16Array(FRAME_SAMPLES)): void {
    scripts.set(samples, { probability, ...(words !== undefined ? { words } : {}) });
    this.session.pushAudio({ samples, timestampMs: this.clock.now(), seq: this.seq++ });
  }

  /** One 20 ms frame of caller audio (silence unless `samples`), then 20 ms of time. */
  async frame(probability: number, words?: string, samples?: Int16Array): Promise<void> {
    this.push(probability, words, samples);
    await settle();
    await this.clock.advanceAsync(FRAME_MS, settle);
  }

  /** The caller says `words` for `ms` of audio (VAD 0.9 on each frame). */
  async say(words: string, ms: number): Promise<void> {
    for (let t = 0; t < ms; t += FRAME_MS) await this.frame(0.9, words);
  }

  /** Voiced sound the recogniser finds no words in (a cough, a door). */
  async noise(ms: number): Promise<void> {
    for (let t = 0; t < ms; t += FRAME_MS) await this.frame(0.9);
  }

  /**
   * For `ms`, the caller's line carries only the agent's own audio as their device plays it (each frame in turn,
   * once it has arrived), `lossDb` down and `delayMs` late (a phone hybrid's echo), which the VAD takes for
   * speech (0.9) and the recogniser hears `words` in.
   */
  async echo(ms: number, delayMs: number, lossDb: number, words = 'echoed words'): Promise<void> {
    const gain = 10 ** (-lossDb / 20);
    const delayFrames = Math.round(delayMs / FRAME_MS);
    for (let t = 0; t < ms; t += FRAME_MS) {
      const next = this.audio[this.playedFrames];
      const playing = next && next.atMs <= this.clock.now() ? next.frame.samples : null;
      if (playing) this.playedFrames++;
      this.echoLine.push(playing);
      const returned = this.echoLine.length > delayFrames ? this.echoLine.shift()! : null;
      const samples = new Int16Array(FRAME_SAMPLES);
      for (let i = 0; i < samples.length; i++) samples[i] = Math.round((returned?.[i] ?? 0) * gain) + ((i * 31) % 7) - 3;
      const loud = samples.some((v) => Math.abs(v) > 50);
      this.push(loud ? 0.9 : 0.05, loud ? words : undefined, samples);
      await settle();
      await this.clock.advanceAsync(FRAME_MS, settle);
    }
  }

  /** The caller is silent (VAD 0.05) for `ms`, the line still carrying frames. */
  async silence(ms: number): Promise<void> {
    for (let t = 0; t < ms; t += FRAME_MS) await this.frame(0.05);
  }

  /** Time passes without caller audio (text and keypad turns). */
  async wait(ms: number): Promise<void> {
    await this.clock.advanceAsync(ms, settle);
  }

  /** Silence until `predicate` holds over the events, at most `maxMs`; returns the clock time it took. */
  async silenceUntil(predicate: (event: SessionEvent) => boolean, maxMs = 5_000): Promise<number> {
    const start = this.clock.now();
    while (!this.events.some(({ event }) => predicate(event))) {
      if (this.clock.now() - start > maxMs) throw new Error(`no matching event within ${maxMs} ms of audio`);
      await this.silence(FRAME_MS);
    }
    return this.clock.now() - start;
  }

  /** Events of one type, in order. */
  of<T extends SessionEvent['type']>(type: T): Extract<SessionEvent, { type: T }>[] {
    return this.events.map(({ event }) => event).filter((e): e is Extract<SessionEvent, { type: T }> => e.type === type);
  }

  /** Clock time of the first event matching `predicate`. */
  timeOf(predicate: (event: SessionEvent) => boolean): number | undefined {
    return this.events.find(({ event }) => predicate(event))?.atMs;
  }

  /** Agent audio frames sent for one response. */
  framesOf(responseId: string): number {
    return this.audio.filter(({ frame }) => frame.responseId === responseId).length;
  }

  async close(): Promise<void> {
    await this.session.close();
  }
}
