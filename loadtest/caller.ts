/**
 * A load-test caller is one transport's client: it sends caller audio (internal 16 kHz PCM16 frames) and
 * reports agent audio and agent events back. One module per transport implements this.
 */
export interface AgentEvent {
  type: string;
  [key: string]: unknown;
}

export interface LoadCaller {
  /** Connect and wait until the service has started the session. */
  connect(): Promise<void>;
  /** One 20 ms frame of 16 kHz mono PCM16 caller audio. */
  sendFrame(samples: Int16Array): void;
  /** Agent audio as 16 kHz mono PCM16, with its arrival time (performance.now()). */
  onAudio(listener: (samples: Int16Array, arrivalMs: number) => void): void;
  /** Agent events (the device protocol's vocabulary). */
  onEvent(listener: (event: AgentEvent) => void): void;
  close(): Promise<void>;
}
