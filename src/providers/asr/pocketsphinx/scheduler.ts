/**
 * Which call's decoder gets a core next, when more calls have audio to decode than there are cores.
 *
 * Why: every call decodes on the thread pool, and with more decoders than cores the OS shares the cores out evenly,
 * so under a burst every call falls behind by the same second — including the caller who has just stopped speaking
 * and is waiting for the answer. A decoder whose result is awaited now (a turn's final, or a peek at a pause) cannot
 * wait; one whose caller is still speaking can, since its result is needed only at that caller's pause. So decode
 * steps (≤ 100 ms of audio each) take one of `slots` places: awaited decoders first, then the one whose oldest
 * undecoded audio is the oldest, and last a spare decoder being built for calls to come. A machine that keeps up
 * never queues here.
 */

import { availableParallelism } from 'node:os';

/** What a waiting decoder is asked when a place frees up (asked then, not when it queued: it may have become urgent). */
export interface DecodeStanding {
  /** Someone awaits this decoder's result (a final or a peek is queued behind its audio). */
  awaited: boolean;
  /** performance.now() when its oldest undecoded audio arrived. */
  since: number;
}

interface Waiter {
  standing: () => DecodeStanding;
  grant: () => void;
}

export class DecodeScheduler {
  private running = 0;
  private readonly waiting: Waiter[] = [];

  constructor(readonly slots: number) {
    if (!(slots >= 1)) throw new Error(`DecodeScheduler needs at least one slot, got ${slots}`);
  }

  /** Decoders waiting for a place now (for tests and metrics). */
  get queued(): number {
    return this.waiting.length;
  }

  /** Resolves with a release function once this decoder may run one decode step. Call release exactly once. */
  acquire(standing: () => DecodeStanding): Promise<() => void> {
    if (this.running < this.slots) {
      this.running++;
      return Promise.resolve(this.releaser());
    }
    return new Promise((resolve) => {
      this.waiting.push({ standing, grant: () => resolve(this.releaser()) });
    });
  }

  private releaser(): () => void {
    let released = false;
    return () => {
      if (released) return;
      released = true;
      this.running--;
      this.next();
    };
  }

  private next(): void {
    if (this.running >= this.slots || this.waiting.length === 0) return;
    let best = 0;
    let bestStanding = this.waiting[0].standing();
    for (let i = 1; i < this.waiting.length; i++) {
      const standing = this.waiting[i].standing();
      if (before(standing, bestStanding)) {
        best = i;
        bestStanding = standing;
      }
    }
    const [waiter] = this.waiting.splice(best, 1);
    this.running++;
    waiter.grant();
  }
}

function before(a: DecodeStanding, b: DecodeStanding): boolean {
  if (a.awaited !== b.awaited) return a.awaited;
  return a.since < b.since;
}

/**
 * The scheduler every decoder of this process shares, as they share the machine's cores. Twice as many places as
 * cores: decoders share each core with the event loop and the voices' threads, and with a place per core alone they
 * got too little of it to clear a burst of first turns (BENCHMARKS.md "Awaited decoders first").
 */
export const decodeSlots = new DecodeScheduler(2 * availableParallelism());

/** A spare decoder's build: after every decoder with audio, unless a call is waiting for it. */
export function buildStanding(callWaiting: boolean): DecodeStanding {
  return { awaited: callWaiting, since: Number.POSITIVE_INFINITY };
}
