import { createServer, type IncomingHttpHeaders, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LlmHttpError, OpenAiCompatibleLlm, type ChatCompletionsBody } from '../src/providers/llm/openai/index.js';
import type { ChatMessage, LlmEvent, ToolDefinition } from '../src/providers/llm/types.js';

interface Recorded {
  body: ChatCompletionsBody;
  headers: IncomingHttpHeaders;
  url: string | undefined;
}

type Handler = (req: IncomingMessage, res: ServerResponse, n: number) => void;

const servers: Array<{ close: () => Promise<void> }> = [];

async function startServer(handler: Handler): Promise<{ baseUrl: string; requests: Recorded[]; closed: () => number }> {
  const requests: Recorded[] = [];
  let closedConnections = 0;
  const server = createServer((req, res) => {
    let raw = '';
    req.on('data', (c: Buffer) => (raw += c.toString('utf8')));
    req.on('end', () => {
      requests.push({ body: JSON.parse(raw) as ChatCompletionsBody, headers: req.headers, url: req.url });
      handler(req, res, requests.length);
    });
    res.on('close', () => closedConnections++);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  servers.push({
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  });
  return { baseUrl: `http://127.0.0.1:${port}/v1`, requests, closed: () => closedConnections };
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((s) => s.close()));
});

const sse = (obj: unknown): string => `data: ${JSON.stringify(obj)}\n\n`;
const chunk = (delta: Record<string, unknown>, finish: string | null = null): string =>
  sse({ id: 'x', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta, finish_reason: finish }] });
const sseHead = (res: ServerResponse): void => {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' });
};

function streamTexts(res: ServerResponse, parts: string[]): void {
  sseHead(res);
  res.write(chunk({ role: 'assistant', content: '' }));
  for (const p of parts) res.write(chunk({ content: p }));
  res.write(chunk({}, 'stop'));
  res.end('data: [DONE]\n\n');
}

async function collect(llm: OpenAiCompatibleLlm, messages: ChatMessage[], tools: ToolDefinition[] = [], signal?: AbortSignal): Promise<LlmEvent[]> {
  const out: LlmEvent[] = [];
  for await (const e of llm.stream({ messages, tools, language: 'en', signal: signal ?? new AbortController().signal })) out.push(e);
  return out;
}

const texts = (events: LlmEvent[]): string[] => events.flatMap((e) => (e.type === 'text' ? [e.text] : []));
const last = (events: LlmEvent[]): LlmEvent | undefined => events[events.length - 1];
const hi: ChatMessage[] = [{ role: 'user', content: 'hi' }];

const bookTool: ToolDefinition = {
  name: 'book_appointment',
  description: 'Book a table.',
  parameters: { type: 'object', properties: { party_size: { type: 'integer' }, time: { type: 'string' } } },
};

