import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  RuleBasedAgent,
  RulesConfigError,
  extractSlots,
  validateRulesConfig,
  type RulesConfig,
} from '../src/providers/llm/rules/index.js';
import { silentLogger } from '../src/core/logger.js';
import { createLlmProvider, type LlmConfig } from '../src/providers/llm/index.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import type { ChatMessage, LlmEvent, LlmProvider, ToolCall } from '../src/providers/llm/types.js';

async function run(
  agent: LlmProvider,
  messages: ChatMessage[],
  language: string,
  signal: AbortSignal = new AbortController().signal,
): Promise<LlmEvent[]> {
  const events: LlmEvent[] = [];
  for await (const ev of agent.stream({ messages, tools: [], language, signal })) events.push(ev);
  return events;
}

const textOf = (events: LlmEvent[]): string =>
  events.map((e) => (e.type === 'text' ? e.text : '')).join('');
const toolCalls = (events: LlmEvent[]): ToolCall[] =>
  events.flatMap((e) => (e.type === 'tool_call' ? [e.call] : []));
const doneOf = (events: LlmEvent[]): string | undefined => {
  const last = events[events.length - 1];
  return last?.type === 'done' ? last.finishReason : undefined;
};
const user = (content: string): ChatMessage => ({ role: 'user', content });

