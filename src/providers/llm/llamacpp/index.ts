/**
 * In-process GGUF inference with node-llama-cpp v3 (CPU or GPU).
 *
 * The model and one context stay loaded ("warm"). The context has `sequences` slots; each stream()
 * takes a slot exclusively for its whole generation and gives it back afterwards, so concurrent
 * calls queue instead of corrupting each other's KV state. A slot keeps its KV cache between
 * turns, and LlamaChat re-evaluates only the part of the history that changed.
 *
 * Tools are passed as node-llama-cpp "functions" (the chat wrapper documents them in the prompt and
 * constrains the call's arguments with a grammar); the generation stops at the call and we emit
 * `tool_call` + `done: tool_calls`, exactly like a server model. Schemas outside the supported JSON
 * Schema subset drop that one tool (logged); `tools: false` disables function calling entirely.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { existsSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import type { Logger } from 'pino';
import { LLAMACPP_DEFAULTS, type LlamaCppSettings } from './options.js';
import type {
  ChatHistoryItem,
  ChatModelFunctionCall,
  ChatModelFunctions,
  ChatModelResponse,
  GbnfJsonSchema,
  Llama,
  LlamaChat,
  LlamaContext,
  LlamaModel,
} from 'node-llama-cpp';
import type { ChatMessage, JsonSchema, LlmEvent, LlmProvider, LlmRequest, ToolDefinition } from '../types.js';
import { isRecord } from '../../../core/guards.js';

/** The options `providers.llm` declares for provider "llamacpp" (./options.ts), and a logger. */
export type LlamaCppLlmOptions = LlamaCppSettings & { logger?: Logger };

export interface LlamaLoadStats {
  /** getLlama(): binding load / GPU probe. */
  bindingMs: number;
  modelMs: number;
  contextMs: number;
  gpu: string | false;
}

type FinishReason = Extract<LlmEvent, { type: 'done' }>['finishReason'];

interface Slot {
  chat: LlamaChat;
}

/** Push-to-pull bridge from node-llama-cpp callbacks to an async iterator. */
class AsyncQueue<T> {
  private readonly items: T[] = [];
  private waiting: (() => void) | undefined;
  private ended = false;
  private error: unknown;
  private failed = false;

  push(item: T): void {
    this.items.push(item);
    this.wake();
  }
  end(): void {
    this.ended = true;
    this.wake();
  }
  fail(err: unknown): void {
    this.failed = true;
    this.error = err;
    this.wake();
  }
  private wake(): void {
    const w = this.waiting;
    this.waiting = undefined;
    w?.();
  }
  async *drain(): AsyncGenerator<T> {
    for (;;) {
      if (this.items.length > 0) {
        yield this.items.shift() as T;
        continue;
      }
      if (this.failed) throw this.error;
      if (this.ended) return;
      await new Promise<void>((resolve) => (this.waiting = resolve));
    }
  }
}

export class LlamaCppLlm implements LlmProvider {
  readonly name = 'llamacpp';

  /** On the GPU llama.cpp found (CUDA, Vulkan, Metal), else the CPU; before loading, what the options ask for. */
  get capabilities(): ProviderCapabilities {
    const gpu = this.llama ? this.llama.gpu !== false : (this.options.gpu ?? LLAMACPP_DEFAULTS.gpu) !== false;
    return { runsOn: [gpu ? 'gpu' : 'cpu'], streaming: true };
  }
  private llama: Llama | undefined;
  private model: LlamaModel | undefined;
  private context: LlamaContext | undefined;
  private readonly free: Slot[] = [];
  private readonly waiters: Array<{ resolve: (s: Slot) => void; reject: (e: unknown) => void }> = [];
  private loading: Promise<void> | undefined;
  private stats: LlamaLoadStats | undefined;
  private closed = false;
  private callSeq = 0;

  constructor(private readonly options: LlamaCppLlmOptions) {
    if (!options.modelPath) throw new Error('LlamaCppLlm: modelPath is required');
  }

  /** Timings of the last load() (undefined before). */
  get loadStats(): LlamaLoadStats | undefined {
    return this.stats;
  }

