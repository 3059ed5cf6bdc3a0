import { FRAME_SAMPLES } from '../../audio/format.js';
import type { AudioSource } from './wrtc.js';

/** libwebrtc's audio sources take 10 ms per onData call. */
export const CHUNK_MS = 10;
const CHUNK_SAMPLES = FRAME_SAMPLES / 2; // 10 ms at 16 kHz
const SAMPLE_RATE = 16_000;
/** Agent audio waiting for its slot beyond this is dropped (the session paces ~40 ms ahead; more is a stall). */
const MAX_QUEUED_CHUNKS = 30;
/** After an event-loop stall longer than this, skip ahead instead of bursting the backlog of silence. */
const MAX_CATCH_UP_CHUNKS = 10;
const SILENCE = new Int16Array(CHUNK_SAMPLES);

/**
 * One peer's outbound audio as a continuous real-time stream: agent audio when there is some, silence
 * otherwise. A gap-free stream keeps RTP timestamps in step with wall time, so the browser's jitter buffer
 * does not grow after each pause in the agent's speech.
 */
export class OutboundStream {
  private readonly queue: Int16Array[] = [];
  private startedAt = -1;
  private sent = 0;
  /** 10 ms chunks of agent audio dropped because the queue overflowed. */
  dropped = 0;

  constructor(
    private readonly source: AudioSource,
    /** The stream failed and left the media clock (the peer logs it with its call id). */
    readonly onError: (err: unknown) => void = () => {},
  ) {}

  /** One 20 ms frame of 16 kHz agent audio, already paced by the session. */
  push(frame: Int16Array): void {
    for (let off = 0; off < frame.length; off += CHUNK_SAMPLES) {
      const chunk = new Int16Array(CHUNK_SAMPLES);
      chunk.set(frame.subarray(off, off + CHUNK_SAMPLES));
      this.queue.push(chunk);
    }
    while (this.queue.length > MAX_QUEUED_CHUNKS) {
      this.queue.shift();
      this.dropped++;
    }
  }

  /** Drop agent audio not yet sent (barge-in). */
  clear(): void {
    this.queue.length = 0;
  }

  /** Ms of agent audio waiting for its slot. */
  get queuedMs(): number {
    return this.queue.length * CHUNK_MS;
  }

  /** Send every chunk due by `now`. */
  pump(now: number): void {
    if (this.startedAt < 0) this.startedAt = now;
    let due = Math.floor((now - this.startedAt) / CHUNK_MS) - this.sent;
    if (due > MAX_CATCH_UP_CHUNKS) {
      this.sent += due - 1;
      due = 1;
    }
    for (; due > 0; due--) {
      const samples = this.queue.shift() ?? SILENCE;
      this.source.onData({ samples, sampleRate: SAMPLE_RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: CHUNK_SAMPLES });
      this.sent++;
    }
  }
}

/** One timer drives every peer's outbound stream (hundreds of per-peer 10 ms timers would cost more). */
class MediaClock {
  private readonly streams = new Set<OutboundStream>();
  private timer: NodeJS.Timeout | null = null;

  add(stream: OutboundStream): void {
    this.streams.add(stream);
    stream.pump(performance.now());
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), CHUNK_MS / 2);
      this.timer.unref();
    }
  }

  delete(stream: OutboundStream): void {
    this.streams.delete(stream);
    if (this.streams.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = null;
    }
  }

  private tick(): void {
    const now = performance.now();
    for (const stream of this.streams) {
      try {
        stream.pump(now);
      } catch (err) {
        // A source whose peer just closed, or a broken one: drop it and say so; never let one peer stop the others.
        this.delete(stream);
        stream.onError(err);
      }
    }
  }
}

export const mediaClock = new MediaClock();
