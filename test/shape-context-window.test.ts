import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createProviders } from '../src/providers/index.js';
import { ScriptedLlm } from '../src/providers/llm/scripted.js';
import type { ChatMessage } from '../src/providers/llm/types.js';
import { windowed } from '../src/session/context-window.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { TextCaller } from './helpers/text-caller.js';

/**
 * A model is sent the system prompt and a window of the latest conversation (agent.contextWindow), not the
 * whole call every turn; the conversation itself is not cut.
 */
const msg = (role: ChatMessage['role'], content: string, extra: Partial<ChatMessage> = {}): ChatMessage => ({ role, content, ...extra });

describe('windowed()', () => {
  const conversation: ChatMessage[] = [msg('system', 'be brief')];
  for (let i = 0; i < 30; i++) conversation.push(msg('user', `question ${i}`), msg('assistant', `answer ${i}`));

  it('keeps the system prompt and the latest messages, starting on a caller turn', () => {
    const out = windowed(conversation, { maxMessages: 5, maxChars: 0 });
    expect(out[0]).toEqual(msg('system', 'be brief'));
    expect(out.slice(1).map((m) => m.content)).toEqual(['question 28', 'answer 28', 'question 29', 'answer 29']);
    expect(conversation).toHaveLength(61);
  });

  it('honours a character budget but always sends the latest caller turn', () => {
    const out = windowed(conversation, { maxMessages: 0, maxChars: 40 });
    expect(out.slice(1).map((m) => m.content)).toEqual(['question 28', 'answer 28', 'question 29', 'answer 29']);
    const long = [msg('system', 's'), msg('user', 'x'.repeat(500))];
    expect(windowed(long, { maxMessages: 10, maxChars: 40 })).toEqual(long);
  });

  it('never sends a tool result without the call that asked for it', () => {
    const round: ChatMessage[] = [
      msg('system', 's'),
      msg('user', 'old'),
      msg('assistant', 'ok'),
      msg('user', 'what time is it'),
      msg('assistant', '', { toolCalls: [{ id: 'c1', name: 'get_current_time', arguments: '{}' }] }),
      msg('tool', '{"time":"10:00"}', { toolCallId: 'c1' }),
    ];
    const out = windowed(round, { maxMessages: 2, maxChars: 0 });
    expect(out.map((m) => m.role)).toEqual(['system', 'user', 'assistant', 'tool']);
    expect(out[1].content).toBe('what time is it');
  });

  it('leaves a short conversation as it is', () => {
    const short = conversation.slice(0, 5);
    expect(windowed(short, { maxMessages: 40, maxChars: 16_000 })).toBe(short);
  });
});

describe('the request a model receives during a call', () => {
  let server: TestServer;
  const seen: number[] = [];
  let firstSeen: ChatMessage[] = [];
  beforeAll(async () => {
    const config = mergeConfig(DEFAULT_CONFIG, {});
    const model = new ScriptedLlm((messages) => {
      seen.push(messages.length);
      firstSeen = [...messages];
      return { text: 'Noted.' };
    });
    server = await startTestServer({ agent: { contextWindow: { maxMessages: 3, maxChars: 0 } } }, { ...createProviders(config, silentLogger()), llm: model });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('is the system prompt and the latest turns, while the session keeps the whole conversation', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const callId = await caller.open();
    for (let i = 0; i < 4; i++) expect((await caller.say(`remember number ${i}`)).text).toBe('Noted.');
    expect(Math.max(...seen)).toBeLessThanOrEqual(4);
    expect(firstSeen[0].role).toBe('system');
    expect(firstSeen.at(-1)).toMatchObject({ role: 'user', content: 'remember number 3' });
    expect(firstSeen.map((m) => m.content)).not.toContain('remember number 0');
    const session = server.server.service.sessions.get(callId);
    expect(session?.history.filter((m) => m.role === 'user')).toHaveLength(4);
    await caller.close();
  });
});
