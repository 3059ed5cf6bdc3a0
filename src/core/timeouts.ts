import { realClock, type Clock } from '../session/clock.js';

/** A stage that did not answer in time: the session treats it like a failure of that stage. */
export class StageTimeoutError extends Error {
  constructor(
    readonly stage: string,
    readonly ms: number,
  ) {
    super(`${stage} did not answer within ${ms} ms`);
    this.name = 'StageTimeoutError';
  }
}

/**
 * Resolve with `promise`, or reject with StageTimeoutError after `ms` of `clock` time (the work itself is not
 * cancelled).
 */
export function within<T>(promise: Promise<T>, ms: number, stage: string, clock: Clock = realClock): Promise<T> {
  if (!(ms > 0) || !Number.isFinite(ms)) return promise;
  let timer: ReturnType<Clock['setTimeout']> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = clock.setTimeout(() => reject(new StageTimeoutError(stage, ms)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clock.clearTimeout(timer));
}

/**
 * Iterate an async stream, failing when the first item takes longer than `firstMs` or any later one longer
 * than `nextMs`: a backend that stalls mid-stream must not hold the caller in silence forever.
 */
export async function* timedStream<T>(source: AsyncIterable<T>, firstMs: number, nextMs: number, stage: string, clock: Clock = realClock): AsyncGenerator<T> {
  const iterator = source[Symbol.asyncIterator]();
  let first = true;
  try {
    for (;;) {
      const result = await within(iterator.next(), first ? firstMs : nextMs, stage, clock);
      if (result.done) return;
      first = false;
      yield result.value;
    }
  } finally {
    // Stop the backend's generator (it sees the caller's abort signal too).
    void iterator.return?.(undefined)?.catch(() => {});
  }
}
