/** Adaptive jitter buffer for one RTP stream: reorders, conceals gaps, sizes itself from measured jitter. */
export type JitterOutput = { kind: 'audio'; payload: Buffer; arrivalMs: number } | { kind: 'lost' } | { kind: 'empty' };

export interface JitterOptions {
  /** Frames (packets) held before playout starts, at least. */
  minFrames?: number;
  /** Never hold more than this; older packets are dropped to catch up. */
  maxFrames?: number;
  /** Packet duration, ms (for the jitter estimate). */
  frameMs?: number;
}

/**
 * Adaptive jitter buffer over RTP sequence numbers. `push` as packets arrive; `pop` once per frame interval.
 * Reorders, drops late and duplicate packets, reports gaps as `lost` (the caller conceals them), and sizes
 * its target depth from the RFC 3550 interarrival-jitter estimate.
 */
export class JitterBuffer {
  private readonly packets = new Map<number, { payload: Buffer; arrivalMs: number }>();
  /** Sequence numbers used by non-audio packets (RFC 4733 events share the stream's numbering): not gaps. */
  private readonly skips = new Set<number>();
  private readonly minFrames: number;
  private readonly maxFrames: number;
  private readonly frameMs: number;
  /** Extended sequence number of the next packet to play; null until playout starts. */
  private next: number | null = null;
  private highest: number | null = null;
  private emptyPops = 0;
  private popsSinceDrop = 0;
  private jitterMs = 0;
  private lastTransit: number | null = null;
  stats = { received: 0, late: 0, duplicate: 0, lost: 0, concealed: 0, dropped: 0, played: 0 };

  constructor(options: JitterOptions = {}) {
    this.minFrames = options.minFrames ?? 1;
    this.maxFrames = options.maxFrames ?? 25;
    this.frameMs = options.frameMs ?? 20;
  }

  /** RFC 3550 interarrival jitter estimate, ms. */
  get jitter(): number {
    return this.jitterMs;
  }

  /** True when the packet due next is here (playout has started and it arrived). */
  get nextReady(): boolean {
    return this.next !== null && this.packets.has(this.next);
  }

  /** Frames currently waiting. */
  get depth(): number {
    return this.packets.size;
  }

  /** Depth the buffer fills to before playing: enough to absorb about twice the measured jitter. */
  get targetFrames(): number {
    const wanted = Math.ceil((2 * this.jitterMs) / this.frameMs) + this.minFrames;
    return Math.min(this.maxFrames, Math.max(this.minFrames, wanted));
  }

  /** `timestampMs` is the RTP timestamp converted to ms (for jitter); `arrivalMs` when it came. */
  push(seq: number, timestampMs: number, payload: Buffer, arrivalMs: number): void {
    this.stats.received++;
    const ext = this.extend(seq);
    const transit = arrivalMs - timestampMs;
    if (this.lastTransit !== null) {
      const d = Math.abs(transit - this.lastTransit);
      // A jump of seconds is a new talkspurt or a sender restart, not network jitter.
      if (d < 1000) this.jitterMs += (d - this.jitterMs) / 16;
    }
    this.lastTransit = transit;
    if (this.next !== null && ext < this.next) {
      this.stats.late++;
      return;
    }
    if (this.packets.has(ext)) {
      this.stats.duplicate++;
      return;
    }
    this.packets.set(ext, { payload, arrivalMs });
    if (this.highest === null || ext > this.highest) this.highest = ext;
    // Too much queued (a burst, or the sender's clock runs fast): drop the oldest to hold latency down.
    while (this.packets.size > this.maxFrames) {
      const oldest = Math.min(...this.packets.keys());
      this.packets.delete(oldest);
      this.stats.dropped++;
      if (this.next !== null && oldest >= this.next) this.next = oldest + 1;
    }
  }

  /** A packet of this stream that carries no audio (a telephone-event): its number is not a loss. */
  skip(seq: number): void {
    const ext = this.extend(seq);
    if (this.next !== null && ext < this.next) return;
    this.skips.add(ext);
    if (this.highest === null || ext > this.highest) this.highest = ext;
    if (this.skips.size > 256) for (const s of [...this.skips].sort((a, b) => a - b).slice(0, 128)) this.skips.delete(s);
  }

  pop(): JitterOutput {
    while (this.next !== null && this.skips.delete(this.next)) this.next++;
    if (this.next === null) {
      if (this.packets.size < this.targetFrames) return { kind: 'empty' };
      this.next = Math.min(...this.packets.keys());
    }
    // Sustained excess over the target (a burst that never drained): skip the oldest frame now and then to
    // cut the latency back gradually (one frame in ten, so speech is not chopped).
    this.popsSinceDrop++;
    if (this.packets.size > 2 * this.targetFrames + 4 && this.popsSinceDrop >= 10) {
      this.popsSinceDrop = 0;
      const oldest = Math.min(...this.packets.keys());
      this.packets.delete(oldest);
      this.stats.dropped++;
      this.next = Math.min(...(this.packets.size > 0 ? this.packets.keys() : [oldest + 1]));
    }
    const entry = this.packets.get(this.next);
    if (entry) {
      this.packets.delete(this.next);
      this.next++;
      this.emptyPops = 0;
      this.stats.played++;
      return { kind: 'audio', payload: entry.payload, arrivalMs: entry.arrivalMs };
    }
    if (this.packets.size > 0) {
      // A gap with later packets waiting: that one is lost (or later than we can wait for).
      this.next++;
      this.stats.lost++;
      return { kind: 'lost' };
    }
    // Nothing at all: the packet is late or the sender paused (hold, DTX). Conceal without giving up on it
    // (if it comes, it plays, and the excess rule above trims the added delay); after a while, re-buffer.
    if (++this.emptyPops > 3) {
      this.next = null;
      return { kind: 'empty' };
    }
    this.stats.concealed++;
    return { kind: 'lost' };
  }

  /** Map a 16-bit sequence number onto a 32-bit+ counter near the highest seen (handles wrap-around). */
  private extend(seq: number): number {
    const ref = this.highest ?? this.next;
    if (ref === null) return seq + 65536; // leave room below for reordered early packets
    const base = ref - (ref & 0xffff);
    let ext = base + seq;
    if (ext - ref > 32768) ext -= 65536;
    else if (ref - ext > 32768) ext += 65536;
    return ext;
  }
}
