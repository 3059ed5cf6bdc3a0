import type { ChatMessage } from '../providers/llm/types.js';

/**
 * How much of the conversation a model is sent each turn (declared in ./options.ts, `agent.contextWindow`). The
 * conversation itself (Session.history, the transcript) is never cut: only the request is.
 */
export { DEFAULT_CONTEXT_WINDOW, type ContextWindow } from './options.js';
import type { ContextWindow } from './options.js';

/**
 * The leading system message(s) and the most recent messages that fit the window. The window starts on a
 * caller turn, so no answer or tool result is sent without what asked for it.
 */
export function windowed(messages: readonly ChatMessage[], window: ContextWindow): readonly ChatMessage[] {
  let head = 0;
  while (head < messages.length && messages[head].role === 'system') head++;
  const rest = messages.length - head;
  const maxMessages = window.maxMessages > 0 ? window.maxMessages : Infinity;
  const maxChars = window.maxChars > 0 ? window.maxChars : Infinity;
  let start = Math.max(head, messages.length - maxMessages);
  let chars = 0;
  for (let i = start; i < messages.length; i++) chars += messages[i].content.length;
  while (start < messages.length - 1 && chars > maxChars) chars -= messages[start++].content.length;
  if (start === head && rest <= maxMessages) return messages;
  // Move forward to a caller turn; when the window holds none (one long tool round), back to the last one.
  let from = start;
  while (from < messages.length && messages[from].role !== 'user') from++;
  if (from === messages.length) {
    from = start;
    while (from > head && messages[from].role !== 'user') from--;
  }
  if (from === head) return messages;
  return [...messages.slice(0, head), ...messages.slice(from)];
}
