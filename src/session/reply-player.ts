import type { Logger } from 'pino';
import { redact, type RedactKind } from '../privacy/redact.js';
import type { Clock } from './clock.js';
import type { SessionEvent, TurnStages } from './events.js';
import { OutputPacer, type OutboundFrame } from './output-pacer.js';
import type { MetricsSink } from './ports.js';
import type { ReplyTask } from './reply.js';

/** A reply given the floor, with the turn it answers. */
export interface ReplyToPlay {
  task: ReplyTask;
  turn: number;
  /** The caller's words this reply answers ('' when it answers none: respond(), a service line). */
  userText: string;
  lastVoicedMs: number;
  /** What the turn measured before the reply (endpoint, ASR final). */
  stages: TurnStages;
  preemptive: boolean;
  discardedPreemptive: number;
  /** False for a service line: it is not a caller turn answered, so it reports no turn metrics. */
  measured: boolean;
  /** A service line (consent notice), kept in the transcript but not in the agent's conversation. */
  notice?: boolean;
}

export type ReplyEnd = 'completed' | 'interrupted' | 'failed';

/** What the player tells the session. */
export interface PlayerHooks {
  event(event: SessionEvent): void;
  /** One frame of the reply leaves for the caller, to start playing there at `playoutAtMs` (clock time). */
  frame(frame: OutboundFrame, playoutAtMs: number): void;
  /** Frames of a reply the caller has actually heard, when the transport knows it (SessionOutput.playedFrames). */
  playedFrames(responseId: string): number | undefined;
  /**
   * The reply is over and `response.done` was sent: record it. `heardText` is what the caller heard,
   * `spoken` the same redacted (what the record may keep).
   */
  finished(reply: ReplyToPlay, heardText: string, spoken: string, status: ReplyEnd): void;
}

export interface ReplyPlayerOptions {
  hooks: PlayerHooks;
  clock: Clock;
  /** How far agent audio may run ahead of the caller's playout (audioOut.leadMs). */
  leadMs: number;
  metrics: MetricsSink;
  logger: Logger;
  /** What is redacted from the agent's words in events and the record (privacy.redact). */
  redact: readonly RedactKind[];
}

interface Playing extends ReplyToPlay {
  framesSent: number;
  producedAll: boolean;
  metricsSent: boolean;
}

/**
 * The agent's side of the floor: the one reply playing, paced to real time, and how it ends — played out,
 * failed, or cut (it knows what the caller heard of it). Whether a reply is cut, and what a cut reply means for
 * the turns, is the turn manager's (turn-manager.ts); what enters the conversation is the session's.
 */
export class ReplyPlayer {
  private readonly pacer: OutputPacer;
  private playing: Playing | null = null;
  /** Resolved whenever the playing reply finishes (played, interrupted or failed). */
  private waiters: (() => void)[] = [];

  constructor(private readonly options: ReplyPlayerOptions) {
    this.pacer = new OutputPacer((frame, playoutAtMs) => this.send(frame, playoutAtMs), options.leadMs, () => this.onPlaybackIdle(), options.clock);
  }

  /** The reply that has the floor, if any. */
  get current(): Readonly<ReplyToPlay> | null {
    return this.playing;
  }

  /** True while agent audio is queued or playing at the caller. */
  get audible(): boolean {
    return this.pacer.active;
  }

  /** Hold the audio (the caller may be interrupting); `resume()` lets it go on. */
  pause(): void {
    this.pacer.pause();
  }

  resume(): void {
    this.pacer.resume();
  }

  /** Resolves once the audio so far has played at the caller, or after `maxMs`. */
  whenIdle(maxMs: number): Promise<void> {
    return this.pacer.whenIdle(maxMs);
  }

  /** Resolves when the reply that has the floor next finishes, or after `timeoutMs`. */
  whenFinished(timeoutMs: number): Promise<void> {
    return new Promise<void>((resolve) => {
      this.waiters.push(resolve);
      this.options.clock.setTimeout(resolve, timeoutMs).unref();
    });
  }

