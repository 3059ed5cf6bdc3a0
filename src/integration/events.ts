/** What a call's tools did, as webhook events: a decorator around the call's tool executor. */
import { jsonOrText } from '../core/guards.js';
import type { ToolExecutor } from '../session/reply.js';
import type { WebhookEventType } from './webhooks.js';
import type { Handover } from './handover.js';

export type EventSink = (type: WebhookEventType, data: Record<string, unknown>) => void;

/**
 * Every executed tool call → `tool.executed` (name, masked arguments, ok or the error, how long). Sensitive
 * arguments are masked as in the call record; tool results stay out (they may hold what the operator's own
 * systems returned, which they already have). The transfer itself (`call.transfer`) is sent once the agent's
 * last words played and the call is handed over (handoverEvent).
 */
export function observedTools(inner: ToolExecutor, emit: EventSink): ToolExecutor {
  return {
    definitions: () => inner.definitions(),
    ...(inner.maskArguments ? { maskArguments: (call) => inner.maskArguments?.(call) ?? call.arguments } : {}),
    ...(inner.mayHold ? { mayHold: (call) => inner.mayHold?.(call) ?? false } : {}),
    async execute(call, ctx) {
      const started = performance.now();
      const result = await inner.execute(call, ctx);
      const error = errorOf(result.content);
      emit('tool.executed', {
        name: call.name,
        tool_call_id: call.id,
        arguments: jsonOrText(inner.maskArguments?.(call) ?? call.arguments),
        ok: error === undefined,
        ...(error !== undefined ? { error } : {}),
        ms: Math.round(performance.now() - started),
        ...(result.action ? { action: result.action } : {}),
      });
      return result;
    },
  };
}

/** `call.transfer`'s data: where the caller goes and the context a person needs. */
export function handoverEvent(handover: Handover): Record<string, unknown> {
  const { facts } = handover;
  return {
    queue: handover.queue,
    reason: handover.reason ?? null,
    target: handover.target ?? null,
    summary: handover.summary,
    language: facts.language,
    intents: facts.intents,
    slots: facts.slots,
    not_understood: facts.notUnderstood,
    caller: facts.caller,
  };
}

function errorOf(content: string): string | undefined {
  const parsed = jsonOrText(content);
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) return undefined;
  const e = (parsed as Record<string, unknown>).error;
  return e === undefined ? undefined : String(e);
}