describe('RuleBasedAgent', () => {
  const agent = new RuleBasedAgent();

  it('loads the shipped config', async () => {
    await agent.load();
    expect(agent.rules.languages).toEqual(expect.arrayContaining(['en', 'fr', 'de', 'es', 'it']));
  });

  // Mostly ASR-shaped input: lowercase, no punctuation, some with a wrong word.
  const cases: Array<[lang: string, utterance: string, intent: string]> = [
    ['en', 'hello', 'greeting'],
    ['en', 'hi what time is it', 'ask_time'],
    ['en', 'what tim is it', 'ask_time'],
    ['en', 'i wood like to book a table for two at 7 30 pm', 'book_appointment'],
    ['en', 'when are you open', 'opening_hours'],
    ['en', 'what time do you open', 'opening_hours'],
    ['en', 'i want to talk to a real person', 'transfer_to_human'],
    ['en', 'thank you goodbye', 'goodbye'],
    ['en', 'thanks', 'thanks'],
    ['en', 'what can you do', 'capabilities'],
    ['fr', 'bonjour', 'greeting'],
    ['fr', 'quel heure et il', 'ask_time'],
    ['fr', 'je voudrais réserver une table pour deux personnes à 20h', 'book_appointment'],
    ['fr', 'a quelle heure ouvrez vous', 'opening_hours'],
    ['fr', 'je veux parler a un conseiller', 'transfer_to_human'],
    ['fr', 'merci au revoir', 'goodbye'],
    ['fr', 'merci beaucoup', 'thanks'],
    ['fr', 'qu est ce que vous pouvez faire', 'capabilities'],
    ['de', 'guten tag', 'greeting'],
    ['de', 'wie spat is es', 'ask_time'],
    ['de', 'ich mochte einen tisch fur vier personen um 19 uhr reservieren', 'book_appointment'],
    ['de', 'wann haben sie geöffnet', 'opening_hours'],
    ['de', 'ich möchte mit einem menschen sprechen', 'transfer_to_human'],
    ['de', 'auf wiedersehen', 'goodbye'],
    ['de', 'danke schön', 'thanks'],
    ['es', 'hola', 'greeting'],
    ['es', 'que ora es', 'ask_time'],
    ['es', 'quiero reservar una mesa para cuatro personas a las nueve de la noche', 'book_appointment'],
    ['es', 'a que hora abren', 'opening_hours'],
    ['es', 'quiero hablar con una persona', 'transfer_to_human'],
    ['es', 'adios', 'goodbye'],
    ['es', 'que puedes hacer', 'capabilities'],
    ['it', 'buongiorno', 'greeting'],
    ['it', 'che ore sonno', 'ask_time'],
    ['it', 'vorrei prenotare un tavolo per due alle otto di sera', 'book_appointment'],
    ['it', 'a che ora aprite', 'opening_hours'],
    ['it', 'voglio parlare con un operatore', 'transfer_to_human'],
    ['it', 'arrivederci', 'goodbye'],
    ['it', 'grazie mille', 'thanks'],
    ['it', 'cosa sai fare', 'capabilities'],
  ];
  it.each(cases)('[%s] "%s" → %s', async (lang, utterance, intent) => {
    await agent.load();
    expect(agent.classify(utterance, lang)?.intent.name).toBe(intent);
  });

  it('falls back per language for nonsense', async () => {
    const en = await run(agent, [user('purple monkey dishwasher quantum')], 'en');
    expect(textOf(en)).toBe("Sorry, I didn't catch that. Could you say it again?");
    expect(doneOf(en)).toBe('stop');
    const fr = await run(agent, [user('le chat mange des croquettes')], 'fr');
    expect(textOf(fr)).toMatch(/^Pardon/);
    const de = await run(agent, [user('das auto ist blau')], 'de');
    expect(textOf(de)).toMatch(/^Entschuldigung/);
  });

  it('replies in the request language, defaulting to en for unknown ones', async () => {
    expect(textOf(await run(agent, [user('hola')], 'es'))).toMatch(/^¡Hola!/);
    expect(textOf(await run(agent, [user('grazie')], 'it-IT'))).toMatch(/^Prego!/);
    expect(textOf(await run(agent, [user('hello')], 'pt'))).toMatch(/^Hello!/);
  });

  it('streams several text events with a short first clause', async () => {
    const events = await run(agent, [user('when are you open')], 'en');
    const texts = events.filter((e) => e.type === 'text');
    expect(texts.length).toBeGreaterThan(3);
    expect(textOf(events)).toBe('Sure. We are open every day from 11 AM to 10 PM.');
    expect(textOf(events).split('.')[0]).toBe('Sure');
    expect(doneOf(events)).toBe('stop');
  });

  it('ask time: tool_call, then the reply uses the tool result', async () => {
    const registry = new ToolRegistry({ timezone: 'UTC', now: () => new Date('2024-05-01T15:42:10Z') });
    const history: ChatMessage[] = [user('hey what time is it')];
    const first = await run(agent, history, 'en');
    expect(doneOf(first)).toBe('tool_calls');
    const calls = toolCalls(first);
    expect(calls).toHaveLength(1);
    expect(calls[0].name).toBe('get_current_time');

    const result = await registry.execute(calls[0], { callId: 'c1', signal: new AbortController().signal });
    expect(JSON.parse(result.content)).toMatchObject({ time: '3:42 PM', time_24h: '15:42', iso: '2024-05-01T15:42:10+00:00' });
    history.push({ role: 'assistant', content: textOf(first), toolCalls: calls });
    history.push({ role: 'tool', content: result.content, toolCallId: calls[0].id });

    const second = await run(agent, history, 'en');
    expect(textOf(second)).toBe('It is 3:42 PM.');
    expect(doneOf(second)).toBe('stop');
    // The reply follows the language of the caller's words, not the request's.
    const fr: ChatMessage[] = [user('quelle heure est-il'), ...history.slice(1)];
    const frReply = await run(agent, fr, 'en');
    expect(textOf(frReply)).toBe('Il est 15:42.');
    expect(frReply[0]).toEqual({ type: 'language', language: 'fr' });
    expect(textOf(await run(agent, [user('wie spät ist es'), ...history.slice(1)], 'en'))).toBe('Es ist 15:42 Uhr.');
  });

  it('booking: values given early fill their slots; it asks only for what is missing, then reads back', async () => {
    const dated = new RuleBasedAgent({ now: () => new Date('2026-11-29T10:00:00Z'), timezone: 'Europe/Paris' });
    const history: ChatMessage[] = [user('je voudrais reserver une table pour deux personnes a 20h au nom de Dupont')];
    const first = await run(dated, history, 'fr');
    expect(toolCalls(first)).toEqual([]);
    expect(textOf(first)).toBe('Pour quel jour ?');
    history.push({ role: 'assistant', content: textOf(first) }, user('demain'));
    const second = await run(dated, history, 'fr');
    expect(textOf(second)).toBe('Une table pour 2 le lundi 30 novembre à 20 h, au nom de Dupont. Je réserve ?');
    const confirmation = second.find((e) => e.type === 'confirmation');
    expect(confirmation).toEqual({
      type: 'confirmation',
      call: { name: 'book_appointment', arguments: JSON.stringify({ party_size: 2, date: '2026-11-30', time: '20:00', name: 'Dupont' }) },
    });
  });

  it('a bare booking request asks for the party size instead of booking blind', async () => {
    const events = await run(agent, [user('i would like to make a reservation')], 'en');
    expect(toolCalls(events)).toEqual([]);
    expect(textOf(events)).toBe('For how many people?');
  });

  it('a tool error becomes a spoken apology', async () => {
    const [call] = toolCalls(await run(agent, [user('what time is it')], 'en'));
    const history: ChatMessage[] = [
      user('what time is it'),
      { role: 'assistant', content: '', toolCalls: [call] },
      { role: 'tool', content: JSON.stringify({ error: 'boom' }), toolCallId: call.id },
    ];
    expect(textOf(await run(agent, history, 'en'))).toMatch(/^Sorry, something went wrong/);
  });

  it('goodbye says farewell, then calls end_call; the tool carries the hangup action', async () => {
    const events = await run(agent, [user('ok thanks bye')], 'en');
    expect(textOf(events)).toBe('Goodbye! Thank you for calling.');
    const [call] = toolCalls(events);
    expect(call.name).toBe('end_call');
    expect(doneOf(events)).toBe('tool_calls');
    const registry = new ToolRegistry();
    const result = await registry.execute(call, { callId: 'c3', signal: new AbortController().signal });
    expect(result).toEqual({ content: '{"ok":true}', action: 'hangup' });
    // Nothing more to say after the tool result.
    const after = await run(
      agent,
      [user('ok thanks bye'), { role: 'assistant', content: textOf(events), toolCalls: [call] }, { role: 'tool', content: result.content, toolCallId: call.id }],
      'en',
    );
    expect(after).toEqual([{ type: 'done', finishReason: 'stop' }]);
  });

  it('transfer to human calls transfer_to_human', async () => {
    const events = await run(agent, [user('passez moi un humain s il vous plait')], 'fr');
    expect(toolCalls(events)[0]?.name).toBe('transfer_to_human');
    const result = await new ToolRegistry().execute(toolCalls(events)[0], { callId: 'c', signal: new AbortController().signal });
    expect(result.action).toBe('transfer');
  });

  it('opens the call with the welcome when there is no user turn', async () => {
    const events = await run(agent, [{ role: 'system', content: 'You are a voice agent.' }], 'de');
    expect(textOf(events)).toBe('Hallo! Wie kann ich Ihnen helfen?');
  });

  it('abort stops the stream promptly', async () => {
    const ac = new AbortController();
    const events: LlmEvent[] = [];
    for await (const ev of agent.stream({ messages: [user('what can you do')], tools: [], language: 'en', signal: ac.signal })) {
      events.push(ev);
      if (events.length === 2) ac.abort();
    }
    expect(events.filter((e) => e.type === 'text')).toHaveLength(2);
    expect(events[events.length - 1]).toEqual({ type: 'done', finishReason: 'cancelled' });

    const pre = new AbortController();
    pre.abort();
    expect(await run(agent, [user('hello')], 'en', pre.signal)).toEqual([{ type: 'done', finishReason: 'cancelled' }]);
  });
});

