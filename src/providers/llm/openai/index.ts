/**
 * OpenAI-compatible streaming chat-completions client (vLLM, llama.cpp server, Ollama, Mistral API).
 * Speaks SSE over Node's global fetch; no SDK so nothing is pulled in and every byte is ours to time.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import type { Logger } from 'pino';
import { BackendPool, urlList } from '../../backends.js';
import { OPENAI_LLM_DEFAULTS, type OpenAiLlmSettings } from './options.js';
import type { ChatMessage, LlmEvent, LlmProvider, LlmRequest, ToolCall } from '../types.js';
import { isRecord } from '../../../core/guards.js';

/** The options `providers.llm` declares for provider "openai" (./options.ts), and a logger. */
export type OpenAiCompatibleLlmOptions = OpenAiLlmSettings & { logger?: Logger };

/** A failed request: HTTP status (when there was a response), a body snippet, and whether a retry may help. */
export class LlmHttpError extends Error {
  override readonly name = 'LlmHttpError';
  constructor(
    message: string,
    readonly status: number | undefined,
    readonly bodySnippet: string | undefined,
    readonly retryable: boolean,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/** Wire format of a request message. */
interface WireMessage {
  role: ChatMessage['role'];
  content: string | null;
  tool_calls?: Array<{ id: string; type: 'function'; function: { name: string; arguments: string } }>;
  tool_call_id?: string;
}

export interface ChatCompletionsBody {
  model: string;
  messages: WireMessage[];
  stream: true;
  tools?: Array<{ type: 'function'; function: { name: string; description: string; parameters: Record<string, unknown> } }>;
  temperature?: number;
  max_tokens?: number;
}

type FinishReason = Extract<LlmEvent, { type: 'done' }>['finishReason'];

interface PendingToolCall {
  id: string;
  name: string;
  arguments: string;
}

const SNIPPET_CHARS = 300;

/** vLLM answers a request with `tools` this way when started without --enable-auto-tool-choice. */
const TOOLS_DISABLED_RE = /enable-auto-tool-choice|tool-call-parser|tool choice requires/i;

export class OpenAiCompatibleLlm implements LlmProvider {
  readonly name = 'openai';
  readonly capabilities: ProviderCapabilities = { runsOn: ['server'], streaming: true };
  /** Failover over the configured servers (one or more). */
  readonly backends: BackendPool;
  /** The server refused tools (vLLM without --enable-auto-tool-choice): requests go without them from then on. */
  private toolsRefused = false;
  private readonly timeoutMs: number;
  private readonly idleTimeoutMs: number;
  private readonly retries: number;
  private readonly retryBaseDelayMs: number;
  private callSeq = 0;

  constructor(private readonly options: OpenAiCompatibleLlmOptions) {
    const bases = urlList(options.baseUrl, options.baseUrls, 'OpenAiCompatibleLlm: baseUrl');
    if (!options.model) throw new Error('OpenAiCompatibleLlm: model is required');
    this.backends = new BackendPool({
      stage: 'llm',
      urls: bases.map((b) => `${b.replace(/\/+$/, '')}/chat/completions`),
      strategy: options.failover?.strategy,
      downMs: options.failover?.downMs,
      logger: options.logger,
    });
    this.timeoutMs = options.timeoutMs ?? OPENAI_LLM_DEFAULTS.timeoutMs;
    this.idleTimeoutMs = options.idleTimeoutMs ?? OPENAI_LLM_DEFAULTS.idleTimeoutMs;
    this.retries = Math.max(0, options.retries ?? OPENAI_LLM_DEFAULTS.retries);
    this.retryBaseDelayMs = options.retryBaseDelayMs ?? OPENAI_LLM_DEFAULTS.retryBaseDelayMs;
  }

  /** Nothing to warm up remotely; a health probe here would cost a call at every boot. */
  async load(): Promise<void> {}

  /** The request body for a turn (exposed for tests and debugging). */
  buildBody(request: Pick<LlmRequest, 'messages' | 'tools'>): ChatCompletionsBody {
    const body: ChatCompletionsBody = {
      model: this.options.model,
      messages: request.messages.map(toWireMessage),
      stream: true,
    };
    // Some servers reject an empty tools array: only send it when there are tools.
    if (request.tools.length > 0 && !this.toolsRefused) {
      body.tools = request.tools.map((t) => ({
        type: 'function',
        function: { name: t.name, description: t.description, parameters: t.parameters },
      }));
    }
    if (this.options.temperature !== undefined) body.temperature = this.options.temperature;
    if (this.options.maxTokens !== undefined) body.max_tokens = this.options.maxTokens;
    return body;
  }

  async *stream(request: LlmRequest): AsyncGenerator<LlmEvent> {
    const { signal } = request;
    let payload = JSON.stringify(this.buildBody(request));
    const headers: Record<string, string> = {
      'content-type': 'application/json',
      accept: 'text/event-stream',
      ...(this.options.apiKey ? { authorization: `Bearer ${this.options.apiKey}` } : {}),
      ...this.options.extraHeaders,
    };
    // Every server once per round; a failure moves to the next one at once (no back-off while others remain).
    let queue = this.backends.candidates();
    let backoffs = 0;

    for (;;) {
      if (signal.aborted) {
        yield { type: 'done', finishReason: 'cancelled' };
        return;
      }
      const url = queue.shift() ?? this.backends.candidates()[0];
      this.backends.started(url);
      let yielded = false;
      const attemptCtl = new AbortController();
      const onAbort = (): void => attemptCtl.abort(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
      let timeout: LlmHttpError | undefined;
      let timer: NodeJS.Timeout | undefined;
      const arm = (ms: number, what: string): void => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          timeout = new LlmHttpError(`LLM ${what} timeout after ${ms} ms (${url})`, undefined, undefined, true);
          attemptCtl.abort(timeout);
        }, ms);
      };

      try {
        arm(this.timeoutMs, 'first-byte');
        const res = await fetch(url, { method: 'POST', headers, body: payload, signal: attemptCtl.signal });
        if (!res.ok) {
          const text = await res.text().catch(() => '');
          const retryable = res.status === 429 || res.status >= 500;
          throw new LlmHttpError(
            `LLM HTTP ${res.status} ${res.statusText} from ${url}: ${snippet(text)}`,
            res.status,
            snippet(text),
            retryable,
            parseRetryAfter(res.headers.get('retry-after')),
          );
        }
        if (!res.body) throw new LlmHttpError(`LLM response from ${url} has no body`, res.status, undefined, true);

        const contentType = res.headers.get('content-type') ?? '';
        if (contentType.includes('application/json')) {
          // Server ignored stream:true (some proxies do): accept a whole completion.
          const text = await res.text();
          clearTimeout(timer);
          this.backends.succeeded(url);
          yield* this.fromWholeCompletion(text, url);
          return;
        }

        const state = { finish: undefined as string | undefined, sawDone: false, tools: new Map<number, PendingToolCall>() };
        for await (const data of sseData(res.body, () => arm(this.idleTimeoutMs, 'idle'))) {
          if (data === '[DONE]') {
            state.sawDone = true;
            break;
          }
          for (const text of this.applyChunk(data, state, url)) {
            yielded = true;
            yield { type: 'text', text };
          }
        }
        clearTimeout(timer);
        if (!state.sawDone && state.finish === undefined) {
          throw new LlmHttpError(`LLM stream from ${url} ended before completion`, undefined, undefined, true);
        }
        this.backends.succeeded(url);
        yield* this.finish(state.finish, state.tools);
        return;
      } catch (err) {
        clearTimeout(timer);
        if (signal.aborted) {
          yield { type: 'done', finishReason: 'cancelled' };
          return;
        }
        const e = timeout ?? toLlmError(err, url);
        if (e.retryable) this.backends.failed(url, e.message);
        if (yielded) {
          // Half a reply already went downstream: replaying it would duplicate speech.
          throw new LlmHttpError(`${e.message} (mid-stream, after output started; not retried)`, e.status, e.bodySnippet, false);
        }
        if (this.refusedTools(e, request)) {
          // Chosen behaviour: the call goes on without tools (answers in words) rather than failing every turn.
          payload = JSON.stringify(this.buildBody(request));
          queue = [url, ...queue];
          continue;
        }
        if (!e.retryable) throw e;
        if (queue.length > 0) {
          this.options.logger?.warn({ err: e.message, next: queue[0] }, 'llm backend failed, trying the next one');
          continue;
        }
        if (backoffs >= this.retries) throw e;
        const backoff = this.retryBaseDelayMs * 2 ** backoffs * (1 + Math.random() * 0.25);
        const delay = Math.min(Math.max(backoff, e.retryAfterMs ?? 0), 5_000);
        backoffs++;
        this.options.logger?.warn({ err: e.message, attempt: backoffs, delayMs: Math.round(delay) }, 'llm request failed, retrying');
        if (!(await sleep(delay, signal))) {
          yield { type: 'done', finishReason: 'cancelled' };
          return;
        }
        queue = this.backends.candidates();
      } finally {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        // Consumer stopped early (or we are done): release the socket.
        attemptCtl.abort();
      }
    }
  }

