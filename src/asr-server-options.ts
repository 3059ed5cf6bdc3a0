/** The `asrServer` section (`asr-server` mode, src/asr-server.ts: the configured ASR under vLLM's realtime protocol). */
import { common, defaultsOf, t, type Resolved } from './core/options.js';

export const ASR_SERVER_OPTIONS = t.object({
  /** WebSocket path of the realtime endpoint. */
  path: t.default(t.string({ pattern: '^/[A-Za-z0-9/_.-]*$' }), '/v1/realtime'),
  /** Model name clients ask for. */
  model: t.default(t.text(), 'pocketsphinx-en-us'),
  maxSessions: t.default(t.integer(1), 64),
  /** Longest utterance transcribed in one piece. */
  maxUtteranceMs: t.default(common.ms(1000), 60_000),
});
export type AsrServerConfig = Resolved<typeof ASR_SERVER_OPTIONS>;
export const ASR_SERVER_DEFAULTS: AsrServerConfig = defaultsOf(ASR_SERVER_OPTIONS);
