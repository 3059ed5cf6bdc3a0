/**
 * Several agents in one process (config `agents`): two agents chosen by the dialled number of real SIP INVITEs,
 * one by a token claim, one by the API key; an agent file changed while a call runs (that call keeps v1, a new
 * call gets v2, the records name each version); a broken file leaves the last good version serving. Typed and
 * keypad turns: what is checked is which agent answers, not recognition.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { once } from 'node:events';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { hashApiKey } from '../src/auth/auth.js';
import { AgentRegistry, AgentSelectionError, type AgentReloadEvent } from '../src/agents/registry.js';
import { DEFAULT_CONFIG, loadConfig, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createProviders } from '../src/providers/index.js';
import { SqliteCallStore, type CallRecord } from '../src/store/call-store.js';
import Database from 'better-sqlite3';
import { configProblems, validateConfig } from '../src/config-schema.js';
import { TEST_API_KEY, startTestServer, type TestServer } from './helpers/server.js';
import { TextCaller } from './helpers/text-caller.js';
import { until } from './helpers/until.js';
import { udpSipPhone, type UdpSipPhone } from './helpers/sip-phone.js';
import WebSocket from 'ws';
import { OPERATOR_SECRET, OPERATOR_SECRET_ENV, startOperatorService, type OperatorService } from './helpers/operator.js';
import { picoAvailable, speak } from './helpers/speech.js';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { acousticModel, modelPresent } from '../src/providers/asr/pocketsphinx/grammar.js';
import { DEFAULT_MODEL_DIR, PocketSphinxAsr } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrProvider } from '../src/providers/asr/types.js';

const ALPHA_NUMBER = '+441110000001';
const BETA_NUMBER = '+441110000002';
const TEST_KEY_ID = hashApiKey(TEST_API_KEY).slice(0, 8);

/** A one-language agent whose every line names it, so a reply shows which agent (and version) answered. */
function agentFile(label: string, phrases = ['what are your opening hours', 'opening hours']): string {
  const en = (text: string) => ({ en: text });
  return JSON.stringify({
    version: 1,
    languages: ['en'],
    defaultLanguage: 'en',
    fallback: en(`${label}, again?`),
    toolError: en(`${label}: that did not work.`),
    toolDone: en(`${label}: done.`),
    intents: [{ name: 'hours', phrases: { en: phrases }, reply: en(`${label}: nine.`) }],
  });
}


let dir: string;
let server: TestServer;
let ops: OperatorService;

