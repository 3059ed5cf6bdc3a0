/**
 * The real-time media clock the transports' streams run on (SIP RTP at 20 ms, WebRTC at 10 ms: each transport
 * holds one instance at its own period): one timer wake-up per period however many calls there are,
 * drift-corrected against performance.now().
 */

/** What a media clock drives: one call's real-time media stream. */
export interface MediaClockMember {
  /**
   * One tick: `due` periods have passed since the last one (1 normally; more after an event-loop stall, so a
   * stream can catch up or skip ahead); `now` is the tick's performance.now().
   */
  tick(due: number, now: number): void;
  /** Second phase of the same tick, after this loop turn's I/O (packets queued in sockets during a stall are read first). */
  afterIo?(due: number): void;
  /** The member threw and has left the clock: its transport logs it with the call id and decides what the call does. */
  onError(err: unknown): void;
}

/** Recent tick lateness kept per clock (ms, a ring buffer: for tests and benchmarks). */
const LATENESS_RING = 4096;

export class MediaClock {
  private readonly members = new Set<MediaClockMember>();
  private timer: NodeJS.Timeout | null = null;
  /** Inside a tick: it schedules the next one itself (a member added by an error handler must not start a second timer). */
  private ticking = false;
  private nextAt = 0;
  /** Lateness of recent ticks, ms (ring buffer indexed by `ticks`). */
  readonly lateness = new Float64Array(LATENESS_RING);
  ticks = 0;

  constructor(readonly periodMs: number) {}

  get size(): number {
    return this.members.size;
  }

  /** Whether the clock's timer is running (it runs only while it has members). */
  get running(): boolean {
    return this.timer !== null;
  }

  add(member: MediaClockMember): void {
    this.members.add(member);
    if (!this.timer && !this.ticking) {
      this.nextAt = performance.now() + this.periodMs;
      this.schedule();
    }
  }

  delete(member: MediaClockMember): void {
    this.members.delete(member);
    if (this.members.size === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  /** Lateness of the last `n` ticks (at most the ring's size), oldest first. */
  recentLateness(n = LATENESS_RING): number[] {
    const count = Math.min(n, this.ticks, LATENESS_RING);
    return Array.from({ length: count }, (_, i) => this.lateness[(this.ticks - count + i) % LATENESS_RING]);
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.tick(), Math.max(0, this.nextAt - performance.now()));
    // The calls' sockets and peers keep the process alive, not their clock.
    this.timer.unref();
  }

  private tick(): void {
    this.timer = null;
    this.ticking = true;
    try {
      this.runTick();
    } finally {
      this.ticking = false;
    }
    if (this.members.size > 0) this.schedule();
  }

  private runTick(): void {
    const now = performance.now();
    const due = Math.max(1, Math.floor((now - this.nextAt) / this.periodMs) + 1);
    this.lateness[this.ticks++ % LATENESS_RING] = now - this.nextAt;
    this.nextAt += due * this.periodMs;
    const members = [...this.members];
    for (const m of members) {
      try {
        m.tick(due, now);
      } catch (err) {
        this.fail(m, err);
      }
    }
    const afterIo = members.filter((m) => m.afterIo && this.members.has(m));
    if (afterIo.length === 0) return;
    setImmediate(() => {
      for (const m of afterIo) {
        if (!this.members.has(m)) continue;
        try {
          m.afterIo?.(due);
        } catch (err) {
          this.fail(m, err);
        }
      }
    });
  }

  /** The one error policy: a member that throws leaves the clock and is told; the others keep their timing. */
  private fail(member: MediaClockMember, err: unknown): void {
    this.delete(member);
    try {
      member.onError(err);
    } catch (reportErr) {
      // A broken error handler is a bug in the transport: said, never allowed to stop the clock.
      process.emitWarning(`media clock: a member's onError threw: ${(reportErr as Error).message}`);
    }
  }
}