  /**
   * vLLM started without `--enable-auto-tool-choice --tool-call-parser …` answers any request with `tools` with
   * HTTP 400. Said once, loudly, with the flags to add; from then on this backend is asked without tools.
   */
  private refusedTools(e: LlmHttpError, request: LlmRequest): boolean {
    if (this.toolsRefused || e.status !== 400 || request.tools.length === 0 || !TOOLS_DISABLED_RE.test(e.bodySnippet ?? '')) return false;
    this.toolsRefused = true;
    this.options.logger?.error(
      { status: e.status, body: e.bodySnippet, tools: request.tools.map((t) => t.name) },
      'LLM server refuses tool calls: start vLLM with --enable-auto-tool-choice --tool-call-parser <parser for the model> (e.g. mistral). Going on without tools: the agent answers in words only',
    );
    return true;
  }

  /** Applies one SSE data payload; returns the text deltas it carried. */
  private applyChunk(
    data: string,
    state: { finish: string | undefined; tools: Map<number, PendingToolCall> },
    url: string,
  ): string[] {
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      throw new LlmHttpError(`LLM stream from ${url} sent malformed JSON: ${snippet(data)}`, undefined, snippet(data), false);
    }
    if (!isRecord(json)) return [];
    if (json.error !== undefined) {
      const msg = isRecord(json.error) && typeof json.error.message === 'string' ? json.error.message : JSON.stringify(json.error);
      throw new LlmHttpError(`LLM stream error from ${url}: ${snippet(msg)}`, undefined, snippet(msg), false);
    }
    const out: string[] = [];
    const choices = Array.isArray(json.choices) ? json.choices : [];
    for (const choice of choices) {
      // n=1: only the first choice matters, but servers may omit "index".
      if (!isRecord(choice) || (typeof choice.index === 'number' && choice.index !== 0)) continue;
      const delta = isRecord(choice.delta) ? choice.delta : undefined;
      if (delta) {
        if (typeof delta.content === 'string' && delta.content !== '') out.push(delta.content);
        if (Array.isArray(delta.tool_calls)) {
          delta.tool_calls.forEach((tc: unknown, pos: number) => {
            if (!isRecord(tc)) return;
            const index = typeof tc.index === 'number' ? tc.index : pos;
            const entry = state.tools.get(index) ?? { id: '', name: '', arguments: '' };
            if (typeof tc.id === 'string' && tc.id !== '') entry.id = tc.id;
            const fn = isRecord(tc.function) ? tc.function : undefined;
            // The name arrives once (first fragment); arguments arrive in pieces.
            if (fn && typeof fn.name === 'string' && fn.name !== '' && entry.name === '') entry.name = fn.name;
            if (fn && typeof fn.arguments === 'string') entry.arguments += fn.arguments;
            else if (fn && isRecord(fn.arguments)) entry.arguments += JSON.stringify(fn.arguments);
            state.tools.set(index, entry);
          });
        }
      }
      if (typeof choice.finish_reason === 'string') state.finish = choice.finish_reason;
    }
    return out;
  }

  private *finish(finishReason: string | undefined, tools: Map<number, PendingToolCall>): Generator<LlmEvent> {
    const calls = [...tools.entries()].sort(([a], [b]) => a - b).map(([, c]) => c);
    if (finishReason === 'length') {
      // Arguments cut off mid-JSON would be executed wrongly: drop them.
      if (calls.length > 0) this.options.logger?.warn({ dropped: calls.length }, 'tool calls truncated by max_tokens');
      yield { type: 'done', finishReason: 'length' };
      return;
    }
    const complete = calls.filter((c) => c.name !== '');
    for (const c of complete) yield { type: 'tool_call', call: this.toToolCall(c) };
    // vLLM sometimes says "stop" while returning tool calls: the calls are what counts.
    yield { type: 'done', finishReason: complete.length > 0 ? 'tool_calls' : mapFinish(finishReason) };
  }

  private *fromWholeCompletion(text: string, url: string): Generator<LlmEvent> {
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch {
      throw new LlmHttpError(`LLM response from ${url} is not JSON: ${snippet(text)}`, undefined, snippet(text), false);
    }
    const choice = isRecord(json) && Array.isArray(json.choices) && isRecord(json.choices[0]) ? json.choices[0] : undefined;
    const message = choice && isRecord(choice.message) ? choice.message : undefined;
    if (!message) throw new LlmHttpError(`LLM response from ${url} has no choices: ${snippet(text)}`, undefined, snippet(text), false);
    if (typeof message.content === 'string' && message.content !== '') yield { type: 'text', text: message.content };
    const tools = new Map<number, PendingToolCall>();
    if (Array.isArray(message.tool_calls)) {
      message.tool_calls.forEach((tc: unknown, i: number) => {
        if (!isRecord(tc) || !isRecord(tc.function)) return;
        const args = tc.function.arguments;
        tools.set(i, {
          id: typeof tc.id === 'string' ? tc.id : '',
          name: typeof tc.function.name === 'string' ? tc.function.name : '',
          arguments: typeof args === 'string' ? args : JSON.stringify(args ?? {}),
        });
      });
    }
    yield* this.finish(typeof choice?.finish_reason === 'string' ? choice.finish_reason : 'stop', tools);
  }

  private toToolCall(c: PendingToolCall): ToolCall {
    this.callSeq += 1;
    return {
      id: c.id || `call_${Date.now().toString(36)}_${this.callSeq}`,
      name: c.name,
      arguments: c.arguments.trim() === '' ? '{}' : c.arguments,
    };
  }
}