  /** Give `reply` the floor: its held events and audio go out, the rest as it comes. */
  play(reply: ReplyToPlay): void {
    this.playing = { ...reply, framesSent: 0, producedAll: false, metricsSent: !reply.measured };
    reply.task.attach({
      event: (event) => this.options.hooks.event(event),
      frame: (frame) => this.pacer.enqueue(frame),
      finished: (task) => this.onReplyProduced(task),
    });
  }

  /** What the caller has heard of the playing reply so far. */
  heardText(): string {
    const playing = this.playing;
    return playing ? playing.task.heardText(this.framesPlayed(playing)) : '';
  }

  /**
   * Cut the playing reply off: its LLM and TTS stop, its queued audio is dropped and the caller's player told to
   * clear. Returns what the caller heard of it; the reply keeps the floor until `finish()`.
   */
  cut(): string {
    const playing = this.playing;
    if (!playing) return '';
    const heard = this.heardText();
    playing.task.cancel();
    this.pacer.clear();
    this.options.hooks.event({ type: 'audio.clear' });
    this.options.hooks.event({ type: 'response.interrupted', turn: playing.turn, responseId: playing.task.responseId, heardText: redact(heard, this.options.redact) });
    this.options.metrics.interruption();
    return heard;
  }

  /** The playing reply is over: `response.done`, then the session records what the caller heard. */
  finish(heardText: string, status: ReplyEnd): void {
    const playing = this.playing;
    if (!playing) return;
    this.playing = null;
    // An agent that reads a card number back: the caller heard it, the record and the model's context do not keep it.
    const spoken = redact(heardText, this.options.redact);
    this.options.hooks.event({ type: 'response.done', turn: playing.turn, responseId: playing.task.responseId, text: spoken, status });
    this.options.hooks.finished(playing, heardText, spoken, status);
    for (const resolve of this.waiters.splice(0)) resolve();
  }

  /** The call ended: the playing reply ends where the caller stopped hearing it, and nothing more is sent. */
  close(): void {
    if (this.playing) this.finish(this.heardText(), 'interrupted');
    this.pacer.close();
  }

  private send(frame: OutboundFrame, playoutAtMs: number): void {
    const playing = this.playing;
    if (!playing || frame.responseId !== playing.task.responseId) return;
    playing.framesSent++;
    if (!playing.metricsSent) {
      playing.metricsSent = true;
      this.reportMetrics(playing);
    }
    this.options.hooks.frame(frame, playoutAtMs);
  }

  /** The turn's stages, once its first audio leaves: server voice-to-voice ends here. */
  private reportMetrics(playing: Playing): void {
    const stages: TurnStages = {
      ...playing.stages,
      ...playing.task.stages,
      serverV2vMs: this.options.clock.now() - playing.lastVoicedMs,
    };
    const metrics = { turn: playing.turn, stages: roundStages(stages), preemptive: playing.preemptive, discardedPreemptive: playing.discardedPreemptive };
    this.options.metrics.turnCompleted(metrics);
    this.options.hooks.event({ type: 'turn.metrics', turn: playing.turn, metrics });
    this.options.logger.info({ turn: playing.turn, ...metrics.stages, preemptive: playing.preemptive }, 'turn answered');
  }

  private onReplyProduced(task: ReplyTask): void {
    const playing = this.playing;
    if (!playing || playing.task !== task) return;
    playing.producedAll = true;
    if (!this.pacer.active) this.onPlaybackIdle();
  }

  private onPlaybackIdle(): void {
    const playing = this.playing;
    if (!playing || !playing.producedAll || this.pacer.isPaused) return;
    this.finish(playing.task.text.trim(), playing.task.status === 'failed' ? 'failed' : 'completed');
  }

  /** Frames of the reply the caller has heard: sent, minus what is still in their playout buffer. */
  private framesPlayed(playing: Playing): number {
    const reported = this.options.hooks.playedFrames(playing.task.responseId);
    if (reported !== undefined) return Math.max(0, Math.min(playing.framesSent, reported));
    return Math.max(0, playing.framesSent - this.pacer.framesAhead);
  }
}

function roundStages(stages: TurnStages): TurnStages {
  const out: TurnStages = {};
  for (const [key, value] of Object.entries(stages) as [keyof TurnStages, number | undefined][]) {
    if (value !== undefined) out[key] = Math.round(value * 10) / 10;
  }
  return out;
}
