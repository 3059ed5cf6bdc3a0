/** `providers.asr` with provider "openai-batch": the options it accepts and their defaults. */
import { common, defaultsOf, t, type Static } from '../../../core/options.js';

export const OPENAI_BATCH_OPTIONS = t.object({
  /** e.g. "http://gpu-host:8000/v1" (the path that holds /audio/transcriptions). */
  baseUrl: common.httpUrl,
  model: t.text(),
  apiKey: t.optional(t.text()),
  /** Languages the model recognises (default "*": Whisper and Voxtral detect). */
  languages: t.optional(t.array(t.anyOf(common.langTag, t.literal('*')), { minItems: 1 })),
  /** Per attempt, upload to answer. */
  timeoutMs: t.default(common.ms(1), 15_000),
  /** Extra attempts on connection errors, 429 and 5xx. */
  retries: t.default(t.integer(0, 10), 1),
  /**
   * 'verbose_json' also returns the detected language (Whisper-style servers). vLLM refuses it for models without
   * segment timestamps (Voxtral): it is not sent for a Voxtral model, and a server that refuses it with HTTP 400 is
   * asked again in 'json' (and from then on).
   */
  responseFormat: t.default(t.enum(['json', 'verbose_json']), 'json'),
});
export type OpenAiBatchSettings = Static<typeof OPENAI_BATCH_OPTIONS>;
export const OPENAI_BATCH_DEFAULTS = defaultsOf(OPENAI_BATCH_OPTIONS);
