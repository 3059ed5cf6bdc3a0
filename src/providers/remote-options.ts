/** Options shared by the remote stages (OpenAI-compatible servers, vLLM realtime): several URLs and failover. */
import { common, t } from '../core/options.js';

/** Several URLs for one remote stage (src/providers/backends.ts): 'ordered' (default) or 'round-robin'; a failed URL rests `downMs`. */
export const FAILOVER_OPTIONS = t.object({
  strategy: t.optional(t.enum(['ordered', 'round-robin'])),
  downMs: t.optional(t.integer(0)),
});

/** An OpenAI-compatible server (or several in `baseUrls`, with failover) and the model asked for there. */
export const REMOTE_ENDPOINT = {
  /** e.g. "http://127.0.0.1:8000/v1" (the path that holds the endpoint). */
  baseUrl: t.optional(common.httpUrl),
  /** More servers of the same model, tried in turn when one fails (docs/gpu.md). */
  baseUrls: t.optional(t.array(common.httpUrl, { minItems: 1 })),
  failover: t.optional(FAILOVER_OPTIONS),
  model: t.text(),
  /** Sent as "Authorization: Bearer …". */
  apiKey: t.optional(t.text()),
};
/** One of `baseUrl` / `baseUrls` is required. */
export const ONE_BASE_URL = { anyOf: [{ required: ['baseUrl'] }, { required: ['baseUrls'] }] };