describe('slot extraction', () => {
  it.each([
    ['table for two at 7:30 p.m.', { party_size: 2, time: '19:30' }],
    ['a table for 4 people tonight at 8', { party_size: 4, time: '20:00' }],
    ['for 8 pm please', { time: '20:00' }],
    ['pour quatre personnes à huit heures du soir', { party_size: 4, time: '20:00' }],
    ['einen tisch für zwei um 19 uhr 30', { party_size: 2, time: '19:30' }],
    ['para dos a las ocho y media de la tarde', { party_size: 2, time: '20:30' }],
    ['per sei persone alle 21', { party_size: 6, time: '21:00' }],
    ['my name is smith table for 3', { party_size: 3, name: 'Smith' }],
    ['ich heiße müller', { name: 'Müller' }],
  ])('%s', (utterance, expected) => {
    expect(extractSlots(utterance)).toEqual(expected);
  });
});

describe('rules config validation', () => {
  const minimal = (): RulesConfig => ({
    version: 1,
    languages: ['en', 'fr'],
    defaultLanguage: 'en',
    fallback: { en: 'Sorry?', fr: 'Pardon ?' },
    toolError: { en: 'Oops.', fr: 'Oups.' },
    toolDone: { en: 'Done.', fr: 'Fait.' },
    intents: [{ name: 'hi', phrases: { en: ['hello'], fr: ['bonjour'] }, reply: { en: 'Hi!', fr: 'Salut !' } }],
  });

  /** The message of the RulesConfigError that `bad` raises. */
  const problemsOf = (bad: unknown, source: string): string => {
    try {
      validateRulesConfig(bad, source);
    } catch (e) {
      expect(e).toBeInstanceOf(RulesConfigError);
      return (e as Error).message;
    }
    throw new Error(`${source}: accepted`);
  };

  it('accepts a minimal config passed inline', async () => {
    const agent = new RuleBasedAgent({ rules: minimal() });
    expect(textOf(await run(agent, [user('bonjour')], 'fr'))).toBe('Salut !');
  });

  it('lists every problem with its path', () => {
    const bad = minimal() as unknown as Record<string, unknown>;
    bad.defaultLanguage = 'de';
    bad.intents = [
      { name: 'hi', phrases: { en: ['hello'], xx: ['?'] }, reply: { en: 'Hi {result.x}' } },
      { name: 'book', phrases: { en: ['book'] }, tool: { name: 'book_appointment', arguments: { n: '{people}' } }, reply: { en: 'ok', fr: 'ok' } },
    ];
    const msg = problemsOf(bad, 'my-rules.json');
    expect(msg).toContain('my-rules.json: invalid rules config');
    expect(msg).toContain('defaultLanguage: must be one of languages [en, fr]');
    expect(msg).toContain('intents[0] (hi).phrases.xx: language not in languages');
    expect(msg).toContain('intents[0] (hi).reply.fr: missing');
    expect(msg).toContain('intents[0] (hi).reply.en: placeholder {result.x} not allowed');
    expect(msg).toContain('intents[1] (book).tool.arguments.n: unknown slot {people}');
  });

  it('checks forms: slot types and prompts, a tool to call, known slots in templates, requires/about naming forms', () => {
    const bad = minimal() as unknown as Record<string, unknown>;
    bad.intents = [
      {
        name: 'order',
        phrases: { en: ['order'], fr: ['commander'] },
        slots: [{ name: 'size', type: 'colour', prompt: { en: 'Size?' } }],
        confirm: { en: 'A {size} one?', fr: 'Un {size} ?' },
        reply: { en: 'Ok {nope}.', fr: 'Ok.' },
      },
      { name: 'status', about: 'missing', phrases: { en: ['status'] }, reply: { en: 'x', fr: 'x' } },
      { name: 'pay', requires: 'order', phrases: { en: ['pay'] }, reply: { en: 'x', fr: 'x' } },
    ];
    const msg = problemsOf(bad, 'forms.json');
    expect(msg).toContain('intents[0] (order).slots: a form needs a tool to call once confirmed');
    expect(msg).toContain('intents[0] (order).slots[0].type: must be one of number, time, date, name, digits, values, yesno');
    expect(msg).toContain('intents[0] (order).slots[0].prompt.fr: missing or empty text');
    expect(msg).toContain('intents[0] (order).reply.en: placeholder {nope} not allowed');
    expect(msg).toContain('intents[1] (status).about: must name a form intent (one with slots): order');
    expect(msg).not.toContain('intents[2] (pay).requires');

    // A language the engine has no lines for must bring them.
    const pt = { ...minimal(), languages: ['en', 'pt'], fallback: { en: 'Sorry?', pt: 'Desculpe?' }, toolError: { en: 'Oops.', pt: 'Ups.' }, toolDone: { en: 'Done.', pt: 'Feito.' } };
    pt.intents = [{ name: 'hi', phrases: { en: ['hello'], pt: ['olá'] }, reply: { en: 'Hi!', pt: 'Olá!' } }];
    expect(() => validateRulesConfig(pt)).toThrow(/messages\.handoff\.pt: missing \(no built-in text in this language\)/);
  });

  it('reports unreadable and malformed files clearly', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'rules-'));
    const broken = path.join(dir, 'broken.json');
    writeFileSync(broken, '{ "version": 1, ');
    await expect(new RuleBasedAgent({ rulesPath: broken }).load()).rejects.toThrow(/broken\.json: not valid JSON/);
    await expect(new RuleBasedAgent({ rulesPath: path.join(dir, 'nope.json') }).load()).rejects.toThrow(
      /nope\.json: cannot read rules file/,
    );
    const invalid = path.join(dir, 'invalid.json');
    writeFileSync(invalid, JSON.stringify({ ...minimal(), fallback: { en: 'Sorry?' } }));
    await expect(new RuleBasedAgent({ rulesPath: invalid }).load()).rejects.toThrow(/fallback\.fr: missing or empty text/);
  });
});

