import type { ProviderCapabilities } from '../capabilities.js';
/** Voice activity detection: speech probability per 20 ms internal frame. */
export interface VadProvider {
  readonly name: string;
  /** Where its work runs and whether results stream (src/providers/capabilities.ts). */
  readonly capabilities: ProviderCapabilities;
  /** Load weights; resolves once the provider can create streams. Idempotent. */
  load(): Promise<void>;
  /** One stream per call: holds the model's recurrent state for that caller. */
  createStream(): VadStream;
  /** Free the model (service shutdown); streams must not be used afterwards. */
  close?(): Promise<void>;
}

export interface VadStream {
  /**
   * Feed one internal frame (FRAME_SAMPLES samples, 16 kHz PCM16) and get the current speech
   * probability in [0, 1]. Calls must be awaited in order; the stream buffers internally when the
   * model's window is not a multiple of 20 ms.
   */
  process(frame: Int16Array): Promise<number>;
  /** Forget the recurrent state (e.g. after a long pause). */
  reset(): void;
  close(): void;
}

/** How the VAD's windows were batched since start (SileroVad): windows / runs is the mean batch. */
export interface VadBatchStats {
  /** Inferences run, each over every window that was ready. */
  runs: number;
  windows: number;
  maxBatchSize: number;
  /** Wall time of the runs, as the event loop saw them (in the worker: the round trip). */
  totalRunMs: number;
  /** Windows of any stream not run at all: quiet, well into a silence (SileroVadStream). */
  skippedQuietWindows: number;
  /** Whether the VAD is behind real time now (answers took a window's length or more for 200 ms; SileroBatcher). */
  behind: boolean;
  /** Times it fell behind, and the total time it stayed behind (ms), since start. */
  behindEpisodes: number;
  behindMs: number;
}

/** Since load, what a VAD running its model in a worker thread reports to /metrics (src/providers/vad/metrics.ts). */
export interface VadWorkerStats {
  /** Workers started after the first (after a death or a hang). */
  restarts: number;
  /** Workers that exited or failed. */
  deaths: number;
  /** Workers that held a batch past the deadline and were replaced. */
  hangs: number;
  /** Workers kept dying or hanging: the model runs on the event loop's thread. */
  onMainThread: boolean;
}
