import { existsSync } from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LlamaCppLlm, paramsToGbnf, toChatHistory } from '../src/providers/llm/llamacpp/index.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import type { ChatMessage, LlmEvent, LlmProvider } from '../src/providers/llm/types.js';

const MODEL = path.resolve(import.meta.dirname, '../../shared/models/llm-test/llama-2-tiny-random.gguf');
const haveModel = existsSync(MODEL);
if (!haveModel) console.warn(`[llm-llamacpp] skipping model tests: ${MODEL} not found`);

const MAX_TOKENS = 6;
const history: ChatMessage[] = [
  { role: 'system', content: 'You are a phone agent. Keep replies short.' },
  { role: 'user', content: 'Hello, what time is it?' },
];

interface Run {
  events: LlmEvent[];
  firstTokenMs: number | undefined;
  totalMs: number;
}

async function run(llm: LlmProvider, messages: ChatMessage[], opts: { signal?: AbortSignal; onText?: (n: number) => void } = {}): Promise<Run> {
  const events: LlmEvent[] = [];
  const t0 = performance.now();
  let firstTokenMs: number | undefined;
  let n = 0;
  for await (const e of llm.stream({ messages, tools: [], language: 'en', signal: opts.signal ?? new AbortController().signal })) {
    events.push(e);
    if (e.type === 'text') {
      firstTokenMs ??= performance.now() - t0;
      opts.onText?.(++n);
    }
  }
  return { events, firstTokenMs, totalMs: performance.now() - t0 };
}

const textEvents = (events: LlmEvent[]): number => events.filter((e) => e.type === 'text').length;
const done = (events: LlmEvent[]): LlmEvent | undefined => events[events.length - 1];

describe.skipIf(!haveModel)('LlamaCppLlm with the tiny random GGUF (CPU)', () => {
  // One thread: the model is tiny (threading overhead dominates) and CI runs test files in parallel on 2 cores.
  const llm = new LlamaCppLlm({ modelPath: MODEL, gpu: false, threads: 1, contextSize: 1024, maxTokens: MAX_TOKENS, temperature: 0 });
  const long = new LlamaCppLlm({ modelPath: MODEL, gpu: false, threads: 1, contextSize: 1024, maxTokens: 4000 });

  beforeAll(async () => {
    const t0 = performance.now();
    await llm.load();
    console.log(`[llm-llamacpp] load ${(performance.now() - t0).toFixed(0)} ms`, llm.loadStats);
  });
  afterAll(async () => {
    await llm.close();
    await long.close();
  });

  it('streams tokens, bounded by maxTokens', async () => {
    const r = await run(llm, history);
    console.log(`[llm-llamacpp] first token ${r.firstTokenMs?.toFixed(0)} ms, ${textEvents(r.events)} chunks in ${r.totalMs.toFixed(0)} ms`);
    expect(r.firstTokenMs).toBeDefined();
    expect(textEvents(r.events)).toBeGreaterThanOrEqual(1);
    // A chunk is at least one token.
    expect(textEvents(r.events)).toBeLessThanOrEqual(MAX_TOKENS);
    const last = done(r.events);
    expect(last?.type).toBe('done');
    // Random weights: it may hit EOS early, otherwise the cap.
    expect(['length', 'stop']).toContain(last?.type === 'done' ? last.finishReason : undefined);
  });

  it('two requests in a row both work (the second reuses the warm sequence)', async () => {
    const first = await run(llm, history);
    const text = first.events.map((e) => (e.type === 'text' ? e.text : '')).join('');
    const second = await run(llm, [...history, { role: 'assistant', content: text }, { role: 'user', content: 'And tomorrow?' }]);
    expect(textEvents(first.events)).toBeGreaterThanOrEqual(1);
    expect(textEvents(second.events)).toBeGreaterThanOrEqual(1);
    expect(done(second.events)?.type).toBe('done');
  });

  it('concurrent requests on one sequence are serialised, and both complete', async () => {
    const [a, b] = await Promise.all([run(llm, history), run(llm, [{ role: 'user', content: 'Bonjour !' }])]);
    expect(done(a.events)?.type).toBe('done');
    expect(done(b.events)?.type).toBe('done');
    expect(textEvents(a.events) + textEvents(b.events)).toBeGreaterThanOrEqual(2);
  });

  it('abort stops a long generation promptly', async () => {
    await long.load();
    const ac = new AbortController();
    const r = await run(long, history, { signal: ac.signal, onText: (n) => n === 2 && ac.abort() });
    expect(done(r.events)).toEqual({ type: 'done', finishReason: 'cancelled' });
    // Stopped right after the abort, far from the 4000-token cap.
    expect(textEvents(r.events)).toBe(2);
    expect(r.totalMs).toBeLessThan(5000);
    // The slot is released: the next request still works.
    const after = await run(llm, history);
    expect(done(after.events)?.type).toBe('done');
  });

  it('breaking out of the loop frees the sequence for the next request', async () => {
    for await (const e of long.stream({ messages: history, tools: [], language: 'en', signal: new AbortController().signal })) {
      if (e.type === 'text') break;
    }
    const ac = new AbortController();
    const r = await run(long, history, { signal: ac.signal, onText: (n) => n === 3 && ac.abort() });
    expect(textEvents(r.events)).toBe(3);
    expect(done(r.events)).toEqual({ type: 'done', finishReason: 'cancelled' });
  });

  it('an already-aborted signal yields done: cancelled', async () => {
    const ac = new AbortController();
    ac.abort();
    expect((await run(llm, history, { signal: ac.signal })).events).toEqual([{ type: 'done', finishReason: 'cancelled' }]);
  });

  it('accepts tools (offered as functions) and a history with tool results', async () => {
    const tools = new ToolRegistry().definitions();
    const messages: ChatMessage[] = [
      ...history,
      { role: 'assistant', content: '', toolCalls: [{ id: 'c1', name: 'get_current_time', arguments: '{}' }] },
      { role: 'tool', content: '{"time":"3:42 PM"}', toolCallId: 'c1' },
    ];
    const events: LlmEvent[] = [];
    for await (const e of llm.stream({ messages, tools, language: 'en', signal: new AbortController().signal })) events.push(e);
    expect(done(events)?.type).toBe('done');
  });
});

