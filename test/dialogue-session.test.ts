/**
 * Dialogues through a real server and the device WebSocket, in text and keypad (input.text, input.dtmf):
 * the bank domain end to end with masking in events and the call record, the reply's language followed
 * by the session, and the confirmation gate against a scripted model that books without asking.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createProviders } from '../src/providers/index.js';
import { ScriptedLlm } from '../src/providers/llm/scripted.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import type { ChatMessage } from '../src/providers/llm/types.js';
import type { GrammarAware, GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import type { AsrProvider, AsrStream } from '../src/providers/asr/types.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { TextCaller } from './helpers/text-caller.js';

describe('bank card service over the device WebSocket (text and keypad)', () => {
  let server: TestServer;
  beforeAll(async () => {
    server = await startTestServer({
      providers: { llm: { provider: 'rules', rulesPath: 'config/agent-bank.json' } },
      agent: { tools: { bank: {} } },
      privacy: { logTranscripts: true },
    });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('verifies with keypad digits, blocks the card after the read-back, masks the secrets everywhere, follows the caller into Spanish', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const callId = await caller.open();

    expect((await caller.say('I lost my card')).text).toMatch(/customer number/);
    const number = await caller.keypad('12345678');
    expect(number.text).toMatch(/PIN/);
    // The sensitive answer is masked in the caller's transcript event, and its digits are not echoed one by one.
    expect(number.events.find((e) => e.type === 'transcript.final')?.text).toBe('****5678');
    expect(number.events.filter((e) => e.type === 'dtmf.received')).toEqual([]);
    const pin = await caller.keypad('4321');
    expect(pin.text).toBe('Thank you, Anna Smith, you are verified. Which card is it? Please give me its last four digits.');
    expect(pin.events.find((e) => e.type === 'transcript.final')?.text).toBe('****');
    // The tool call event carries masked arguments.
    expect(pin.events.find((e) => e.type === 'response.tool_call')).toMatchObject({ name: 'verify_customer', arguments: '{"customer_number":"****5678","pin":"****"}' });

    // The caller switches to Spanish: the reply, and the session, follow.
    const digits = await caller.say('cuatro uno uno uno');
    expect(digits.text).toBe('Quiere bloquear la tarjeta que termina en 4 1 1 1. No se puede deshacer. ¿La bloqueo?');
    const blocked = await caller.say('sí');
    expect(blocked.events.find((e) => e.type === 'response.tool_call')).toMatchObject({ name: 'block_card', arguments: '{"card_last4":"4111"}' });
    expect(blocked.text).toMatch(/^Su tarjeta que termina en 4 1 1 1 está bloqueada\./);
    // A second yes does not block again.
    const again = await caller.say('sí');
    expect(again.events.some((e) => e.type === 'response.tool_call')).toBe(false);
    // A text client (replies=text): every reply came as text, none as audio.
    expect(caller.events.find((e) => e.type === 'session.started')?.replies).toBe('text');
    expect(caller.events.some((e) => e.type === 'response.audio.started')).toBe(false);
    expect(caller.audioMessages).toBe(0);
    await caller.close();

    const record = await (await fetch(`${server.httpUrl}/v1/calls/${callId}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).json() as {
      transcript: { role: string; text: string; language: string }[];
    };
    const json = JSON.stringify(record);
    expect(json).not.toMatch(/12345678|4321|1 2 3 4 5 6 7 8|4 3 2 1/);
    expect(json).toContain('****5678');
    const agentLines = record.transcript.filter((t) => t.role === 'agent');
    expect(agentLines[agentLines.length - 1].language).toBe('es');
    expect(agentLines[1].language).toBe('en');
  });
});

describe('confirmation is enforced where tools run, whoever proposes the call', () => {
  let server: TestServer;
  let registry: ToolRegistry;
  beforeAll(async () => {
    const config = mergeConfig(DEFAULT_CONFIG, {});
    registry = new ToolRegistry({ timezone: 'UTC' });
    // A model that books as soon as anyone asks, and asks only when the service refuses.
    const eager = new ScriptedLlm((messages: readonly ChatMessage[]) => {
      const last = messages[messages.length - 1];
      if (last.role === 'tool') {
        const result = JSON.parse(last.content) as { error?: string; confirmation_id?: string };
        if (result.error === 'confirmation_required') return { text: 'Shall I book a table for 2 at 19:00?' };
        if (result.error) return { text: 'That did not work.' };
        return { text: `Booked, number ${result.confirmation_id}.` };
      }
      const turn = messages.filter((m) => m.role === 'user').length;
      return { toolCalls: [{ id: `call_${turn}`, name: 'book_appointment', arguments: '{"party_size":2,"time":"19:00"}' }] };
    });
    server = await startTestServer({}, { ...createProviders(config, silentLogger()), llm: eager, tools: registry });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('a model that calls book_appointment without asking is refused until the caller says yes, and books once', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    await caller.open();
    const first = await caller.say('book a table for two at seven, you do not need to ask me');
    expect(first.events.find((e) => e.type === 'response.tool_call')).toMatchObject({ name: 'book_appointment' });
    expect(first.text).toBe('Shall I book a table for 2 at 19:00?');
    expect(registry.bookings()).toHaveLength(0);

    const refused = await caller.say('no');
    expect(refused.text).toBe('Shall I book a table for 2 at 19:00?');
    expect(registry.bookings()).toHaveLength(0);

    const yes = await caller.say('yes');
    expect(yes.text).toMatch(/^Booked, number \d{6}\.$/);
    expect(registry.bookings()).toHaveLength(1);

    // The model tries again on the next turn: that yes was spent.
    await caller.say('yes');
    expect(registry.bookings()).toHaveLength(1);
    await caller.close();
  });
});

describe('per-question recognition: the session tells the recogniser what the agent waits for', () => {
  let server: TestServer;
  const expected: (string | undefined)[] = [];
  beforeAll(async () => {
    const config = mergeConfig(DEFAULT_CONFIG, {});
    const real = createProviders(config, silentLogger());
    // The real recogniser, with its streams' expect() recorded (PocketSphinx itself gains grammars elsewhere).
    const realAsr = real.asr as AsrProvider & Partial<GrammarAware>;
    const asr: AsrProvider & Partial<GrammarAware> = {
      name: real.asr.name,
      capabilities: real.asr.capabilities,
      get languages() {
        return real.asr.languages;
      },
      load: () => real.asr.load(),
      // Still grammar-aware: the service compiles the agent's grammars into it at load.
      ...(realAsr.setGrammars ? { setGrammars: (specs: readonly GrammarSpec[]) => realAsr.setGrammars!(specs) } : {}),
      close: () => real.asr.close?.() ?? Promise.resolve(),
      createStream: (options) => {
        const stream: AsrStream = real.asr.createStream(options);
        stream.expect = (expectation) => {
          expected.push(expectation);
        };
        return stream;
      },
    };
    server = await startTestServer({}, { ...real, asr });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('passes "<intent>.<slot>" after each question and nothing once the form is done', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    await caller.open();
    await caller.say('I would like to book a table for two');
    expect(expected[expected.length - 1]).toBe('book_appointment.date');
    await caller.say('tomorrow at 8 pm, my name is Anna');
    expect(expected[expected.length - 1]).toBe('book_appointment.confirm');
    const booked = await caller.say('yes');
    expect(booked.text).toMatch(/^Done\./);
    expect(expected[expected.length - 1]).toBeUndefined();
    await caller.close();
  });
});