  load(): Promise<void> {
    this.loading ??= this.doLoad().catch(async (e: unknown) => {
      this.loading = undefined;
      await this.disposeAll();
      throw e;
    });
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    const { modelPath } = this.options;
    if (!existsSync(modelPath)) throw new Error(`LlamaCppLlm: model file not found: ${modelPath}`);
    const log = this.options.logger;
    // Imported lazily so the rules/openai providers never load the native addon.
    const { getLlama, LlamaChat: LlamaChatClass, LlamaLogLevel } = await import('node-llama-cpp');

    const t0 = performance.now();
    this.llama = await getLlama({
      gpu: this.options.gpu ?? LLAMACPP_DEFAULTS.gpu,
      // postinstall is disabled: never try to compile llama.cpp at runtime.
      build: 'never',
      logLevel: LlamaLogLevel.warn,
      logger: (level, message) => {
        const msg = message.trim();
        if (!msg || !log) return;
        if (level === LlamaLogLevel.error || level === LlamaLogLevel.fatal) log.error({ llama: true }, msg);
        else if (level === LlamaLogLevel.warn) log.warn({ llama: true }, msg);
        else log.debug({ llama: true }, msg);
      },
      // node-llama-cpp's CPU default is max(cores, 4): on a 2-core box 4 spinning threads made
      // decoding ~50x slower than 1 thread (measured). Never oversubscribe the cores.
      ...(this.options.threads !== undefined
        ? { maxThreads: this.options.threads }
        : (this.options.gpu ?? LLAMACPP_DEFAULTS.gpu) === false
          ? { maxThreads: availableParallelism() }
          : {}),
    });
    const t1 = performance.now();
    this.model = await this.llama.loadModel({ modelPath });
    const t2 = performance.now();
    const sequences = Math.max(1, this.options.sequences ?? LLAMACPP_DEFAULTS.sequences);
    this.context = await this.model.createContext({ contextSize: this.options.contextSize ?? LLAMACPP_DEFAULTS.contextSize, sequences });
    const t3 = performance.now();
    for (let i = 0; i < sequences; i++) {
      this.free.push({ chat: new LlamaChatClass({ contextSequence: this.context.getSequence(), autoDisposeSequence: true }) });
    }
    this.stats = { bindingMs: t1 - t0, modelMs: t2 - t1, contextMs: t3 - t2, gpu: this.llama.gpu };
    log?.info(
      { ...this.stats, modelPath, contextSize: this.context.contextSize, sequences, chatWrapper: this.free[0]?.chat.chatWrapper.wrapperName },
      'llama.cpp model loaded',
    );
  }

  async *stream(request: LlmRequest): AsyncGenerator<LlmEvent> {
    if (this.closed) throw new Error('LlamaCppLlm: closed');
    await this.load();
    const { signal } = request;
    if (signal.aborted) {
      yield { type: 'done', finishReason: 'cancelled' };
      return;
    }
    // Our own controller also fires when the consumer stops iterating early.
    const ctl = new AbortController();
    const onAbort = (): void => ctl.abort(signal.reason);
    signal.addEventListener('abort', onAbort, { once: true });

    let slot: Slot;
    try {
      slot = await this.acquire(ctl.signal);
    } catch (e) {
      signal.removeEventListener('abort', onAbort);
      if (ctl.signal.aborted) {
        yield { type: 'done', finishReason: 'cancelled' };
        return;
      }
      throw e;
    }

    const queue = new AsyncQueue<LlmEvent>();
    const functions = (this.options.tools ?? LLAMACPP_DEFAULTS.tools) === false ? undefined : this.toFunctions(request.tools);
    const history = toChatHistory(request.messages);
    const generation = slot.chat
      .generateResponse(history, {
        ...(functions ? { functions } : {}),
        onTextChunk: (text) => {
          if (text !== '') queue.push({ type: 'text', text });
        },
        signal: ctl.signal,
        stopOnAbortSignal: true,
        maxTokens: this.options.maxTokens ?? LLAMACPP_DEFAULTS.maxTokens,
        temperature: this.options.temperature ?? LLAMACPP_DEFAULTS.temperature,
      })
      .then((res) => {
        const calls = res.functionCalls ?? [];
        for (const fc of calls) {
          this.callSeq += 1;
          queue.push({
            type: 'tool_call',
            call: { id: `call_llama_${this.callSeq}`, name: fc.functionName, arguments: JSON.stringify(dropNulls(fc.params)) },
          });
        }
        const reason: FinishReason = ctl.signal.aborted ? 'cancelled' : calls.length > 0 ? 'tool_calls' : mapStop(res.metadata.stopReason);
        queue.push({ type: 'done', finishReason: reason });
        queue.end();
      })
      .catch((err: unknown) => {
        // Aborted before the first token: node-llama-cpp throws the abort reason.
        if (ctl.signal.aborted) {
          queue.push({ type: 'done', finishReason: 'cancelled' });
          queue.end();
        } else queue.fail(err);
      });

    try {
      for await (const ev of queue.drain()) {
        // Text already queued when the abort landed is stale: drop it, keep the final `done`.
        if (ev.type === 'text' && ctl.signal.aborted) continue;
        yield ev;
      }
    } finally {
      ctl.abort();
      signal.removeEventListener('abort', onAbort);
      // The sequence must be idle before the next request may use it.
      await generation;
      this.release(slot);
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const w of this.waiters.splice(0)) w.reject(new Error('LlamaCppLlm: closed'));
    await this.loading?.catch(() => undefined);
    await this.disposeAll();
  }