async function record(callId: string): Promise<CallRecord> {
  const res = await fetch(`${server.httpUrl}/v1/calls/${callId}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
  expect(res.status).toBe(200);
  return (await res.json()) as CallRecord;
}

/** A request of dialog `callId` from `phone` to `number` at the test server. */
function sipRequest(method: string, number: string, phone: UdpSipPhone, callId: string, cseq: number, headers: string[] = [], body = '', toTag = ''): string {
  return [
    `${method} sip:${number}@127.0.0.1:${phone.sip.port} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${phone.port};branch=z9hG4bK${callId}${cseq};rport`,
    'Max-Forwards: 70',
    'From: <sip:+34600111222@trunk.example>;tag=c1',
    `To: <sip:${number}@127.0.0.1:${phone.sip.port}>${toTag ? `;tag=${toTag}` : ''}`,
    `Call-ID: ${callId}`,
    `CSeq: ${cseq} ${method}`,
    `Contact: <sip:caller@127.0.0.1:${phone.port}>`,
    ...headers,
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body,
  ].join('\r\n');
}

/** A PCMU audio offer; nothing listens on its RTP port (the turns are keypad digits by INFO). */
function offer(phone: UdpSipPhone): string {
  return ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${phone.port + 2} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');
}

/** A SIP phone on a UDP socket: INVITE to `number`, ACK, keypad digits by INFO, BYE. */
async function sipCall(number: string, digits: string): Promise<{ recordId: string; reply: string }> {
  const phone = await udpSipPhone(server.server.service);
  const { sip, got } = phone;
  const callId = `agents-${number}-${Date.now()}`;
  let toTag = '';
  const send = (method: string, cseq: number, headers: string[] = [], body = ''): void => phone.send(sipRequest(method, number, phone, callId, cseq, headers, body, toTag));
  try {
    send('INVITE', 1, ['Content-Type: application/sdp'], offer(phone));
    const ok = await until('200 OK', () => got.find((m) => m.startsWith('SIP/2.0 200')));
    toTag = /^To: .*;tag=([^;\r\n]+)/m.exec(ok)?.[1] ?? '';
    send('ACK', 1);
    const recordId = sip.calls.get(callId)?.recordId;
    if (!recordId) throw new Error('no record for the SIP call');
    [...digits, '#'].forEach((d, i) => send('INFO', 2 + i, ['Content-Type: application/dtmf-relay'], `Signal=${d}\r\nDuration=160\r\n`));
    const line = await until('agent reply', async () => (await server.server.service.store.get(recordId, 'any'))?.transcript.find((t) => t.role === 'agent'));
    send('BYE', 10);
    await until('call ended', () => !sip.calls.has(callId));
    return { recordId, reply: line.text };
  } finally {
    phone.close();
  }
}

async function mint(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${server.httpUrl}/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

describe('several agents in one process', () => {
  beforeAll(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'agents-'));
    await writeFile(path.join(dir, 'alpha.json'), agentFile('Alpha'));
    await writeFile(path.join(dir, 'beta.json'), agentFile('Beta'));
    await writeFile(path.join(dir, 'gamma.json'), agentFile('Gamma v1'));
    process.env[OPERATOR_SECRET_ENV] = OPERATOR_SECRET;
    ops = await startOperatorService(OPERATOR_SECRET);
    server = await startTestServer({
      integration: { webhooks: { url: `${ops.url}/events`, secretEnv: OPERATOR_SECRET_ENV, events: ['call.started'] } },
      agents: {
        files: { alpha: path.join(dir, 'alpha.json'), beta: path.join(dir, 'beta.json'), gamma: path.join(dir, 'gamma.json') },
        numbers: { [ALPHA_NUMBER]: 'alpha', '+44 111 000 0002': 'beta' },
        apiKeys: { [TEST_KEY_ID]: 'gamma' },
        reload: { enabled: true, debounceMs: 50, pollMs: 250 },
      },
      // Typed and keypad turns only: no grammar to compile.
      providers: { asr: { provider: 'pocketsphinx', grammar: 'off' } },
    });
  }, 60_000);
  afterAll(async () => {
    await server?.stop();
    await ops?.close();
    await rm(dir, { recursive: true, force: true });
  });

  it('a SIP call answers with the agent of the number dialled, and its record names it', async () => {
    const alpha = await sipCall(ALPHA_NUMBER, '1');
    const beta = await sipCall(BETA_NUMBER, '1');
    expect(alpha.reply).toBe('Alpha, again?');
    expect(beta.reply).toBe('Beta, again?');
    const versions = server.server.service.agents;
    expect(await record(alpha.recordId)).toMatchObject({ agent: 'alpha', agent_version: versions.current('alpha')?.version });
    expect(await record(beta.recordId)).toMatchObject({ agent: 'beta', agent_version: versions.current('beta')?.version });
    expect(versions.current('alpha')?.version).toMatch(/^[0-9a-f]{8}$/);
    // The call.started webhook names the agent and version too.
    const started = await until('call.started webhook', () =>
      ops.requests.find((r) => (r.json as { call_id?: string } | null)?.call_id === beta.recordId),
    );
    expect(started.json).toMatchObject({ type: 'call.started', data: { agent: 'beta', agent_version: versions.current('beta')?.version } });
  }, 20_000);

  it('a Twilio media stream answers with the agent of its `to` parameter', async () => {
    const res = await mint({});
    const { token } = (await res.json()) as { token: string };
    const ws = new WebSocket(`ws://127.0.0.1:${server.port}/v1/telephony/twilio?token=${token}`);
    await once(ws, 'open');
    const callSid = `CA${Date.now()}`;
    try {
      const send = (msg: Record<string, unknown>): void => ws.send(JSON.stringify({ streamSid: 'MZ1', ...msg }));
      send({ event: 'connected', protocol: 'Call', version: '1.0.0' });
      send({
        event: 'start',
        start: { streamSid: 'MZ1', callSid, customParameters: { to: BETA_NUMBER }, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } },
      });
      const recordId = await until('the call record', () => server.server.service.store.idForNetworkId(callSid));
      for (const digit of ['1', '#']) send({ event: 'dtmf', dtmf: { track: 'inbound_track', digit } });
      const line = await until('agent reply', async () => (await server.server.service.store.get(recordId, TEST_KEY_ID))?.transcript.find((t) => t.role === 'agent'));
      expect(line.text).toBe('Beta, again?');
      expect(await record(recordId)).toMatchObject({ agent: 'beta', transport: 'twilio' });
    } finally {
      ws.close();
    }
  }, 20_000);

  it('an agent this node does not have is refused as unknown_agent on the realtime and Twilio doors, never as an internal error', async () => {
    // A token minted while "delta" was still configured (or on a node that has it): the door must refuse it as
    // the caller's request, with a close code that says not to retry (the realtime socket said 1011 before).
    const { token } = await server.server.service.auth.mintToken({ kind: 'api_key', keyId: TEST_KEY_ID }, { agent: 'delta' });
    const realtime = new WebSocket(`ws://127.0.0.1:${server.port}/v1/realtime?model=voice-agent&token=${token}`);
    const realtimeClosed = once(realtime, 'close');
    const [first] = (await once(realtime, 'message')) as [Buffer];
    const [realtimeCode, realtimeReason] = (await realtimeClosed) as [number, Buffer];
    expect(JSON.parse(first.toString())).toMatchObject({ type: 'error', error: { type: 'invalid_request_error', code: 'unknown_agent' } });
    expect({ code: realtimeCode, reason: realtimeReason.toString() }).toEqual({ code: 1008, reason: 'unknown_agent' });

    // A Twilio stream whose TwiML <Parameter name="agent"> names no agent here: the same code, as the close reason.
    const { token: streamToken } = (await (await mint({})).json()) as { token: string };
    const twilio = new WebSocket(`ws://127.0.0.1:${server.port}/v1/telephony/twilio?token=${streamToken}`);
    await once(twilio, 'open');
    const twilioClosed = once(twilio, 'close');
    const callSid = `CA${Date.now()}`;
    twilio.send(JSON.stringify({ event: 'start', streamSid: 'MZ2', start: { streamSid: 'MZ2', callSid, customParameters: { agent: 'delta' }, mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } } }));
    const [twilioCode, twilioReason] = (await twilioClosed) as [number, Buffer];
    expect({ code: twilioCode, reason: twilioReason.toString() }).toEqual({ code: 1008, reason: 'unknown_agent' });
    // Refused before any record.
    expect(await server.server.service.store.idForNetworkId(callSid)).toBeNull();
  }, 10_000);

  it('with unknownNumber "refuse", a number no agent answers gets SIP 404', async () => {
    const agents = server.server.service.config.agents;
    agents.unknownNumber = 'refuse';
    const phone = await udpSipPhone(server.server.service);
    try {
      phone.send(sipRequest('INVITE', '+449990000000', phone, 'refused-1', 1, ['Content-Type: application/sdp'], offer(phone)));
      await until('404', () => phone.got.find((m) => m.startsWith('SIP/2.0 404')));
    } finally {
      agents.unknownNumber = 'default';
      phone.close();
    }
  }, 10_000);

  it('a token claim chooses the agent; an unknown one is refused when the token is minted', async () => {
    const res = await mint({ agent: 'beta' });
    expect(res.status).toBe(200);
    const caller = new TextCaller(server.wsUrl, { token: ((await res.json()) as { token: string }).token });
    const callId = await caller.open();
    expect((await caller.say('what are your opening hours')).text).toBe('Beta: nine.');
    expect(server.server.service.sessions.get(callId)?.agent?.name).toBe('beta');
    await caller.close();
    const unknown = await mint({ agent: 'delta' });
    expect(unknown.status).toBe(400);
    expect(await unknown.json()).toMatchObject({ error: 'unknown_agent' });
  }, 20_000);

  it('a changed file: the running call keeps v1, a new call gets v2; a broken file keeps v2 serving', async () => {
    const agents = server.server.service.agents;
    // No claim, no number: the API key's agent.
    const first = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const firstId = await first.open();
    expect((await first.say('opening hours')).text).toBe('Gamma v1: nine.');
    const v1 = agents.current('gamma')?.version;

    const reloaded = once(agents, 'reloaded') as Promise<[AgentReloadEvent]>;
    await writeFile(path.join(dir, 'gamma.json'), agentFile('Gamma v2'));
    const [event] = await reloaded;
    expect(event).toMatchObject({ name: 'gamma', previous: v1 });
    const v2 = event.version;
    expect(v2).not.toBe(v1);

    expect((await first.say('opening hours')).text).toBe('Gamma v1: nine.');
    const second = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const secondId = await second.open();
    expect((await second.say('opening hours')).text).toBe('Gamma v2: nine.');

    const failed = once(agents, 'reload_failed') as Promise<[AgentReloadEvent]>;
    await writeFile(path.join(dir, 'gamma.json'), '{ "version": 1, "languages": [');
    const [failure] = await failed;
    expect(failure).toMatchObject({ name: 'gamma', version: v2 });
    expect(failure.error).toMatch(/not valid JSON/);
    const third = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    const thirdId = await third.open();
    expect((await third.say('opening hours')).text).toBe('Gamma v2: nine.');

    await Promise.all([first.close(), second.close(), third.close()]);
    expect(await record(firstId)).toMatchObject({ agent: 'gamma', agent_version: v1 });
    expect(await record(secondId)).toMatchObject({ agent: 'gamma', agent_version: v2 });
    expect(await record(thirdId)).toMatchObject({ agent: 'gamma', agent_version: v2 });
  }, 30_000);
});

