import { FRAME_MS } from '../audio/format.js';
import { realClock, type Clock, type TimerHandle } from './clock.js';

/** One frame of agent audio on its way out, tagged with the reply segment it belongs to. */
export interface OutboundFrame {
  samples: Int16Array;
  responseId: string;
  /** Index of the TTS segment (clause/sentence) within the response. */
  segment: number;
}

/**
 * Sends agent audio at real-time pace, at most `leadMs` ahead of the caller's playout. Keeping the client's
 * buffer this small is what lets barge-in silence the agent at once, and it tells us what the caller heard.
 */
export class OutputPacer {
  private readonly queue: OutboundFrame[] = [];
  /** Clock time at which the next frame sent will start playing at the caller. */
  private playheadMs = 0;
  private timer: TimerHandle | null = null;
  private idleTimer: TimerHandle | null = null;
  private paused = false;
  private closed = false;

  constructor(
    /** `playoutAtMs`: clock time the frame starts playing at the caller (sent up to `leadMs` before). */
    private readonly send: (frame: OutboundFrame, playoutAtMs: number) => void,
    private readonly leadMs: number,
    private readonly onIdle: () => void = () => {},
    private readonly clock: Clock = realClock,
  ) {}

  enqueue(frame: OutboundFrame): void {
    if (this.closed) return;
    this.queue.push(frame);
    this.schedule();
  }

  /** Frames waiting to be sent. */
  get queued(): number {
    return this.queue.length;
  }

  /** True while agent audio is queued or still playing at the caller. */
  get active(): boolean {
    return this.queue.length > 0 || this.clock.now() < this.playheadMs;
  }

  /** Resolves once nothing is queued and what was sent has played at the caller (or when closed, or after `maxMs`). */
  async whenIdle(maxMs: number): Promise<void> {
    const deadline = this.clock.now() + maxMs;
    while (this.active && !this.closed && this.clock.now() < deadline) {
      await new Promise<void>((resolve) => this.clock.setTimeout(resolve, Math.min(FRAME_MS, Math.max(1, deadline - this.clock.now()))));
    }
  }

  /** Frames sent that the caller has not played yet (in their playout buffer). */
  get framesAhead(): number {
    return Math.max(0, Math.ceil((this.playheadMs - this.clock.now()) / FRAME_MS));
  }

  /** Stop sending (the caller may be interrupting); frames stay queued. */
  pause(): void {
    this.paused = true;
    this.clearTimer();
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    this.schedule();
  }

  get isPaused(): boolean {
    return this.paused;
  }

  /** Drop everything queued; returns what was dropped. The caller's short playout buffer still plays out. */
  clear(): OutboundFrame[] {
    const dropped = this.queue.splice(0, this.queue.length);
    this.clearTimer();
    this.paused = false;
    this.playheadMs = Math.min(this.playheadMs, this.clock.now());
    return dropped;
  }

  close(): void {
    this.closed = true;
    this.queue.length = 0;
    this.clearTimer();
  }

  private clearTimer(): void {
    if (this.timer) {
      this.clock.clearTimeout(this.timer);
      this.timer = null;
    }
    if (this.idleTimer) {
      this.clock.clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
  }

  private schedule(): void {
    if (this.timer || this.paused || this.closed) return;
    if (this.idleTimer) {
      this.clock.clearTimeout(this.idleTimer);
      this.idleTimer = null;
    }
    this.pump();
  }

  private pump(): void {
    this.timer = null;
    if (this.paused || this.closed) return;
    let now = this.clock.now();
    while (this.queue.length > 0) {
      // After an underrun the caller's buffer is empty: play from now, not from the stale playhead.
      if (this.playheadMs < now) this.playheadMs = now;
      if (this.playheadMs - now > this.leadMs) break;
      const frame = this.queue.shift()!;
      const playoutAtMs = this.playheadMs;
      this.playheadMs += FRAME_MS;
      this.send(frame, playoutAtMs);
      now = this.clock.now();
    }
    if (this.queue.length > 0) {
      const wait = Math.max(1, this.playheadMs - this.leadMs - now);
      this.timer = this.clock.setTimeout(() => this.pump(), wait);
    } else {
      const untilPlayed = Math.max(0, this.playheadMs - this.clock.now());
      this.idleTimer = this.clock.setTimeout(() => {
        this.idleTimer = null;
        if (this.queue.length === 0 && !this.closed) this.onIdle();
      }, untilPlayed);
    }
  }
}
