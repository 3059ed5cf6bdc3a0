import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { MediaClock, type MediaClockMember } from '../src/transports/media-clock.js';
import { RtpStream } from '../src/transports/sip/rtp/stream.js';

/**
 * The one media clock both real-time transports run on (SIP RTP at 20 ms, WebRTC at 10 ms), on real timers:
 * `due` after the event loop stalls, one error policy (a member that throws leaves and is told; the others
 * keep ticking), and no timer once the last member leaves.
 */
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** Block the event loop, as a long synchronous job (a model load, a GC pause) would. */
function stall(ms: number): void {
  const until = performance.now() + ms;
  while (performance.now() < until) {
    /* busy */
  }
}

class Recorder implements MediaClockMember {
  readonly dues: number[] = [];
  readonly afterIoDues: number[] = [];
  readonly errors: unknown[] = [];
  tick(due: number): void {
    this.dues.push(due);
  }
  afterIo(due: number): void {
    this.afterIoDues.push(due);
  }
  onError(err: unknown): void {
    this.errors.push(err);
  }
  /** Periods accounted for so far (each tick says how many passed). */
  get periods(): number {
    return this.dues.reduce((a, b) => a + b, 0);
  }
}

describe('MediaClock', () => {
  it('ticks once per period, and after a stall says how many periods passed', async () => {
    const clock = new MediaClock(10);
    const member = new Recorder();
    const startedAt = performance.now();
    clock.add(member);
    await sleep(60);
    expect(member.periods).toBeGreaterThanOrEqual(2);
    stall(55);
    await sleep(35);
    clock.delete(member);
    const elapsed = performance.now() - startedAt;
    // The stall is reported as one tick with due ≥ 5, not as a burst of ticks.
    expect(Math.max(...member.dues)).toBeGreaterThanOrEqual(5);
    // Drift-corrected: the periods accounted for follow wall time, whatever the timers' lateness.
    expect(member.periods).toBeGreaterThanOrEqual(Math.floor(elapsed / 10) - 4);
    expect(member.periods).toBeLessThanOrEqual(Math.ceil(elapsed / 10));
    // The second phase ran after I/O with the same due as its tick.
    expect(member.afterIoDues).toEqual(member.dues.slice(0, member.afterIoDues.length));
    // The lateness ring saw the stall.
    const lateness = clock.recentLateness();
    expect(lateness).toHaveLength(clock.ticks);
    expect(Math.max(...lateness)).toBeGreaterThanOrEqual(40);
    expect(member.errors).toEqual([]);
  });

  it('removes a member that throws, reports it once, and keeps ticking the others', async () => {
    const clock = new MediaClock(10);
    const before = new Recorder();
    const after = new Recorder();
    const failures: unknown[] = [];
    let brokenTicks = 0;
    const broken: MediaClockMember = {
      tick: () => {
        brokenTicks++;
        throw new Error('source closed under us');
      },
      onError: (err) => failures.push(err),
    };
    let brokenAfterIo = 0;
    const brokenLater: MediaClockMember = {
      tick: () => {},
      afterIo: () => {
        brokenAfterIo++;
        throw new Error('playout failed');
      },
      onError: (err) => failures.push(err),
    };
    // Members on both sides of the broken ones in the set's order.
    clock.add(before);
    clock.add(broken);
    clock.add(brokenLater);
    clock.add(after);
    await sleep(80);
    expect(brokenTicks).toBe(1);
    expect(brokenAfterIo).toBe(1);
    expect(failures.map(String)).toEqual(['Error: source closed under us', 'Error: playout failed']);
    expect(clock.size).toBe(2);
    const ticked = [before.dues.length, after.dues.length];
    await sleep(50);
    expect(before.dues.length).toBeGreaterThan(ticked[0]);
    expect(after.dues.length).toBeGreaterThan(ticked[1]);
    expect(before.errors).toEqual([]);
    clock.delete(before);
    clock.delete(after);
  });

  it('stops its timer when the last member leaves (also by failing) and restarts on the next', async () => {
    const clock = new MediaClock(10);
    const member = new Recorder();
    clock.add(member);
    expect(clock.running).toBe(true);
    await sleep(30);
    clock.delete(member);
    expect(clock.running).toBe(false);
    const ticks = clock.ticks;
    await sleep(40);
    expect(clock.ticks).toBe(ticks);

    const failing: MediaClockMember = {
      tick: () => {
        throw new Error('boom');
      },
      onError: () => {},
    };
    clock.add(failing);
    await sleep(30);
    expect(clock.size).toBe(0);
    expect(clock.running).toBe(false);
    await sleep(150);

    const again = new Recorder();
    clock.add(again);
    await sleep(40);
    clock.delete(again);
    expect(again.dues.length).toBeGreaterThanOrEqual(2);
    // A fresh start does not count the idle time (≥ 150 ms) as a stall (slack for timers late on a busy machine).
    expect(again.dues[0]).toBeLessThan(10);
  });

  it('an RTP stream that fails on the clock is reported to its call, not as a bare process warning', async () => {
    const rtp = dgram.createSocket('udp4');
    const rtcp = dgram.createSocket('udp4');
    await Promise.all([new Promise<void>((r) => rtp.bind(0, '127.0.0.1', () => r())), new Promise<void>((r) => rtcp.bind(0, '127.0.0.1', () => r()))]);
    const mediaErrors: unknown[] = [];
    const warnings: Error[] = [];
    const onWarning = (w: Error) => warnings.push(w);
    process.on('warning', onWarning);
    const stream = new RtpStream({
      rtp,
      rtcp,
      remote: { address: '127.0.0.1', port: 9 },
      plausible: () => true,
      payloadType: 0,
      telephoneEvent: null,
      clockRate: 8000,
      samplesPerPacket: 160,
      silencePayload: Buffer.alloc(160, 0xff),
      onAudio: () => {},
      onDtmf: () => {},
      onInvalid: () => {},
      onMediaError: (err) => mediaErrors.push(err),
    });
    stream.start();
    stream.arm();
    await sleep(50);
    expect(stream.packetsSent).toBeGreaterThan(0);
    // The socket closed under the stream (a bug elsewhere): the next send throws synchronously.
    rtp.close();
    await sleep(60);
    process.off('warning', onWarning);
    expect(mediaErrors).toHaveLength(1);
    expect((mediaErrors[0] as NodeJS.ErrnoException).code).toBe('ERR_SOCKET_DGRAM_NOT_RUNNING');
    expect(warnings).toEqual([]);
    stream.close();
  });
});