describe('agent selection order', () => {
  it('claim, then dialled number, then API key, then the default; unknown names and numbers refused', async () => {
    const local = await mkdtemp(path.join(tmpdir(), 'agents-select-'));
    try {
      await writeFile(path.join(local, 'a.json'), agentFile('A'));
      await writeFile(path.join(local, 'b.json'), agentFile('B'));
      const config = mergeConfig(DEFAULT_CONFIG, {
        agents: {
          files: { a: path.join(local, 'a.json'), b: path.join(local, 'b.json') },
          default: 'a',
          numbers: { '+15550001': 'b' },
          apiKeys: { k1: 'b' },
          unknownNumber: 'refuse',
          reload: { enabled: false },
        },
        providers: { asr: { provider: 'pocketsphinx', grammar: 'off' } },
      });
      const registry = new AgentRegistry(config, createProviders(config, silentLogger()), silentLogger());
      await registry.load();
      expect(registry.select('k0', { agent: 'a', to: '+15550001' }).name).toBe('a');
      expect(registry.select('k0', { request_uri: '+1 555 0001' }).name).toBe('b');
      expect(registry.select('k1', {}).name).toBe('b');
      expect(registry.select('k0', {}).name).toBe('a');
      // "default" names the default agent (here a file): the agent of providers.llm answers no call.
      expect(registry.select('k0', { agent: 'default' }).name).toBe('a');
      expect(registry.usesImplicit).toBe(false);
      expect(() => registry.select('k0', { agent: 'zeta' })).toThrow(AgentSelectionError);
      expect(() => registry.select('k0', { request_uri: '+15559999' })).toThrow(/no agent answers/);
      await registry.close();
    } finally {
      await rm(local, { recursive: true, force: true });
    }
  });
});