describe('ToolRegistry', () => {
  const ctx = { callId: 'c', signal: new AbortController().signal };

  it('exposes JSON-schema definitions for the built-ins', () => {
    const names = new ToolRegistry().definitions().map((d) => d.name);
    expect(names).toEqual(['get_current_time', 'book_appointment', 'transfer_to_human', 'end_call']);
  });

  it('never throws: unknown tool, bad JSON, bad args, bad timezone, timeout', async () => {
    const reg = new ToolRegistry({ timeoutMs: 50 });
    const err = async (call: ToolCall): Promise<string> =>
      (JSON.parse((await reg.execute(call, ctx)).content) as { error: string }).error;
    expect(await err({ id: '1', name: 'nope', arguments: '{}' })).toMatch(/unknown tool "nope"/);
    expect(await err({ id: '2', name: 'book_appointment', arguments: '{party' })).toMatch(/not valid JSON/);
    // A booking needs the caller's yes first (confirm-gate.ts); once confirmed, bad arguments are still reported.
    expect(await err({ id: '3', name: 'book_appointment', arguments: '{"party_size":"many"}' })).toBe('confirmation_required');
    const confirmed: ChatMessage[] = [
      { role: 'assistant', content: 'A table for many?', confirms: { name: 'book_appointment', arguments: '{"party_size":"many"}' } },
      user('yes'),
    ];
    const bad = await reg.execute({ id: '3b', name: 'book_appointment', arguments: '{"party_size":"many"}' }, { ...ctx, messages: confirmed });
    expect((JSON.parse(bad.content) as { error: string }).error).toMatch(/integer/);
    expect(await err({ id: '4', name: 'get_current_time', arguments: '{"timezone":"Mars/Olympus"}' })).toMatch(/unknown timezone/);
    reg.register({
      definition: { name: 'slow', description: 'never answers', parameters: { type: 'object', properties: {} } },
      run: () => new Promise(() => undefined),
    });
    expect(await err({ id: '5', name: 'slow', arguments: '' })).toMatch(/timed out after 50 ms/);
  });

  it('get_current_time honours the IANA timezone argument', async () => {
    const reg = new ToolRegistry({ timezone: 'UTC', now: () => new Date('2024-01-15T23:05:00Z') });
    const r = JSON.parse((await reg.execute({ id: '1', name: 'get_current_time', arguments: '{"timezone":"Asia/Tokyo"}' }, ctx)).content) as Record<string, string>;
    expect(r).toMatchObject({ iso: '2024-01-16T08:05:00+09:00', time: '8:05 AM', time_24h: '08:05', timezone: 'Asia/Tokyo' });
  });
});

describe('createLlmProvider', () => {
  it('builds each provider and rejects incomplete configs clearly', () => {
    const log = silentLogger();
    expect(createLlmProvider({ provider: 'rules' }, log).name).toBe('rules');
    expect(createLlmProvider({ provider: 'openai', baseUrl: 'http://127.0.0.1:1/v1', model: 'm' }, log).name).toBe('openai');
    expect(createLlmProvider({ provider: 'llamacpp', modelPath: '/x.gguf' }, log).name).toBe('llamacpp');
    expect(() => createLlmProvider({ provider: 'openai', baseUrl: '', model: 'm' }, log)).toThrow(/needs baseUrl \(or baseUrls\) and model/);
    expect(() => createLlmProvider({ provider: 'llamacpp', modelPath: '' }, log)).toThrow(/needs modelPath/);
    expect(() => createLlmProvider({ provider: 'gpt' } as unknown as LlmConfig, log)).toThrow(/unknown provider "gpt"/);
  });
});