  private async disposeAll(): Promise<void> {
    for (const s of this.free.splice(0)) s.chat.dispose();
    await this.context?.dispose();
    await this.model?.dispose();
    await this.llama?.dispose();
    this.context = undefined;
    this.model = undefined;
    this.llama = undefined;
  }

  private acquire(signal: AbortSignal): Promise<Slot> {
    const slot = this.free.shift();
    if (slot) return Promise.resolve(slot);
    return new Promise<Slot>((resolve, reject) => {
      const waiter = {
        resolve: (s: Slot) => {
          signal.removeEventListener('abort', onAbort);
          resolve(s);
        },
        reject,
      };
      const onAbort = (): void => {
        const i = this.waiters.indexOf(waiter);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(signal.reason);
      };
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiters.push(waiter);
    });
  }

  private release(slot: Slot): void {
    if (this.closed) {
      slot.chat.dispose();
      return;
    }
    const next = this.waiters.shift();
    if (next) next.resolve(slot);
    else this.free.push(slot);
  }

  private toFunctions(tools: readonly ToolDefinition[]): ChatModelFunctions | undefined {
    if (tools.length === 0) return undefined;
    const out: Record<string, { description?: string; params?: GbnfJsonSchema }> = {};
    for (const t of tools) {
      const params = paramsToGbnf(t.parameters);
      if (params === null) {
        this.options.logger?.warn({ tool: t.name }, 'tool schema outside the supported subset; not offered to the local model');
        continue;
      }
      out[t.name] = { description: t.description, ...(params ? { params } : {}) };
    }
    return Object.keys(out).length > 0 ? out : undefined;
  }
}

function mapStop(reason: string): FinishReason {
  switch (reason) {
    case 'maxTokens':
      return 'length';
    case 'abort':
      return 'cancelled';
    case 'functionCalls':
      return 'tool_calls';
    default:
      return 'stop';
  }
}

/**
 * Our OpenAI-shaped history → node-llama-cpp's. An assistant turn, its tool results and the
 * assistant text that follows them form one model response (that is how LlamaChat resumes after a
 * function call); a trailing empty model response asks for a new reply.
 */