const englishModel = modelPresent(acousticModel('en', DEFAULT_MODEL_DIR));

describe('agent grammars on one recogniser', () => {
  it.skipIf(!englishModel)('each agent decodes against its own grammar; a replaced version is freed when its last call ends', async () => {
    const local = await mkdtemp(path.join(tmpdir(), 'agents-asr-'));
    try {
      await writeFile(path.join(local, 'hours.json'), agentFile('Hours', ['what are your opening hours']));
      await writeFile(path.join(local, 'cards.json'), agentFile('Cards', ['block my card']));
      const config = mergeConfig(DEFAULT_CONFIG, {
        agents: { files: { hours: path.join(local, 'hours.json'), cards: path.join(local, 'cards.json') }, reload: { enabled: false } },
        providers: { asr: { provider: 'pocketsphinx', languages: ['en'] } },
      });
      const providers = createProviders(config, silentLogger());
      const registry = new AgentRegistry(config, providers, silentLogger());
      const t0 = performance.now();
      await registry.load();
      const loadMs = performance.now() - t0;
      const speech = await speak('block my card', { engine: picoAvailable() ? 'pico' : 'espeak' });
      const decode = async (asr: AsrProvider | undefined) => {
        if (!asr) throw new Error('no agent');
        const stream = asr.createStream({ language: 'en' });
        const frame = INTERNAL_SAMPLE_RATE / 50;
        for (let i = 0; i < speech.length; i += frame) stream.push(speech.subarray(i, i + frame));
        const final = await stream.finalize();
        stream.close();
        return final;
      };
      const cards = await decode(registry.current('cards')?.asr);
      const hours = await decode(registry.current('hours')?.asr);
      expect(cards).toMatchObject({ text: 'block my card', inGrammar: true });
      expect(hours.text).not.toBe('block my card');
      // Two agents' grammars (four decoders each) next to the models: a few hundred ms on this machine.
      console.log(`agent grammars: 2 agents loaded in ${Math.round(loadMs)} ms`);

      // A new version while a call holds the old one: the old grammars stay until that call releases them.
      const held = registry.current('cards');
      if (!held) throw new Error('no cards agent');
      registry.acquire(held);
      await writeFile(path.join(local, 'cards.json'), agentFile('Cards', ['block my card', 'cancel my card']));
      const next = await registry.reload('cards');
      expect(next?.version).not.toBe(held.version);
      expect(await decode(held.asr)).toMatchObject({ text: 'block my card', inGrammar: true });
      const asr = providers.asr;
      if (!(asr instanceof PocketSphinxAsr)) throw new Error('not pocketsphinx');
      expect(asr.agentGrammarKeys).toEqual(expect.arrayContaining([`cards@${held.version}`, `cards@${next?.version}`]));
      registry.release(held);
      await until('old grammars freed', () => !asr.agentGrammarKeys.includes(`cards@${held.version}`));
      expect(asr.agentGrammarKeys).toContain(`cards@${next?.version}`);
      await registry.close();
      await providers.asr.close?.();
    } finally {
      await rm(local, { recursive: true, force: true });
    }
  }, 30_000);
});

