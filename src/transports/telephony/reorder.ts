/**
 * Puts media chunks that may arrive out of order (Telnyx says frame order is not guaranteed) back in
 * sequence. A chunk ahead of the expected one waits; once `depth` chunks wait, the gap is given up as
 * lost and reported so the caller can fill it with silence. Late and duplicate chunks are dropped.
 */
export interface ReorderOutput<T> {
  /** Chunks now in order, each preceded by `missingBefore` chunks given up as lost. */
  ready: { item: T; seq: number; missingBefore: number }[];
  /** A chunk that came too late (its slot was already played or given up) or twice. */
  dropped: boolean;
}

export class ReorderBuffer<T> {
  private readonly waiting = new Map<number, T>();
  private next: number | null = null;
  /** Chunks given up as lost so far. */
  lost = 0;
  /** Late or duplicate chunks dropped so far. */
  late = 0;

  /** `depth`: chunks held while waiting for a missing one (at 20 ms each, the added delay on loss). */
  constructor(private readonly depth = 3) {}

  push(seq: number, item: T): ReorderOutput<T> {
    const out: ReorderOutput<T> = { ready: [], dropped: false };
    if (this.next === null) this.next = seq;
    // A huge jump backwards is a sequence restart, not a late chunk: start over from it.
    if (seq < this.next && this.next - seq > 1000) {
      this.flushInto(out);
      this.next = seq;
    }
    if (seq < this.next || this.waiting.has(seq)) {
      this.late++;
      out.dropped = true;
      return out;
    }
    this.waiting.set(seq, item);
    this.drain(out, 0);
    if (this.waiting.size > this.depth) {
      // Give up on the gap: jump to the oldest waiting chunk.
      const oldest = Math.min(...this.waiting.keys());
      const missing = oldest - this.next;
      this.lost += missing;
      this.next = oldest;
      this.drain(out, missing);
    }
    return out;
  }

  /** Everything still waiting, in order (end of stream). */
  flush(): ReorderOutput<T> {
    const out: ReorderOutput<T> = { ready: [], dropped: false };
    this.flushInto(out);
    return out;
  }

  get pending(): number {
    return this.waiting.size;
  }

  private flushInto(out: ReorderOutput<T>): void {
    const seqs = [...this.waiting.keys()].sort((a, b) => a - b);
    for (const seq of seqs) {
      const missing = this.next === null ? 0 : Math.max(0, seq - this.next);
      this.lost += missing;
      out.ready.push({ item: this.waiting.get(seq)!, seq, missingBefore: missing });
      this.next = seq + 1;
    }
    this.waiting.clear();
  }

  private drain(out: ReorderOutput<T>, firstMissing: number): void {
    let missing = firstMissing;
    while (this.next !== null && this.waiting.has(this.next)) {
      const seq = this.next;
      out.ready.push({ item: this.waiting.get(seq)!, seq, missingBefore: missing });
      this.waiting.delete(seq);
      this.next = seq + 1;
      missing = 0;
    }
  }
}

/**
 * Cuts a byte stream into exact payloads of `size` bytes. Resampled agent audio comes out a sample longer
 * or shorter per 20 ms; providers (Vonage strictly, Twilio and Telnyx for clean marks) want whole frames.
 */
export class PayloadFramer {
  private buffer: Uint8Array;
  private fill = 0;

  constructor(readonly size: number) {
    this.buffer = new Uint8Array(size * 4);
  }

  push(bytes: Uint8Array): Uint8Array[] {
    if (this.fill + bytes.length > this.buffer.length) {
      const bigger = new Uint8Array(Math.max(this.buffer.length * 2, this.fill + bytes.length));
      bigger.set(this.buffer.subarray(0, this.fill));
      this.buffer = bigger;
    }
    this.buffer.set(bytes, this.fill);
    this.fill += bytes.length;
    const out: Uint8Array[] = [];
    let offset = 0;
    while (this.fill - offset >= this.size) {
      out.push(this.buffer.slice(offset, offset + this.size));
      offset += this.size;
    }
    if (offset > 0) {
      this.buffer.copyWithin(0, offset, this.fill);
      this.fill -= offset;
    }
    return out;
  }

  /** Bytes waiting for the rest of their payload. */
  get pending(): number {
    return this.fill;
  }

  /** The partial payload padded with `silence` to full size, or null when nothing waits. */
  flush(silence: number): Uint8Array | null {
    if (this.fill === 0) return null;
    const out = new Uint8Array(this.size).fill(silence);
    out.set(this.buffer.subarray(0, this.fill));
    this.fill = 0;
    return out;
  }

  clear(): void {
    this.fill = 0;
  }
}
