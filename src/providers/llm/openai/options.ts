/** `providers.llm` with provider "openai" (any OpenAI-compatible chat-completions server): options and defaults. */
import { common, defaultsOf, t, type Static } from '../../../core/options.js';
import { ONE_BASE_URL, REMOTE_ENDPOINT } from '../../remote-options.js';

export const OPENAI_LLM_OPTIONS = t.object(
  {
    ...REMOTE_ENDPOINT,
    temperature: t.optional(t.number(0, 2)),
    maxTokens: t.optional(t.integer(1)),
    /** Connect / first-byte timeout per attempt. */
    timeoutMs: t.default(common.ms(1), 10_000),
    /** Longest silence allowed between stream chunks once bytes flow. */
    idleTimeoutMs: t.default(common.ms(1), 30_000),
    /** Extra attempts, only before any token was yielded, for connection errors / 429 / 5xx. */
    retries: t.default(t.integer(0, 10), 2),
    /** First backoff delay, doubled per attempt. */
    retryBaseDelayMs: t.default(common.ms(), 250),
    /** Headers sent with every request (a gateway's own key or routing header). */
    extraHeaders: t.optional(t.record(t.string())),
  },
  ONE_BASE_URL,
);
export type OpenAiLlmSettings = Static<typeof OPENAI_LLM_OPTIONS>;
export const OPENAI_LLM_DEFAULTS = defaultsOf(OPENAI_LLM_OPTIONS);
