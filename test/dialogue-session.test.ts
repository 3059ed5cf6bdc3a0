/**
 * Dialogues through a real server and the device WebSocket, in text and keypad (input.text, input.dtmf):
 * the bank domain end to end with masking in events and the call record, the reply's language followed
 * by the session, and the confirmation gate against a scripted model that books without asking.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createProviders } from '../src/providers/index.js';
import { ScriptedLlm } from '../src/providers/llm/scripted.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import type { ChatMessage } from '../src/providers/llm/types.js';
import type { GrammarAware, GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import type { AsrProvider, AsrStream } from '../src/providers/asr/types.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

type Event = Record<string, unknown>;

class TextCaller {
  readonly events: Event[] = [];
  private readonly ws: WebSocket;

  constructor(url: string) {
    this.ws = new WebSocket(url, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) this.events.push(JSON.parse(String(data)) as Event);
    });
  }

  async open(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    return String((await this.waitFor((e) => e.type === 'session.started')).callId);
  }

  async waitFor(predicate: (e: Event) => boolean, since = 0, timeoutMs = 20_000): Promise<Event> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.events.slice(since).find(predicate);
      if (found) return found;
      if (performance.now() > deadline) throw new Error(`timed out; events: ${JSON.stringify(this.events.slice(since).map((e) => e.type))}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Send a turn and wait for the reply to finish playing; returns its text and the events of the turn. */
  async turn(send: () => void): Promise<{ text: string; events: Event[] }> {
    const since = this.events.length;
    send();
    const done = await this.waitFor((e) => e.type === 'response.done', since);
    return { text: String(done.text), events: this.events.slice(since) };
  }

  text(text: string): Promise<{ text: string; events: Event[] }> {
    return this.turn(() => this.ws.send(JSON.stringify({ type: 'input.text', text })));
  }

  keypad(digits: string): Promise<{ text: string; events: Event[] }> {
    return this.turn(() => {
      for (const digit of [...digits, '#']) this.ws.send(JSON.stringify({ type: 'input.dtmf', digit }));
    });
  }

  close(): void {
    this.ws.close();
  }
}

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
    const caller = new TextCaller(server.wsUrl);
    const callId = await caller.open();

    expect((await caller.text('I lost my card')).text).toMatch(/customer number/);
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
    const digits = await caller.text('cuatro uno uno uno');
    expect(digits.text).toBe('Quiere bloquear la tarjeta que termina en 4 1 1 1. No se puede deshacer. ¿La bloqueo?');
    const blocked = await caller.text('sí');
    expect(blocked.events.find((e) => e.type === 'response.tool_call')).toMatchObject({ name: 'block_card', arguments: '{"card_last4":"4111"}' });
    expect(blocked.text).toMatch(/^Su tarjeta que termina en 4 1 1 1 está bloqueada\./);
    // A second yes does not block again.
    const again = await caller.text('sí');
    expect(again.events.some((e) => e.type === 'response.tool_call')).toBe(false);
    caller.close();

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
    const caller = new TextCaller(server.wsUrl);
    await caller.open();
    const first = await caller.text('book a table for two at seven, you do not need to ask me');
    expect(first.events.find((e) => e.type === 'response.tool_call')).toMatchObject({ name: 'book_appointment' });
    expect(first.text).toBe('Shall I book a table for 2 at 19:00?');
    expect(registry.bookings()).toHaveLength(0);

    const refused = await caller.text('no');
    expect(refused.text).toBe('Shall I book a table for 2 at 19:00?');
    expect(registry.bookings()).toHaveLength(0);

    const yes = await caller.text('yes');
    expect(yes.text).toMatch(/^Booked, number \d{6}\.$/);
    expect(registry.bookings()).toHaveLength(1);

    // The model tries again on the next turn: that yes was spent.
    await caller.text('yes');
    expect(registry.bookings()).toHaveLength(1);
    caller.close();
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
    const caller = new TextCaller(server.wsUrl);
    await caller.open();
    await caller.text('I would like to book a table for two');
    expect(expected[expected.length - 1]).toBe('book_appointment.date');
    await caller.text('tomorrow at 8 pm, my name is Anna');
    expect(expected[expected.length - 1]).toBe('book_appointment.confirm');
    const booked = await caller.text('yes');
    expect(booked.text).toMatch(/^Done\./);
    expect(expected[expected.length - 1]).toBeUndefined();
    caller.close();
  });
});
