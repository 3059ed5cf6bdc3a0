/**
 * `providers`: each stage's block is the union of its providers' own options declarations (each in the
 * provider's folder), picked by `provider`.
 */
import { providerUnion, t, type Static } from '../core/options.js';
import { OPENAI_BATCH_OPTIONS } from './asr/openai-batch/options.js';
import { POCKETSPHINX_OPTIONS } from './asr/pocketsphinx/options.js';
import { VLLM_REALTIME_OPTIONS } from './asr/vllm-realtime/options.js';
import { LLAMACPP_OPTIONS } from './llm/llamacpp/options.js';
import { OPENAI_LLM_OPTIONS } from './llm/openai/options.js';
import { RULES_OPTIONS } from './llm/rules/options.js';
import { EMBEDDED_TTS_OPTIONS } from './tts/embedded-options.js';
import { OPENAI_SPEECH_OPTIONS } from './tts/openai-speech/options.js';
import { SILERO_OPTIONS } from './vad/silero/options.js';

export const VAD_OPTIONS = providerUnion({ silero: SILERO_OPTIONS });
export const ASR_OPTIONS = providerUnion({ pocketsphinx: POCKETSPHINX_OPTIONS, 'vllm-realtime': VLLM_REALTIME_OPTIONS, 'openai-batch': OPENAI_BATCH_OPTIONS });
export const LLM_OPTIONS = providerUnion({ rules: RULES_OPTIONS, openai: OPENAI_LLM_OPTIONS, llamacpp: LLAMACPP_OPTIONS });
export const TTS_OPTIONS = providerUnion({
  auto: EMBEDDED_TTS_OPTIONS,
  svoxpico: EMBEDDED_TTS_OPTIONS,
  espeak: EMBEDDED_TTS_OPTIONS,
  'openai-speech': OPENAI_SPEECH_OPTIONS,
});
export const PROVIDERS_OPTIONS = t.object({ vad: VAD_OPTIONS, asr: ASR_OPTIONS, llm: LLM_OPTIONS, tts: TTS_OPTIONS });

export type VadProviderConfig = Static<typeof VAD_OPTIONS>;
export type AsrProviderConfig = Static<typeof ASR_OPTIONS>;
export type LlmProviderConfig = Static<typeof LLM_OPTIONS>;
export type TtsProviderConfig = Static<typeof TTS_OPTIONS>;
