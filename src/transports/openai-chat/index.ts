/**
 * `POST /v1/chat/completions`: this service's own configured LLM (by default the rule-based agent) behind the
 * OpenAI chat-completions API, streaming (SSE) or not, with tool calls — so another instance, or any
 * OpenAI-compatible client, can use it as its brain. Off unless `chatCompletions.enabled`; API key or session
 * token required like every other entry point.
 *
 * Tools are the caller's: the model may only call tools the request declares (a call to another one is dropped
 * and logged), and the caller runs them and sends the result back as a `tool` message, as with any OpenAI server.
 * The request has no language field in the OpenAI API; this service reads an optional `language` extension, else
 * lets the rule agent pick the language whose phrases match the last user message best, else uses
 * `agent.defaultLanguage`.
 */
import { randomUUID } from 'node:crypto';
import type { FastifyError, FastifyPluginAsync, FastifyReply } from 'fastify';
import { requireApiKey } from '../../auth/plugin.js';
import type { ChatMessage, LlmEvent, LlmProvider, ToolCall, ToolDefinition } from '../../providers/llm/types.js';
import type { VoiceService } from '../../service.js';

export interface ChatCompletionsOptions {
  service: VoiceService;
}

interface WireToolCall {
  id: string;
  type: 'function';
  function: { name: string; arguments: string };
}

interface WireMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool';
  content?: string | null | Array<{ type: string; text?: string }>;
  tool_calls?: WireToolCall[];
  tool_call_id?: string;
}

interface ChatRequestBody {
  model: string;
  messages: WireMessage[];
  tools?: Array<{ type: 'function'; function: { name: string; description?: string; parameters?: Record<string, unknown> } }>;
  tool_choice?: unknown;
  stream?: boolean;
  stream_options?: { include_usage?: boolean };
  n?: number;
  /** Extension: the caller's language (BCP-47). */
  language?: string;
}

const textContent = { anyOf: [{ type: 'string' }, { type: 'null' }, { type: 'array', items: { type: 'object', required: ['type'], properties: { type: { type: 'string' }, text: { type: 'string' } } } }] };

const bodySchema = {
  type: 'object',
  required: ['model', 'messages'],
  properties: {
    model: { type: 'string', minLength: 1 },
    messages: {
      type: 'array',
      minItems: 1,
      maxItems: 500,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: textContent,
          tool_call_id: { type: 'string' },
          tool_calls: {
            type: 'array',
            items: {
              type: 'object',
              required: ['id', 'function'],
              properties: {
                id: { type: 'string' },
                type: { const: 'function' },
                function: { type: 'object', required: ['name'], properties: { name: { type: 'string' }, arguments: { type: 'string' } } },
              },
            },
          },
        },
      },
    },
    tools: {
      type: 'array',
      maxItems: 128,
      items: {
        type: 'object',
        required: ['type', 'function'],
        properties: {
          type: { const: 'function' },
          function: {
            type: 'object',
            required: ['name'],
            properties: { name: { type: 'string', pattern: '^[A-Za-z0-9_-]{1,64}$' }, description: { type: 'string' }, parameters: { type: 'object' } },
          },
        },
      },
    },
    stream: { type: 'boolean' },
    stream_options: { type: 'object', properties: { include_usage: { type: 'boolean' } } },
    n: { type: 'integer', minimum: 1, maximum: 1 },
    temperature: { type: 'number', minimum: 0, maximum: 2 },
    max_tokens: { type: 'integer', minimum: 1 },
    max_completion_tokens: { type: 'integer', minimum: 1 },
    language: { type: 'string', pattern: '^[a-zA-Z]{2,3}([-_][A-Za-z0-9]+)*$' },
  },
} as const;

function openAiError(message: string, type: string, param?: string, code?: string): { error: Record<string, unknown> } {
  return { error: { message, type, param: param ?? null, code: code ?? null } };
}

function contentText(content: WireMessage['content']): string {
  if (typeof content === 'string') return content;
  if (Array.isArray(content)) return content.map((p) => (p.type === 'text' && typeof p.text === 'string' ? p.text : '')).join('');
  return '';
}