describe('agents on the call record and in the config', () => {
  it('config/example.agents.json: the restaurant and the bank, the bank on its own number', async () => {
    // Grammars are not the point here: none compile.
    const config = mergeConfig(loadConfig(['--config', 'config/example.agents.json'], {}), { providers: { asr: { provider: 'pocketsphinx', grammar: 'off' } } });
    const local = new AgentRegistry(config, createProviders(config, silentLogger()), silentLogger());
    await local.load();
    expect(local.select('k', { request_uri: '+442079460001' }).name).toBe('bank');
    expect(local.select('k', { to: '+442079460000' }).name).toBe('restaurant');
    expect(local.select('k', {}).name).toBe('restaurant');
    await local.close();
  });

  it('a database from before agents gains the two columns; its old calls read agent null', async () => {
    const local = await mkdtemp(path.join(tmpdir(), 'agents-store-'));
    const file = path.join(local, 'calls.db');
    try {
      const old = new Database(file);
      old.exec('CREATE TABLE calls (id TEXT PRIMARY KEY, transport TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT, end_reason TEXT, owner TEXT)');
      old.prepare("INSERT INTO calls (id, transport, started_at, owner) VALUES ('old', 'ws', '2026-01-01T00:00:00Z', 'k')").run();
      old.close();
      const store = new SqliteCallStore({ path: file, retentionDays: 0 }, silentLogger());
      await store.callStarted('new', 'sip', 'k', undefined, {}, { name: 'bank', version: '0123abcd' });
      expect(await store.get('old', 'k')).toMatchObject({ agent: null, agent_version: null });
      expect(await store.get('new', 'k')).toMatchObject({ agent: 'bank', agent_version: '0123abcd' });
      await store.close();
    } finally {
      await rm(local, { recursive: true, force: true });
    }
  });

  it('routes to agents that are not in agents.files are configuration errors', () => {
    const config = mergeConfig(DEFAULT_CONFIG, {
      agents: { files: { bank: 'config/agent-bank.json' }, default: 'shop', numbers: { '+1555': 'bank', '+1556': 'shop' }, apiKeys: { k1: 'default' } },
    });
    expect(configProblems(config, DEFAULT_CONFIG)).toEqual([]);
    expect(() => validateConfig(config, 'test', DEFAULT_CONFIG)).toThrow(/agents\.default: "shop" is not one of agents\.files[\s\S]*agents\.numbers\.\+1556: "shop"/);
  });
});
