/** A pending timer; `unref()` lets the process exit while it waits (a real timer only). */
export interface TimerHandle {
  unref(): TimerHandle;
}

/**
 * Where the session reads the time and sets its timers. The real one is `performance.now()` and Node's
 * timers; tests pass a `FakeClock` so turn logic runs in audio time without waiting for it.
 */
export interface Clock {
  /** Monotonic milliseconds (the same scale as inbound frames' `timestampMs`). */
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle | null | undefined): void;
}

export const realClock: Clock = {
  now: () => performance.now(),
  setTimeout: (fn, ms) => setTimeout(fn, ms),
  clearTimeout: (handle) => {
    // Only ever a handle this clock's setTimeout returned.
    if (handle) clearTimeout(handle as NodeJS.Timeout);
  },
};

interface FakeTimer extends TimerHandle {
  readonly id: number;
  at: number;
  readonly fn: () => void;
}

/**
 * A clock that moves only when told: `advance(ms)` runs the timers that fall due, in due-time order (ties
 * in the order they were set), each seeing `now()` at its own due time.
 */
export class FakeClock implements Clock {
  private current: number;
  private nextId = 1;
  private timers: FakeTimer[] = [];

  constructor(startMs = 1_000) {
    this.current = startMs;
  }

  now(): number {
    return this.current;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: FakeTimer = {
      id: this.nextId++,
      // Node runs a timer of 0 or less (or NaN) after 1 ms.
      at: this.current + (ms >= 1 ? ms : 1),
      fn,
      unref: () => timer,
    };
    this.timers.push(timer);
    return timer;
  }

  clearTimeout(handle: TimerHandle | null | undefined): void {
    if (!handle) return;
    this.timers = this.timers.filter((t) => t !== handle);
  }

  /** Timers still waiting. */
  get pending(): number {
    return this.timers.length;
  }

  /** Move time forward by `ms`, running each timer that falls due on the way. */
  advance(ms: number): void {
    const target = this.current + ms;
    for (let timer = this.nextDue(target); timer; timer = this.nextDue(target)) {
      this.current = timer.at;
      timer.fn();
    }
    this.current = target;
  }

  /**
   * Like advance(), but awaits `settle()` first and after each timer, so the promise chains already under way
   * or started by a timer run (and set their own timers) before time moves on, as they would in real time.
   */
  async advanceAsync(ms: number, settle: () => Promise<void>): Promise<void> {
    const target = this.current + ms;
    await settle();
    for (let timer = this.nextDue(target); timer; timer = this.nextDue(target)) {
      this.current = timer.at;
      timer.fn();
      await settle();
    }
    this.current = target;
    await settle();
  }

  /** Removes and returns the earliest timer due at or before `target`. */
  private nextDue(target: number): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const timer of this.timers) {
      if (timer.at > target) continue;
      if (!best || timer.at < best.at || (timer.at === best.at && timer.id < best.id)) best = timer;
    }
    if (best) this.timers = this.timers.filter((t) => t !== best);
    return best;
  }
}