describe('OpenAiCompatibleLlm', () => {
  it('streams text deltas and sends a well-formed request', async () => {
    const srv = await startServer((_req, res) => streamTexts(res, ['Hello', ' there', '! How can', ' I help?']));
    const llm = new OpenAiCompatibleLlm({
      baseUrl: `${srv.baseUrl}/`,
      model: 'mistral-small',
      apiKey: 'sk-test',
      temperature: 0.3,
      maxTokens: 64,
      extraHeaders: { 'x-tenant': 'acme' },
    });
    const events = await collect(llm, [{ role: 'system', content: 'Be brief.' }, ...hi]);
    expect(texts(events)).toEqual(['Hello', ' there', '! How can', ' I help?']);
    expect(last(events)).toEqual({ type: 'done', finishReason: 'stop' });

    const [req] = srv.requests;
    expect(req.url).toBe('/v1/chat/completions');
    expect(req.headers.authorization).toBe('Bearer sk-test');
    expect(req.headers['x-tenant']).toBe('acme');
    expect(req.body).toEqual({
      model: 'mistral-small',
      stream: true,
      temperature: 0.3,
      max_tokens: 64,
      messages: [
        { role: 'system', content: 'Be brief.' },
        { role: 'user', content: 'hi' },
      ],
    });
  });

  it('reassembles SSE events split across TCP writes and CRLF line endings', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      const payload = (chunk({ content: 'Bon' }) + chunk({ content: 'jour' }) + chunk({}, 'stop')).replace(/\n/g, '\r\n') + 'data: [DONE]\r\n\r\n';
      // Dribble a few bytes at a time.
      let i = 0;
      const tick = setInterval(() => {
        res.write(payload.slice(i, i + 7));
        i += 7;
        if (i >= payload.length) {
          clearInterval(tick);
          res.end();
        }
      }, 1);
    });
    const events = await collect(new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm' }), hi);
    expect(texts(events).join('')).toBe('Bonjour');
    expect(last(events)).toEqual({ type: 'done', finishReason: 'stop' });
  });

  it('assembles a tool call streamed in fragments, and maps tools and tool messages', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      res.write(chunk({ role: 'assistant', content: null, tool_calls: [{ index: 0, id: 'call_abc', type: 'function', function: { name: 'book_appointment', arguments: '' } }] }));
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: '{"party_' } }] }));
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: 'size": 2, "ti' } }] }));
      res.write(chunk({ tool_calls: [{ index: 1, id: 'call_def', type: 'function', function: { name: 'get_current_time', arguments: '{}' } }] }));
      res.write(chunk({ tool_calls: [{ index: 0, function: { arguments: 'me": "19:30"}' } }] }));
      res.write(chunk({}, 'tool_calls'));
      res.end('data: [DONE]\n\n');
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm' });
    const history: ChatMessage[] = [
      { role: 'user', content: 'what time is it' },
      { role: 'assistant', content: '', toolCalls: [{ id: 'call_1', name: 'get_current_time', arguments: '{}' }] },
      { role: 'tool', content: '{"time":"3:42 PM"}', toolCallId: 'call_1' },
      { role: 'assistant', content: 'It is 3:42 PM.' },
      { role: 'user', content: 'book a table for two at 7:30 pm' },
    ];
    const events = await collect(llm, history, [bookTool]);
    expect(events).toEqual([
      { type: 'tool_call', call: { id: 'call_abc', name: 'book_appointment', arguments: '{"party_size": 2, "time": "19:30"}' } },
      { type: 'tool_call', call: { id: 'call_def', name: 'get_current_time', arguments: '{}' } },
      { type: 'done', finishReason: 'tool_calls' },
    ]);
    const body = srv.requests[0].body;
    expect(body.tools).toEqual([{ type: 'function', function: { name: 'book_appointment', description: 'Book a table.', parameters: bookTool.parameters } }]);
    expect(body.messages).toEqual([
      { role: 'user', content: 'what time is it' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'call_1', type: 'function', function: { name: 'get_current_time', arguments: '{}' } }] },
      { role: 'tool', content: '{"time":"3:42 PM"}', tool_call_id: 'call_1' },
      { role: 'assistant', content: 'It is 3:42 PM.' },
      { role: 'user', content: 'book a table for two at 7:30 pm' },
    ]);
  });

  it('maps finish_reason length', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      res.write(chunk({ content: 'Well' }));
      res.write(chunk({}, 'length'));
      res.end('data: [DONE]\n\n');
    });
    const events = await collect(new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm', maxTokens: 1 }), hi);
    expect(last(events)).toEqual({ type: 'done', finishReason: 'length' });
  });

  it('retries a 503 then succeeds', async () => {
    const srv = await startServer((_req, res, n) => {
      if (n === 1) {
        res.writeHead(503, { 'content-type': 'application/json' });
        res.end('{"error":"overloaded"}');
        return;
      }
      streamTexts(res, ['ok']);
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm', retryBaseDelayMs: 10 });
    const events = await collect(llm, hi);
    expect(texts(events)).toEqual(['ok']);
    expect(srv.requests).toHaveLength(2);
  });

  it('gives up after the retries with status and body snippet', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(503);
      res.end('upstream model is loading, please wait');
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm', retries: 2, retryBaseDelayMs: 5 });
    const err = await collect(llm, hi).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LlmHttpError);
    expect((err as LlmHttpError).status).toBe(503);
    expect((err as Error).message).toMatch(/HTTP 503 .*upstream model is loading/);
    expect(srv.requests).toHaveLength(3);
  });

  it('does not retry a 400', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: { message: 'model "nope" not found' } }));
    });
    const err = await collect(new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'nope', retryBaseDelayMs: 5 }), hi).catch((e: unknown) => e);
    expect((err as LlmHttpError).status).toBe(400);
    expect((err as LlmHttpError).bodySnippet).toContain('model \\"nope\\" not found');
    expect(srv.requests).toHaveLength(1);
  });

  it('times out a server that stalls before the first byte, retrying once', async () => {
    const srv = await startServer(() => {
      /* never answers */
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm', timeoutMs: 150, retries: 1, retryBaseDelayMs: 5 });
    const t0 = performance.now();
    const err = await collect(llm, hi).catch((e: unknown) => e);
    const elapsed = performance.now() - t0;
    expect((err as Error).message).toMatch(/first-byte timeout after 150 ms/);
    expect(srv.requests).toHaveLength(2);
    expect(elapsed).toBeLessThan(2000);
  });

  it('times out a stream that goes silent after headers', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      res.flushHeaders();
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm', timeoutMs: 150, retries: 0 });
    await expect(collect(llm, hi)).rejects.toThrow(/timeout after 150 ms/);
  });

  it('errors when the connection drops mid-stream, without retrying after tokens', async () => {
    const srv = await startServer((req, res) => {
      sseHead(res);
      res.write(chunk({ content: 'Half a' }));
      res.write(chunk({ content: ' sentence' }));
      setTimeout(() => req.socket.destroy(), 20);
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm', retryBaseDelayMs: 5 });
    const seen: string[] = [];
    let error: unknown;
    try {
      for await (const e of llm.stream({ messages: hi, tools: [], language: 'en', signal: new AbortController().signal })) {
        if (e.type === 'text') seen.push(e.text);
      }
    } catch (e) {
      error = e;
    }
    expect(seen).toEqual(['Half a', ' sentence']);
    expect(error).toBeInstanceOf(LlmHttpError);
    expect((error as Error).message).toMatch(/connection .* failed|ended before completion/);
    expect(srv.requests).toHaveLength(1);
  });

  it('retries a connection refused, then reports it', async () => {
    const srv = await startServer(() => undefined);
    const deadUrl = srv.baseUrl;
    await Promise.all(servers.splice(0).map((s) => s.close()));
    const llm = new OpenAiCompatibleLlm({ baseUrl: deadUrl, model: 'm', retries: 1, retryBaseDelayMs: 5 });
    await expect(collect(llm, hi)).rejects.toThrow(/connection to .* failed: .*ECONNREFUSED/);
  });

  it('abort mid-stream stops promptly and closes the connection', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      let n = 0;
      const tick = setInterval(() => {
        if (res.destroyed) return clearInterval(tick);
        res.write(chunk({ content: `w${n++} ` }));
      }, 20);
      res.on('close', () => clearInterval(tick));
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm' });
    const ac = new AbortController();
    const events: LlmEvent[] = [];
    const t0 = performance.now();
    for await (const e of llm.stream({ messages: hi, tools: [], language: 'en', signal: ac.signal })) {
      events.push(e);
      if (events.length === 2) ac.abort();
    }
    expect(performance.now() - t0).toBeLessThan(1000);
    expect(last(events)).toEqual({ type: 'done', finishReason: 'cancelled' });
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.closed()).toBe(1);
  });

  it('breaking out of the loop releases the connection', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      const tick = setInterval(() => res.write(chunk({ content: 'x' })), 10);
      res.on('close', () => clearInterval(tick));
    });
    const llm = new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm' });
    for await (const e of llm.stream({ messages: hi, tools: [], language: 'en', signal: new AbortController().signal })) {
      if (e.type === 'text') break;
    }
    await new Promise((r) => setTimeout(r, 50));
    expect(srv.closed()).toBe(1);
  });

  it('surfaces an error object sent inside the stream', async () => {
    const srv = await startServer((_req, res) => {
      sseHead(res);
      res.end(sse({ error: { message: 'context length exceeded' } }));
    });
    await expect(collect(new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm' }), hi)).rejects.toThrow(/context length exceeded/);
  });

  it('accepts a non-streamed JSON completion from servers that ignore stream:true', async () => {
    const srv = await startServer((_req, res) => {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ choices: [{ index: 0, message: { role: 'assistant', content: 'Hi!' }, finish_reason: 'stop' }] }));
    });
    const events = await collect(new OpenAiCompatibleLlm({ baseUrl: srv.baseUrl, model: 'm' }), hi);
    expect(events).toEqual([{ type: 'text', text: 'Hi!' }, { type: 'done', finishReason: 'stop' }]);
  });
});
