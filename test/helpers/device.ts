import { FRAME_MS, FRAME_SAMPLES, rmsDbfs } from '../../src/audio/format.js';
import type { AgentEvent } from '../../loadtest/caller.js';
import { WsCaller } from '../../loadtest/ws-caller.js';
import { TEST_API_KEY } from './server.js';

export interface TimedEvent {
  event: AgentEvent;
  atMs: number;
}

export interface AudioArrival {
  atMs: number;
  dbfs: number;
  samples: Int16Array;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A test device on /v1/ws that streams caller audio in real time and records everything it gets back. */
export class TestDevice {
  readonly events: TimedEvent[] = [];
  readonly audio: AudioArrival[] = [];
  private readonly caller: WsCaller;
  private next = 0;

  constructor(url: string, credential: string = TEST_API_KEY) {
    this.caller = new WsCaller(url, credential);
    this.caller.onEvent((event) => this.events.push({ event, atMs: performance.now() }));
    this.caller.onAudio((samples, atMs) => this.audio.push({ atMs, dbfs: rmsDbfs(samples), samples }));
  }

  connect(): Promise<void> {
    return this.caller.connect();
  }

  /** Send 16 kHz PCM in 20 ms frames at real-time pace; returns the send time of each frame. */
  async stream(pcm: Int16Array): Promise<number[]> {
    const times: number[] = [];
    if (this.next < performance.now() - 100) this.next = performance.now();
    for (let offset = 0; offset < pcm.length; offset += FRAME_SAMPLES) {
      const frame = new Int16Array(FRAME_SAMPLES);
      frame.set(pcm.subarray(offset, offset + FRAME_SAMPLES));
      this.next += FRAME_MS;
      const wait = this.next - performance.now();
      if (wait > 1) await sleep(wait);
      this.caller.sendFrame(frame);
      times.push(performance.now());
    }
    return times;
  }

  silence(ms: number): Promise<number[]> {
    return this.stream(new Int16Array(Math.round((ms / 1000) * 16000)));
  }

  /** Stream silence until `predicate` holds for an event (or throw after timeoutMs). */
  async silenceUntil(predicate: (event: AgentEvent) => boolean, timeoutMs = 15_000, since = 0): Promise<AgentEvent> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.events.find((e) => e.atMs >= since && predicate(e.event));
      if (found) return found.event;
      if (performance.now() > deadline) throw new Error(`timed out; events: ${this.events.map((e) => e.event.type).join(', ')}`);
      await this.silence(FRAME_MS * 5);
    }
  }

  eventsOf(type: string, since = 0): AgentEvent[] {
    return this.events.filter((e) => e.atMs >= since && e.event.type === type).map((e) => e.event);
  }

  close(): Promise<void> {
    return this.caller.close();
  }
}
