import { FRAME_SAMPLES } from '../../audio/format.js';
import { MediaClock, type MediaClockMember } from '../media-clock.js';
import type { AudioSource } from './wrtc.js';

/** libwebrtc's audio sources take 10 ms per onData call (the period of the clock this stream runs on). */
export const CHUNK_MS = 10;
const CHUNK_SAMPLES = FRAME_SAMPLES / 2; // 10 ms at 16 kHz
const SAMPLE_RATE = 16_000;
/** Agent audio waiting for its slot beyond this is dropped (the session paces ~40 ms ahead; more is a stall). */
const MAX_QUEUED_CHUNKS = 30;
/** After an event-loop stall longer than this, skip ahead instead of bursting the backlog of silence. */
const MAX_CATCH_UP_CHUNKS = 10;
const SILENCE = new Int16Array(CHUNK_SAMPLES);

/** Every peer's outbound stream runs on this one clock, one chunk per tick (per-peer timers would cost more). */
export const webrtcClock = new MediaClock(CHUNK_MS);

/**
 * One peer's outbound audio as a continuous real-time stream: agent audio when there is some, silence
 * otherwise. A gap-free stream keeps RTP timestamps in step with wall time, so the browser's jitter buffer
 * does not grow after each pause in the agent's speech.
 */
export class OutboundStream implements MediaClockMember {
  private readonly queue: Int16Array[] = [];
  /** 10 ms chunks of agent audio dropped because the queue overflowed. */
  dropped = 0;

  constructor(
    private readonly source: AudioSource,
    /** The stream failed and left the media clock (the peer logs it with its call id). */
    readonly onError: (err: unknown) => void,
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

  /** One 10 ms tick of the WebRTC media clock: send the `due` chunks (one, or the skipped-ahead stall's last). */
  tick(due: number): void {
    for (let n = due > MAX_CATCH_UP_CHUNKS ? 1 : due; n > 0; n--) {
      const samples = this.queue.shift() ?? SILENCE;
      this.source.onData({ samples, sampleRate: SAMPLE_RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: CHUNK_SAMPLES });
    }
  }
}
