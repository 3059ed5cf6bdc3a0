/**
 * The one internal audio format: mono signed 16-bit PCM at 16 kHz, cut into 20 ms frames.
 * Every transport converts to this at its edge; every stage and provider consumes and produces it.
 */
export const INTERNAL_SAMPLE_RATE = 16_000;
export const FRAME_MS = 20;
export const FRAME_SAMPLES = (INTERNAL_SAMPLE_RATE * FRAME_MS) / 1000; // 320
export const FRAME_BYTES = FRAME_SAMPLES * 2; // 640

/** One 20 ms frame of caller or agent audio, stamped so latency can be measured end to end. */
export interface AudioFrame {
  /** Exactly FRAME_SAMPLES mono PCM16 samples at INTERNAL_SAMPLE_RATE. */
  readonly samples: Int16Array;
  /**
   * When this frame's audio reached the server edge (inbound) or was produced (outbound),
   * in milliseconds on the monotonic clock `performance.now()`.
   */
  readonly timestampMs: number;
  /** Monotonic frame counter within one direction of one call. */
  readonly seq: number;
}

/** Milliseconds of audio in a PCM16 buffer of `samples` samples at `rate`. */
export function durationMs(samples: number, rate = INTERNAL_SAMPLE_RATE): number {
  return (samples * 1000) / rate;
}

/** Root-mean-square level of PCM16 samples in dBFS (-Infinity for digital silence). */
export function rmsDbfs(samples: Int16Array): number {
  if (samples.length === 0) return -Infinity;
  let sum = 0;
  for (let i = 0; i < samples.length; i++) {
    const s = samples[i] / 32768;
    sum += s * s;
  }
  const rms = Math.sqrt(sum / samples.length);
  return rms === 0 ? -Infinity : 20 * Math.log10(rms);
}
