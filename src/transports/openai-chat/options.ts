/** The `chatCompletions` section (this service's own agent served on `POST /v1/chat/completions`): options and defaults. */
import type { TransportDescription } from '../kit/describe.js';
import { defaultsOf, t, type Resolved } from '../../core/options.js';

export const CHAT_COMPLETIONS_OPTIONS = t.object({
  /** Off by default: the route is not registered at all. */
  enabled: t.default(t.boolean(), false),
  /** The model name clients ask for; any other gets 404 model_not_found. */
  model: t.default(t.text(), 'voice-agent'),
});
export type ChatCompletionsConfig = Resolved<typeof CHAT_COMPLETIONS_OPTIONS>;
export const CHAT_COMPLETIONS_DEFAULTS: ChatCompletionsConfig = defaultsOf(CHAT_COMPLETIONS_OPTIONS);

/** Text only: the agent behind an OpenAI-compatible chat completions API. */
export const describeChatCompletions = (chat: ChatCompletionsConfig): TransportDescription => ({
  name: 'chat-completions',
  door: 'POST /v1/chat/completions',
  enabled: chat.enabled,
  audio: [],
  control: 'OpenAI chat completions (streaming and not)',
});
