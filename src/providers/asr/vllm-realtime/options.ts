/** `providers.asr` with provider "vllm-realtime": the options it accepts and their defaults. */
import { common, defaultsOf, t, type Static } from '../../../core/options.js';
import { FAILOVER_OPTIONS } from '../../remote-options.js';

export const VLLM_REALTIME_OPTIONS = t.object(
  {
    /** e.g. "ws://gpu-host:8000/v1/realtime"; or several in `urls` (failover, docs/gpu.md). */
    url: t.optional(common.wsUrl),
    urls: t.optional(t.array(common.wsUrl, { minItems: 1 })),
    failover: t.optional(FAILOVER_OPTIONS),
    /** Silence sent after the caller's audio before the final commit, so the model's last window is whole. */
    trailingSilenceMs: t.default(common.ms(), 500),
    /** Served model name sent in session.update, e.g. "mistralai/Voxtral-Mini-4B-Realtime-2602". */
    model: t.text(),
    /** Sent as "Authorization: Bearer …" (vLLM's --api-key, or this service's API key in asr-server mode). */
    apiKey: t.optional(t.text()),
    /** Languages the served model recognises (default: Voxtral's 13); "*" for any. */
    languages: t.optional(t.array(t.anyOf(common.langTag, t.literal('*')), { minItems: 1 })),
    /** WebSocket open + session.created. */
    connectTimeoutMs: t.default(common.ms(1), 5000),
    /** Final commit → transcription.done. */
    finalTimeoutMs: t.default(common.ms(1), 5000),
  },
  { anyOf: [{ required: ['url'] }, { required: ['urls'] }] },
);
export type VllmRealtimeSettings = Static<typeof VLLM_REALTIME_OPTIONS>;
export const VLLM_REALTIME_DEFAULTS = defaultsOf(VLLM_REALTIME_OPTIONS);
