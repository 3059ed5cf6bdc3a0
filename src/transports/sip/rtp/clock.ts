/** The one 20 ms media clock all RTP streams of the process run on. */
import type { RtpStream } from './stream.js';

/**
 * One 20 ms clock for every call in the process: one timer wake-up per tick however many calls there are,
 * drift-corrected against performance.now(). After a stall, `due` tells each stream how many ticks passed.
 */
class MediaClock {
  private readonly streams = new Set<RtpStream>();
  private timer: NodeJS.Timeout | null = null;
  private nextAt = 0;
  /** Lateness of recent ticks, ms (ring buffer, for metrics and the media benchmark). */
  readonly lateness = new Float64Array(4096);
  ticks = 0;

  add(stream: RtpStream): void {
    this.streams.add(stream);
    if (!this.timer) {
      this.nextAt = performance.now() + 20;
      this.schedule();
    }
  }

  delete(stream: RtpStream): void {
    this.streams.delete(stream);
    if (this.streams.size === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.tick(), Math.max(0, this.nextAt - performance.now()));
  }

  private tick(): void {
    const now = performance.now();
    const due = Math.max(1, Math.floor((now - this.nextAt) / 20) + 1);
    this.lateness[this.ticks++ % this.lateness.length] = now - this.nextAt;
    this.nextAt += due * 20;
    const streams = [...this.streams];
    // One call's failure must not stop the clock for the others.
    for (const s of streams) guard(() => s.step(due, now));
    // Play out after this loop turn's I/O: packets that queued in the sockets during a stall are read first.
    setImmediate(() => {
      for (const s of streams) guard(() => s.playoutStep(due));
    });
    if (this.streams.size > 0) this.schedule();
    else this.timer = null;
  }
}

export const mediaClock = new MediaClock();

function guard(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    process.emitWarning(`RTP media step failed: ${(err as Error).message}`);
  }
}
