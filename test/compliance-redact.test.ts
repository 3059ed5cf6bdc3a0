/**
 * Payment data in what callers key, say or type: redacted in events, the call record (API and SQLite file),
 * logs and the model's context, whatever the agent asked; intact only at the tool that needs it.
 */
import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Writable } from 'node:stream';
import Database from 'better-sqlite3';
import pino from 'pino';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { speak } from './helpers/speech.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { SpeakingCaller, TextCaller } from './helpers/text-caller.js';
import { hashApiKey } from '../src/auth/auth.js';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { ibanValid, luhnValid, redact, redactPartial } from '../src/privacy/redact.js';
import { createProviders } from '../src/providers/index.js';
import { ScriptedLlm } from '../src/providers/llm/scripted.js';
import type { ChatMessage, ToolCall } from '../src/providers/llm/types.js';
import { buildServer, type VoiceServer } from '../src/server.js';
import type { ToolExecutor } from '../src/session/reply.js';

describe('redact()', () => {
  it('finds Luhn-valid card numbers written, keyed or spoken, and leaves other numbers alone', () => {
    expect(luhnValid('4111111111111111')).toBe(true);
    expect(luhnValid('4111111111111112')).toBe(false);
    expect(redact('my card is 4111 1111 1111 1111 thanks')).toBe('my card is ****1111 thanks');
    expect(redact('4111-1111-1111-1111')).toBe('****1111');
    expect(redact('DTMF: 4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1')).toBe('DTMF: ****1111');
    expect(redact('five five five five five five five five five five five five four four four four please')).toBe('****4444 please');
    expect(redact('quatre un un un un un un un un un un un un un un un')).toBe('****1111');
    expect(redact('cuatro uno uno uno, uno uno uno uno, uno uno uno uno, uno uno uno uno')).toBe('****1111');
    // Not cards: a failed checksum, a phone number, a date, a short code.
    expect(redact('4111 1111 1111 1112')).toBe('4111 1111 1111 1112');
    expect(redact('call me on +44 20 7946 0958 on 2026-11-29, code 1234')).toBe('call me on +44 20 7946 0958 on 2026-11-29, code 1234');
    // A number said between other words ends where they start.
    expect(redact('card 4111111111111111 expires 12 27')).toBe('card ****1111 expires 12 27');
  });

  it('finds IBANs by their mod-97 check, with or without spaces', () => {
    expect(ibanValid('GB82 WEST 1234 5698 7654 32')).toBe(true);
    expect(ibanValid('GB82 WEST 1234 5698 7654 33')).toBe(false);
    expect(redact('pay to GB82 WEST 1234 5698 7654 32 today')).toBe('pay to ****5432 today');
    expect(redact('IBAN DE89370400440532013000.')).toBe('IBAN ****3000.');
    expect(redact('GB82 WEST 1234 5698 7654 33')).toBe('GB82 WEST 1234 5698 7654 33');
  });

  it('is configurable: no kinds, no redaction; partial words hide long digit runs past the issuer prefix', () => {
    expect(redact('4111 1111 1111 1111', [])).toBe('4111 1111 1111 1111');
    expect(redact('DE89370400440532013000 4111111111111111', ['iban'])).toBe('****3000 4111111111111111');
    expect(redactPartial('my card is 4 1 1 1 1 1 1 1 1')).toBe('my card is 411111…');
    expect(redactPartial('table for 2 at 7')).toBe('table for 2 at 7');
    // 'digits': a number one digit short of a card (a recogniser's slip) is hidden too.
    const slipped = 'four one one one one one one one one one one one one one one';
    expect(redact(slipped)).toBe(slipped);
    expect(redact(`it is ${slipped} ok`, ['card', 'digits'])).toBe('it is ****1111 ok');
  });
});

const KEY = 'compliance-test-key';
const CARD_KEYED = '4111111111111111';
const CARD_SPOKEN = '5555555555554444';
const SPOKEN = 'five five five five five five five five five five five five four four four four';
const DIGIT_WORD = ['zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven', 'eight', 'nine'];

/** No card in any form: digits in a run (spaced or not) or spoken. */
function expectNoCard(text: string): void {
  const digitsOnly = text.replace(/[\s\-,]/g, '');
  expect(digitsOnly).not.toContain(CARD_KEYED);
  expect(digitsOnly).not.toContain(CARD_SPOKEN);
  expect(digitsOnly).not.toContain('41111111');
  expect(text).not.toContain('five five five five five');
}

