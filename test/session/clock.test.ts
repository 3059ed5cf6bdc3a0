import { describe, expect, it } from 'vitest';
import { FakeClock } from '../../src/session/clock.js';
import { OutputPacer, type OutboundFrame } from '../../src/session/output-pacer.js';

describe('FakeClock', () => {
  it('runs due timers in due-time order, each at its own time, and skips cleared ones', () => {
    const clock = new FakeClock(0);
    const ran: string[] = [];
    clock.setTimeout(() => ran.push(`b@${clock.now()}`), 30);
    clock.setTimeout(() => ran.push(`a@${clock.now()}`), 10);
    const cleared = clock.setTimeout(() => ran.push('never'), 20);
    clock.setTimeout(() => ran.push(`c@${clock.now()}`), 30);
    clock.clearTimeout(cleared);
    clock.advance(25);
    expect(ran).toEqual(['a@10']);
    expect(clock.now()).toBe(25);
    clock.advance(100);
    expect(ran).toEqual(['a@10', 'b@30', 'c@30']);
    expect(clock.pending).toBe(0);
  });

  it('runs a timer set by a timer within the same advance when it falls due', () => {
    const clock = new FakeClock(0);
    const ran: number[] = [];
    clock.setTimeout(() => {
      ran.push(clock.now());
      clock.setTimeout(() => ran.push(clock.now()), 0);
    }, 5);
    clock.advance(10);
    expect(ran).toEqual([5, 6]);
  });
});

describe('OutputPacer on a fake clock', () => {
  it('keeps at most leadMs ahead of playout, in real time, and reports idle once played', () => {
    const clock = new FakeClock(0);
    const sent: number[] = [];
    let idleAt: number | undefined;
    const pacer = new OutputPacer(() => sent.push(clock.now()), 40, () => (idleAt = clock.now()), clock);
    const frame = (): OutboundFrame => ({ samples: new Int16Array(320), responseId: 'r', segment: 0 });
    for (let i = 0; i < 10; i++) pacer.enqueue(frame());
    // Three frames at once (0, 20 and 40 ms ahead), then one per 20 ms.
    expect(sent).toEqual([0, 0, 0]);
    clock.advance(1_000);
    expect(sent).toEqual([0, 0, 0, 20, 40, 60, 80, 100, 120, 140]);
    expect(idleAt).toBe(200);
    expect(pacer.active).toBe(false);
  });

  it('sends nothing while paused and drops the queue on clear', () => {
    const clock = new FakeClock(0);
    const sent: number[] = [];
    const pacer = new OutputPacer(() => sent.push(clock.now()), 40, () => {}, clock);
    for (let i = 0; i < 10; i++) pacer.enqueue({ samples: new Int16Array(320), responseId: 'r', segment: 0 });
    pacer.pause();
    clock.advance(500);
    expect(sent).toHaveLength(3);
    pacer.resume();
    // The caller's buffer ran dry meanwhile: it is filled up to leadMs again at once.
    expect(sent).toEqual([0, 0, 0, 500, 500, 500]);
    expect(pacer.clear()).toHaveLength(4);
    clock.advance(500);
    expect(sent).toHaveLength(6);
  });
});