function toWireMessage(m: ChatMessage): WireMessage {
  switch (m.role) {
    case 'assistant': {
      if (!m.toolCalls || m.toolCalls.length === 0) return { role: 'assistant', content: m.content };
      return {
        role: 'assistant',
        // OpenAI wants null rather than "" next to tool_calls.
        content: m.content === '' ? null : m.content,
        tool_calls: m.toolCalls.map((c) => ({ id: c.id, type: 'function', function: { name: c.name, arguments: c.arguments } })),
      };
    }
    case 'tool':
      return { role: 'tool', content: m.content, tool_call_id: m.toolCallId ?? '' };
    default:
      return { role: m.role, content: m.content };
  }
}

function mapFinish(reason: string | undefined): FinishReason {
  switch (reason) {
    case 'length':
      return 'length';
    case 'tool_calls':
    case 'function_call':
      return 'tool_calls';
    default:
      return 'stop';
  }
}

/**
 * Yields the `data` of each SSE event. `onBytes` fires on every network chunk (re-arms the idle timer).
 * Multi-line data is joined with "\n" per the SSE spec; comments and other fields are ignored.
 */
async function* sseData(body: ReadableStream<Uint8Array>, onBytes: () => void): AsyncGenerator<string> {
  const decoder = new TextDecoder();
  const reader = body.getReader();
  let buffer = '';
  let dataLines: string[] = [];
  const flushEvent = function* (): Generator<string> {
    if (dataLines.length === 0) return;
    const joined = dataLines.join('\n');
    const lines = dataLines;
    dataLines = [];
    // Tolerate servers that forget the blank line between events: one JSON per line.
    if (lines.length > 1 && !isJsonLike(joined)) yield* lines;
    else yield joined;
  };
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      onBytes();
      buffer += decoder.decode(value, { stream: true });
      let nl: number;
      while ((nl = buffer.indexOf('\n')) >= 0) {
        const line = buffer.slice(0, nl).replace(/\r$/, '');
        buffer = buffer.slice(nl + 1);
        if (line === '') {
          yield* flushEvent();
        } else if (line.startsWith('data:')) {
          dataLines.push(line.slice(5).replace(/^ /, ''));
        }
      }
    }
    buffer += decoder.decode();
    if (buffer.startsWith('data:')) dataLines.push(buffer.slice(5).replace(/^ /, ''));
    yield* flushEvent();
  } finally {
    reader.releaseLock();
  }
}