describe('a call where card digits are keyed and spoken', () => {
  let server: VoiceServer;
  let httpUrl: string;
  let dbPath: string;
  const logLines: string[] = [];
  const modelSaw: ChatMessage[][] = [];
  const toolGot: string[] = [];

  beforeAll(async () => {
    dbPath = path.join(tmpdir(), `voice-agent-compliance-${randomUUID()}.db`);
    const config = mergeConfig(DEFAULT_CONFIG, {
      host: '127.0.0.1',
      port: 0,
      auth: { apiKeyHashes: [hashApiKey(KEY)] },
      store: { path: dbPath },
      sip: { enabled: false },
      privacy: { logTranscripts: true },
    });
    // Every log line kept, at debug level, to be searched for the numbers.
    const sink = new Writable({
      write(chunk: Buffer, _enc, done) {
        logLines.push(chunk.toString());
        done();
      },
    });
    const logger = pino({ level: 'debug' }, sink);
    // A model that takes payments: it reads the card from the caller's words as the embedded agent may.
    const llm = new ScriptedLlm((messages) => {
      modelSaw.push(messages.map((m) => ({ ...m, secret: undefined })));
      const last = messages[messages.length - 1];
      if (last.role === 'tool') return { text: `Paid with the card ending ${last.content}.` };
      const words = (last.secret ?? last.content).toLowerCase();
      const digits = words
        .split(/[^a-z0-9]+/)
        .map((w) => (/^\d+$/.test(w) ? w : DIGIT_WORD.indexOf(w) >= 0 ? String(DIGIT_WORD.indexOf(w)) : ''))
        .join('');
      if (digits.length >= 13) return { toolCalls: [{ id: `pay_${messages.length}`, name: 'take_payment', arguments: JSON.stringify({ card_number: digits }) }] };
      return { text: 'Please key or say your card number.' };
    });
    const tools: ToolExecutor = {
      definitions: () => [{ name: 'take_payment', description: 'Charge a card', parameters: { type: 'object', properties: { card_number: { type: 'string' } } } }],
      execute: async (call: ToolCall) => {
        const { card_number } = JSON.parse(call.arguments) as { card_number: string };
        toolGot.push(card_number);
        return { content: card_number.slice(-4) };
      },
      maskArguments: (call: ToolCall) => redact(call.arguments),
    };
    server = buildServer(config, logger, { ...createProviders(config, silentLogger()), llm, tools });
    const port = await server.start();
    await server.service.load();
    httpUrl = `http://127.0.0.1:${port}`;
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('masks them in events, record, SQLite file, logs and model context, and gives them intact to the tool', async () => {
    // A text client: what is checked is where the words go, not their sound.
    const caller = new TextCaller(`${httpUrl.replace('http', 'ws')}/v1/ws`, { apiKey: KEY });
    const callId = await caller.open();
    const events = caller.events;
    await caller.say('I want to pay my bill');
    await caller.keypad(CARD_KEYED);
    await caller.say(`my other card is ${SPOKEN}`);
    await caller.close();
    await new Promise((r) => setTimeout(r, 200));

    // The tool had the numbers, whole.
    expect(toolGot).toEqual([CARD_KEYED, CARD_SPOKEN]);
    const finals = events.filter((e) => e.type === 'transcript.final').map((e) => e.text);
    expect(finals).toEqual(['I want to pay my bill', 'DTMF: ****1111', 'my other card is ****4444']);
    expect(events.filter((e) => e.type === 'dtmf.received').map((e) => e.digit).join('')).toBe('411111#');
    expect(events.find((e) => e.type === 'response.tool_call')).toMatchObject({ arguments: '{"card_number":"****1111"}' });
    expect(events.filter((e) => e.type === 'response.done').map((e) => e.text)).toEqual([
      'Please key or say your card number.',
      'Paid with the card ending 1111.',
      'Paid with the card ending 4444.',
    ]);
    expectNoCard(JSON.stringify(events));

    const record = await (await fetch(`${httpUrl}/v1/calls/${callId}`, { headers: { authorization: `Bearer ${KEY}` } })).json();
    expect(JSON.stringify(record)).toContain('****4444');
    expectNoCard(JSON.stringify(record));
    // The file itself, read directly.
    const db = new Database(dbPath, { readonly: true });
    const rows = db.prepare('SELECT text FROM utterances').all() as { text: string }[];
    db.close();
    expect(rows.length).toBeGreaterThanOrEqual(6);
    expectNoCard(JSON.stringify(rows));
    // Logs, at debug, with transcripts logged.
    expect(logLines.some((l) => l.includes('caller said'))).toBe(true);
    expectNoCard(logLines.join('\n'));
    // What the model was given, minus the words kept aside for the embedded agent.
    expect(modelSaw.length).toBeGreaterThanOrEqual(5);
    expectNoCard(JSON.stringify(modelSaw));
  });
});

describe('a card number spoken aloud, through the real VAD and recogniser', () => {
  let server: TestServer;
  beforeAll(async () => {
    // 'digits' too: the recogniser may drop or add a digit, and a slipped number fails the Luhn check.
    server = await startTestServer({ privacy: { redact: ['card', 'iban', 'digits'] }, sip: { enabled: false } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('leaves no run of more than six digits in partial and final transcripts or the record', async () => {
    const caller = new SpeakingCaller(server.wsUrl);
    const callId = await caller.open();
    const events = caller.events;
    const pcm = await speak('my card number is four one one one one one one one one one one one one one one one');
    await caller.stream(pcm);
    await caller.stream(new Int16Array(16_000 * 2));
    const deadline = performance.now() + 15_000;
    while (!events.some((e) => e.type === 'response.done') && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    await caller.close();
    const finals = events.filter((e) => e.type === 'transcript.final').map((e) => String(e.text));
    // The words went through the recogniser and the caller's turn was taken: with the embedded grammar ASR a card
    // number is outside the restaurant agent's grammar, so it is rejected and answered honestly rather than stored;
    // an open-vocabulary recogniser would transcribe it, and then what it hears as digits must not come out.
    expect(finals.length).toBeGreaterThan(0);
    expect(events.some((e) => e.type === 'response.done')).toBe(true);
    await new Promise((r) => setTimeout(r, 200));
    const record = await (await fetch(`${server.httpUrl}/v1/calls/${callId}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).json();
    // What was said, as events and the record carry it (ids and timestamps are not speech: a UUID often holds seven
    // decimal digits in a row).
    const said = [
      ...events.flatMap((e) => ['text', 'heardText', 'arguments'].map((k) => e[k]).filter((v): v is string => typeof v === 'string')),
      ...((record as { transcript?: Array<{ text: string }> }).transcript ?? []).map((t) => t.text),
    ];
    expect(said.length).toBeGreaterThan(0);
    for (const text of said) {
      // No run of more than six digits, written or spoken.
      expect(text).not.toMatch(/(one[ ,]+){6}/);
      expect(text.replace(/[\s,]/g, '')).not.toMatch(/\d{7}/);
    }
  }, 40_000);
});

describe('a remote model (OpenAI-compatible server) never receives the numbers', () => {
  let server: TestServer;
  let model: import('node:http').Server;
  const bodies: string[] = [];
  beforeAll(async () => {
    const { createServer } = await import('node:http');
    model = createServer((req, res) => {
      let raw = '';
      req.on('data', (c: Buffer) => (raw += c.toString('utf8')));
      req.on('end', () => {
        bodies.push(raw);
        res.writeHead(200, { 'content-type': 'text/event-stream' });
        const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
          `data: ${JSON.stringify({ id: 'x', object: 'chat.completion.chunk', model: 'm', choices: [{ index: 0, delta, finish_reason: finish }] })}\n\n`;
        res.write(chunk({ role: 'assistant', content: 'Noted.' }));
        res.write(chunk({}, 'stop'));
        res.end('data: [DONE]\n\n');
      });
    });
    await new Promise<void>((resolve) => model.listen(0, '127.0.0.1', resolve));
    const port = (model.address() as import('node:net').AddressInfo).port;
    server = await startTestServer({ providers: { llm: { provider: 'openai', baseUrl: `http://127.0.0.1:${port}/v1`, model: 'm' } }, sip: { enabled: false } });
  });
  afterAll(async () => {
    await server?.stop();
    await new Promise<void>((resolve) => model.close(() => resolve()));
  });

  it('gets the redacted words only, keyed, typed and spoken', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    await caller.open();
    await caller.keypad(CARD_KEYED);
    await caller.say('send it to GB82 WEST 1234 5698 7654 32 please');
    await caller.say(`or charge ${SPOKEN}`);
    await caller.close();
    expect(bodies.length).toBe(3);
    const sent = bodies.join('\n');
    expect(sent).toContain('DTMF: ****1111');
    expect(sent).toContain('send it to ****5432 please');
    expect(sent).toContain('or charge ****4444');
    expectNoCard(sent);
    expect(sent).not.toContain('WEST');
  });
});
