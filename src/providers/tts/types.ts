import type { ProviderCapabilities } from '../capabilities.js';
/** Streaming text-to-speech. The session feeds it one clause or sentence at a time. */
export interface TtsProvider {
  readonly name: string;
  /** Where its work runs and whether results stream (src/providers/capabilities.ts). */
  readonly capabilities: ProviderCapabilities;
  /** BCP-47 primary language tags this provider has a voice for. */
  readonly languages: readonly string[];
  load(): Promise<void>;
  /**
   * Synthesize `text` in `language`, yielding 16 kHz mono PCM16 chunks as soon as each exists
   * (any length; the session re-frames to 20 ms). Stops promptly when `signal` aborts.
   */
  synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array>;
  close?(): Promise<void>;
}

export interface TtsOptions {
  language: string;
  /** Provider-specific voice name; the provider's default voice for the language otherwise. */
  voice?: string;
  signal?: AbortSignal;
}