function toChatMessages(messages: readonly WireMessage[]): ChatMessage[] {
  return messages.map((m): ChatMessage => {
    const content = contentText(m.content);
    switch (m.role) {
      case 'developer':
        return { role: 'system', content };
      case 'assistant':
        return m.tool_calls && m.tool_calls.length > 0
          ? { role: 'assistant', content, toolCalls: m.tool_calls.map((c) => ({ id: c.id, name: c.function.name, arguments: c.function.arguments ?? '' })) }
          : { role: 'assistant', content };
      case 'tool':
        return { role: 'tool', content, toolCallId: m.tool_call_id ?? '' };
      default:
        return { role: m.role, content };
    }
  });
}

/** The request's language: explicit, else the one the agent detects in the caller's last words, else the default. */
function pickLanguage(body: ChatRequestBody, messages: readonly ChatMessage[], llm: LlmProvider, fallback: string): string {
  if (body.language) return body.language.toLowerCase().replace('_', '-');
  const utterance = [...messages].reverse().find((m) => m.role === 'user')?.content;
  return (utterance && llm.detectLanguage?.(utterance)) || fallback;
}

/** Rough token count for `usage` (the rule agent has no tokenizer): ~4 characters a token. */
const approxTokens = (text: string): number => Math.ceil(text.length / 4);

export const chatCompletionsRoutes: FastifyPluginAsync<ChatCompletionsOptions> = async (app, { service }) => {
  const settings = service.config.chatCompletions;
  if (!settings?.enabled) return;

  // OpenAI-shaped errors for schema failures, so OpenAI clients show the real reason.
  app.setErrorHandler((err: FastifyError, _request, reply) => {
    if (err.validation) return reply.code(400).send(openAiError(`invalid request: ${err.message}`, 'invalid_request_error'));
    const status = err.statusCode && err.statusCode >= 400 ? err.statusCode : 500;
    return reply.code(status).send(openAiError(status === 500 ? 'internal error' : err.message, status === 500 ? 'server_error' : 'invalid_request_error'));
  });

  // Server-to-server: an API key, not a session token (those are given to browsers, demo pages included).
  app.get('/v1/models', { preValidation: requireApiKey(service.auth) }, async () => ({
    object: 'list',
    data: [{ id: settings.model, object: 'model', created: 0, owned_by: 'voice-agent' }],
  }));

  app.post('/v1/chat/completions', { preValidation: requireApiKey(service.auth), schema: { body: bodySchema } }, async (request, reply) => {
    const body = request.body as ChatRequestBody;
    if (!service.ready) return reply.code(503).send(openAiError(`service not ready (${service.state})`, 'server_error'));
    if (body.model !== settings.model) {
      return reply.code(404).send(openAiError(`The model \`${body.model.slice(0, 100)}\` does not exist. This server serves \`${settings.model}\`.`, 'invalid_request_error', 'model', 'model_not_found'));
    }
    const llm = service.providers.llm;
    const messages = toChatMessages(body.messages);
    const toolChoiceNone = body.tool_choice === 'none';
    const tools: ToolDefinition[] = toolChoiceNone
      ? []
      : (body.tools ?? []).map((t) => ({ name: t.function.name, description: t.function.description ?? '', parameters: t.function.parameters ?? { type: 'object', properties: {} } }));
    const declared = new Set(tools.map((t) => t.name));
    const language = pickLanguage(body, messages, llm, service.config.agent.defaultLanguage);
    const id = `chatcmpl-${randomUUID()}`;
    const created = Math.floor(Date.now() / 1000);
    const log = request.log.child({ completionId: id });

    const aborter = new AbortController();
    reply.raw.on('close', () => {
      if (!reply.raw.writableFinished) aborter.abort();
    });
    const events = llm.stream({ messages, tools, language, signal: aborter.signal });
    const admit = (call: ToolCall): boolean => {
      if (declared.has(call.name)) return true;
      log.warn({ tool: call.name }, 'model called a tool the request did not declare; dropped');
      return false;
    };
    const promptTokens = approxTokens(messages.map((m) => m.content).join(' '));
    return body.stream
      ? streamCompletion(reply, events, { id, created, model: settings.model, admit, promptTokens, includeUsage: body.stream_options?.include_usage === true, log })
      : wholeCompletion(reply, events, { id, created, model: settings.model, admit, promptTokens, log });
  });
};