function isJsonLike(s: string): boolean {
  try {
    JSON.parse(s);
    return true;
  } catch {
    return s.trim() === '[DONE]';
  }
}

function toLlmError(err: unknown, url: string): LlmHttpError {
  if (err instanceof LlmHttpError) return err;
  // undici: TypeError("fetch failed", { cause: { code: "ECONNREFUSED" } }), or "terminated" mid-body.
  const cause = err instanceof Error && err.cause !== undefined ? err.cause : undefined;
  const code = isRecord(cause) && typeof cause.code === 'string' ? cause.code : undefined;
  const detail = [err instanceof Error ? err.message : String(err), code ?? (cause instanceof Error ? cause.message : undefined)]
    .filter(Boolean)
    .join(': ');
  return new LlmHttpError(`LLM connection to ${url} failed: ${detail}`, undefined, undefined, true);
}

function parseRetryAfter(v: string | null): number | undefined {
  if (!v) return undefined;
  const secs = Number(v);
  if (Number.isFinite(secs)) return secs * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

/** Resolves true after ms, false if the signal aborts first. */
function sleep(ms: number, signal: AbortSignal): Promise<boolean> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve(false);
    const onAbort = (): void => {
      clearTimeout(t);
      resolve(false);
    };
    const t = setTimeout(() => {
      signal.removeEventListener('abort', onAbort);
      resolve(true);
    }, ms);
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

function snippet(s: string): string {
  const flat = s.replace(/\s+/g, ' ').trim();
  return flat.length > SNIPPET_CHARS ? `${flat.slice(0, SNIPPET_CHARS)}…` : flat;
}

