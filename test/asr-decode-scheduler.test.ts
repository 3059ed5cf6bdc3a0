/**
 * The decode scheduler: when more decoders have audio than there are cores, an awaited decoder (a final or a peek
 * queued) goes first, then the one whose audio has waited longest; nobody queues while places are free.
 */
import { describe, expect, it } from 'vitest';
import { buildStanding, DecodeScheduler, type DecodeStanding } from '../src/providers/asr/pocketsphinx/scheduler.js';

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

describe('DecodeScheduler', () => {
  it('grants at once while places are free', async () => {
    const scheduler = new DecodeScheduler(2);
    const a = await scheduler.acquire(() => ({ awaited: false, since: 0 }));
    const b = await scheduler.acquire(() => ({ awaited: false, since: 0 }));
    expect(scheduler.queued).toBe(0);
    a();
    b();
  });

  it('gives a freed place to the awaited decoder first, then to the oldest audio, asking each when the place frees', async () => {
    const scheduler = new DecodeScheduler(1);
    const hold = await scheduler.acquire(() => ({ awaited: false, since: 0 }));
    const order: string[] = [];
    const standings: Record<string, DecodeStanding> = {
      newer: { awaited: false, since: 300 },
      older: { awaited: false, since: 100 },
      peeking: { awaited: false, since: 500 },
    };
    const waits = Object.keys(standings).map(async (name) => {
      const release = await scheduler.acquire(() => standings[name]);
      order.push(name);
      await tick();
      release();
    });
    expect(scheduler.queued).toBe(3);
    // Its caller paused while it waited: a peek is now queued behind its audio.
    standings.peeking = { awaited: true, since: 500 };
    hold();
    await Promise.all(waits);
    expect(order).toEqual(['peeking', 'older', 'newer']);
    expect(scheduler.queued).toBe(0);
  });

  it('builds a spare decoder after every decoder with audio, unless a call is waiting for that build', async () => {
    const scheduler = new DecodeScheduler(1);
    const hold = await scheduler.acquire(() => ({ awaited: false, since: 0 }));
    const order: string[] = [];
    const standings: Record<string, () => DecodeStanding> = {
      spare: () => buildStanding(false),
      speaking: () => ({ awaited: false, since: 900 }),
      'wanted build': () => buildStanding(true),
    };
    const waits = Object.entries(standings).map(async ([name, standing]) => {
      const release = await scheduler.acquire(standing);
      order.push(name);
      await tick();
      release();
    });
    hold();
    await Promise.all(waits);
    expect(order).toEqual(['wanted build', 'speaking', 'spare']);
  });

  it('never runs more decode steps at once than it has places, and a double release frees one place', async () => {
    const scheduler = new DecodeScheduler(2);
    let running = 0;
    let most = 0;
    await Promise.all(Array.from({ length: 12 }, async (_, i) => {
      const release = await scheduler.acquire(() => ({ awaited: i % 3 === 0, since: i }));
      running++;
      most = Math.max(most, running);
      await tick();
      running--;
      release();
      release();
    }));
    expect(most).toBe(2);
    const a = await scheduler.acquire(() => ({ awaited: false, since: 0 }));
    const b = await scheduler.acquire(() => ({ awaited: false, since: 0 }));
    expect(scheduler.queued).toBe(0);
    a();
    b();
  });
});