interface CompletionContext {
  id: string;
  created: number;
  model: string;
  admit: (call: ToolCall) => boolean;
  promptTokens: number;
  log: { error: (obj: object, msg: string) => void };
}

type FinishReason = 'stop' | 'tool_calls' | 'length';

function finishOf(event: Extract<LlmEvent, { type: 'done' }>, calls: number): FinishReason {
  if (calls > 0) return 'tool_calls';
  return event.finishReason === 'length' ? 'length' : 'stop';
}

async function wholeCompletion(reply: FastifyReply, events: AsyncIterable<LlmEvent>, ctx: CompletionContext): Promise<FastifyReply> {
  let text = '';
  const calls: ToolCall[] = [];
  let finish: FinishReason = 'stop';
  try {
    for await (const event of events) {
      if (event.type === 'text') text += event.text;
      else if (event.type === 'tool_call') {
        if (ctx.admit(event.call)) calls.push(event.call);
      } else if (event.type === 'done') finish = finishOf(event, calls.length);
    }
  } catch (err) {
    ctx.log.error({ err }, 'chat completion failed');
    return reply.code(502).send(openAiError(`the model failed: ${(err as Error).message}`, 'server_error'));
  }
  const completionTokens = approxTokens(text + calls.map((c) => c.arguments).join(''));
  return reply.send({
    id: ctx.id,
    object: 'chat.completion',
    created: ctx.created,
    model: ctx.model,
    choices: [
      {
        index: 0,
        message: {
          role: 'assistant',
          content: calls.length > 0 && text === '' ? null : text,
          ...(calls.length > 0 ? { tool_calls: calls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })) } : {}),
        },
        finish_reason: calls.length > 0 ? 'tool_calls' : finish,
      },
    ],
    usage: { prompt_tokens: ctx.promptTokens, completion_tokens: completionTokens, total_tokens: ctx.promptTokens + completionTokens },
  });
}

async function streamCompletion(
  reply: FastifyReply,
  events: AsyncIterable<LlmEvent>,
  ctx: CompletionContext & { includeUsage: boolean },
): Promise<void> {
  reply.hijack();
  const res = reply.raw;
  let headSent = false;
  const write = (payload: unknown): void => {
    if (!headSent) {
      headSent = true;
      res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive', 'x-accel-buffering': 'no' });
    }
    if (!res.writableEnded) res.write(`data: ${typeof payload === 'string' ? payload : JSON.stringify(payload)}\n\n`);
  };
  const chunk = (delta: Record<string, unknown>, finish: FinishReason | null = null): Record<string, unknown> => ({
    id: ctx.id,
    object: 'chat.completion.chunk',
    created: ctx.created,
    model: ctx.model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  });
  let calls = 0;
  let produced = '';
  try {
    write(chunk({ role: 'assistant', content: '' }));
    for await (const event of events) {
      if (event.type === 'text') {
        produced += event.text;
        write(chunk({ content: event.text }));
      } else if (event.type === 'tool_call') {
        if (!ctx.admit(event.call)) continue;
        produced += event.call.arguments;
        write(chunk({ tool_calls: [{ index: calls++, id: event.call.id, type: 'function', function: { name: event.call.name, arguments: event.call.arguments } }] }));
      } else if (event.type === 'done') {
        write(chunk({}, finishOf(event, calls)));
      }
    }
    if (ctx.includeUsage) {
      const completionTokens = approxTokens(produced);
      write({ id: ctx.id, object: 'chat.completion.chunk', created: ctx.created, model: ctx.model, choices: [], usage: { prompt_tokens: ctx.promptTokens, completion_tokens: completionTokens, total_tokens: ctx.promptTokens + completionTokens } });
    }
    write('[DONE]');
  } catch (err) {
    ctx.log.error({ err }, 'chat completion stream failed');
    // Mid-stream: the status is already 200, so the error travels as an event (as vLLM does).
    write(openAiError(`the model failed: ${(err as Error).message}`, 'server_error'));
  } finally {
    res.end();
  }
}