describe('LlamaCppLlm (no model needed)', () => {
  it('reports a missing model file clearly', async () => {
    await expect(new LlamaCppLlm({ modelPath: '/nope/model.gguf' }).load()).rejects.toThrow('model file not found: /nope/model.gguf');
  });

  it('maps our history to node-llama-cpp chat history', () => {
    expect(
      toChatHistory([
        { role: 'system', content: 'A' },
        { role: 'system', content: 'B' },
        { role: 'user', content: 'time?' },
        { role: 'assistant', content: 'Let me check.', toolCalls: [{ id: 'c1', name: 'get_current_time', arguments: '{"timezone":"UTC"}' }] },
        { role: 'tool', content: '{"time":"3:42 PM"}', toolCallId: 'c1' },
      ]),
    ).toEqual([
      { type: 'system', text: 'A\n\nB' },
      { type: 'user', text: 'time?' },
      {
        type: 'model',
        response: ['Let me check.', { type: 'functionCall', name: 'get_current_time', params: { timezone: 'UTC' }, result: { time: '3:42 PM' } }],
      },
    ]);
    expect(toChatHistory([{ role: 'user', content: 'hi' }])).toEqual([
      { type: 'user', text: 'hi' },
      { type: 'model', response: [] },
    ]);
  });

  it('converts tool schemas to the GBNF subset, optional properties nullable', () => {
    const [time, book, transfer] = new ToolRegistry().definitions();
    // Optional queue and reason (no queues configured: any string), both nullable.
    expect(paramsToGbnf(transfer.parameters)).toMatchObject({ type: 'object', properties: { reason: { oneOf: [{ type: 'string' }, { type: 'null' }] } } });
    expect(paramsToGbnf(time.parameters)).toEqual({
      type: 'object',
      properties: {
        timezone: { oneOf: [{ type: 'string', description: expect.any(String) }, { type: 'null' }], description: expect.any(String) },
      },
    });
    expect(paramsToGbnf(book.parameters)).toMatchObject({
      type: 'object',
      properties: { party_size: { type: ['integer', 'null'] } },
    });
    expect(paramsToGbnf({ type: 'object', properties: { x: { type: 'string', pattern: '^a' }, y: { $ref: '#/x' } } })).toBeNull();
  });
});