export function toChatHistory(messages: readonly ChatMessage[]): ChatHistoryItem[] {
  const items: ChatHistoryItem[] = [];
  const systemLead: string[] = [];
  let i = 0;
  // Chat wrappers expect at most one leading system message.
  while (i < messages.length && messages[i].role === 'system') systemLead.push(messages[i++].content);
  if (systemLead.length > 0) items.push({ type: 'system', text: systemLead.join('\n\n') });

  let model: ChatModelResponse | undefined;
  const pendingCalls = new Map<string, ChatModelFunctionCall>();
  for (; i < messages.length; i++) {
    const m = messages[i];
    if (m.role === 'system') {
      model = undefined;
      items.push({ type: 'system', text: m.content });
    } else if (m.role === 'user') {
      model = undefined;
      items.push({ type: 'user', text: m.content });
    } else if (m.role === 'assistant') {
      if (!model) {
        model = { type: 'model', response: [] };
        items.push(model);
      }
      if (m.content !== '') model.response.push(m.content);
      for (const c of m.toolCalls ?? []) {
        const fc: ChatModelFunctionCall = { type: 'functionCall', name: c.name, params: parseJson(c.arguments), result: null };
        pendingCalls.set(c.id, fc);
        model.response.push(fc);
      }
    } else {
      const fc = m.toolCallId !== undefined ? pendingCalls.get(m.toolCallId) : undefined;
      if (fc) fc.result = parseJson(m.content);
    }
  }
  const last = items[items.length - 1];
  // After tool results the model continues its own response; otherwise it starts a new one.
  if (last?.type !== 'model' || !last.response.some((r) => typeof r !== 'string')) {
    items.push({ type: 'model', response: [] });
  } else if (typeof last.response[last.response.length - 1] === 'string') {
    // The model already answered after the tool results: start a fresh turn.
    items.push({ type: 'model', response: [] });
  }
  return items;
}

/**
 * JSON Schema (tool parameters) → node-llama-cpp's GBNF schema subset.
 * Returns undefined for "no parameters", null when the schema uses something unsupported.
 * node-llama-cpp makes every listed property required, so optional ones become nullable.
 */
export function paramsToGbnf(schema: JsonSchema): GbnfJsonSchema | undefined | null {
  if (schema.type !== 'object') return null;
  const props = isRecord(schema.properties) ? schema.properties : {};
  if (Object.keys(props).length === 0) return undefined;
  return convert(schema, true);
}

function convert(s: unknown, required: boolean): GbnfJsonSchema | null {
  if (!isRecord(s)) return null;
  const description = typeof s.description === 'string' ? { description: s.description } : {};
  const nullable = (inner: GbnfJsonSchema): GbnfJsonSchema => (required ? inner : { oneOf: [inner, { type: 'null' }], ...description });

  if (Array.isArray(s.enum) && s.enum.every(isPrimitive)) {
    return nullable({ enum: required ? s.enum : [...s.enum, null], ...description });
  }
  if (s.const !== undefined && isPrimitive(s.const)) return nullable({ const: s.const, ...description });
  switch (s.type) {
    case 'string': {
      const fmt = s.format === 'date-time' || s.format === 'time' || s.format === 'date' ? s.format : undefined;
      return nullable(fmt ? { type: 'string', format: fmt, ...description } : { type: 'string', ...description });
    }
    case 'number':
    case 'integer':
    case 'boolean':
      return required ? { type: s.type, ...description } : { type: [s.type, 'null'], ...description };
    case 'array': {
      const items = s.items === undefined ? undefined : convert(s.items, true);
      if (items === null) return null;
      return nullable(items ? { type: 'array', items, ...description } : { type: 'array', ...description });
    }
    case 'object': {
      const props = isRecord(s.properties) ? s.properties : {};
      const req = new Set(Array.isArray(s.required) ? s.required.filter((k): k is string => typeof k === 'string') : []);
      const properties: Record<string, GbnfJsonSchema> = {};
      for (const [k, v] of Object.entries(props)) {
        const c = convert(v, req.has(k));
        if (c === null) return null;
        properties[k] = c;
      }
      return nullable({ type: 'object', properties, ...description });
    }
    default:
      return null;
  }
}

function isPrimitive(v: unknown): v is string | number | boolean | null {
  return v === null || ['string', 'number', 'boolean'].includes(typeof v);
}

/** Optional arguments come back as null (see paramsToGbnf): omit them like a server model would. */
function dropNulls(v: unknown): unknown {
  if (!isRecord(v)) return v ?? {};
  return Object.fromEntries(Object.entries(v).filter(([, x]) => x !== null));
}

function parseJson(s: string): unknown {
  try {
    return JSON.parse(s);
  } catch {
    return s;
  }
}

