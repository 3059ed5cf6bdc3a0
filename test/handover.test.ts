import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { contextHeaders, referToUri, summarize, twimlFor, type Handover, type HandoverFacts } from '../src/integration/handover.js';
import type { WebhookEvent } from '../src/integration/webhooks.js';
import { sipServerOf } from '../src/transports/sip/index.js';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { TextDialogue } from '../src/providers/llm/rules/driver.js';
import { validateRulesConfig, type RulesConfig } from '../src/providers/llm/rules/config.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import { computeTwilioSignature } from '../src/transports/telephony/twilio-signature.js';
import { TwilioCaller } from '../loadtest/twilio-caller.js';
import { Baresip, freePort } from './helpers/baresip.js';
import { SipTransferee } from './helpers/sip-transferee.js';
import { OPERATOR_SECRET, OPERATOR_SECRET_ENV, restaurantAgentWithHttpBooking, startOperatorService, type OperatorService } from './helpers/operator.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { TextCaller } from './helpers/text-caller.js';

/**
 * Handing the caller to a person with context: the summary's bounds and masking, the offer of a person after
 * turns not understood (typed turns), the `call.transfer` webhook at the operator's mock service, Twilio's
 * `<Connect action>` answered with a `<Dial>` carrying the context, and a SIP call whose caller (a scripted UA)
 * follows the REFER to a real transferee (SIPp) that receives the context headers.
 */
const TWILIO_AUTH_TOKEN = 'twilio-auth-token-for-handover-tests';
let ops: OperatorService;
let server: TestServer;
let dir: string;
let deskPort: number;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until<T>(what: string, check: () => T | null | undefined | false | Promise<T | null | undefined | false>, timeoutMs = 15_000, tick?: () => void): Promise<T> {
  const deadline = performance.now() + timeoutMs;
  for (;;) {
    const v = await check();
    if (v) return v;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    tick?.();
    await sleep(20);
  }
}

beforeAll(async () => {
  process.env[OPERATOR_SECRET_ENV] = OPERATOR_SECRET;
  ops = await startOperatorService(OPERATOR_SECRET);
  dir = await mkdtemp(path.join(tmpdir(), 'handover-'));
  deskPort = await freePort();
  const rulesPath = await restaurantAgentWithHttpBooking(path.join(dir, 'agent.json'), ops.url, {
    secretEnv: OPERATOR_SECRET_ENV,
    edit: (rules) => {
      const languages = rules.languages as string[];
      const all = (text: string) => Object.fromEntries(languages.map((l) => [l, text]));
      // Short lines: each reply plays in real time before the next typed turn.
      rules.fallback = all('Sorry?');
      rules.messages = { offerPerson: { en: 'A person?' }, carryOn: { en: 'Go on.' }, puttingThrough: { en: 'Transferring.' } };
      rules.outOfDomain = all('Sorry?');
      rules.handover = {
        queues: { default: `sip:desk@127.0.0.1:${deskPort}`, cards: `sip:cards@127.0.0.1:${deskPort}` },
        offerAfter: { consecutive: 2, total: 3 },
        summaryMaxChars: 300,
      };
      // "Press 0 for the card team": an intent that names its queue.
      rules.intents.push({
        name: 'card_team',
        phrases: Object.fromEntries(languages.map((l) => [l, ['dtmf 0', 'card team please']])),
        tool: { name: 'transfer_to_human', arguments: { queue: 'cards' } },
        say: all('Card team.'),
        reply: all(''),
      });
    },
  });
  server = await startTestServer({
    providers: { llm: { provider: 'rules', rulesPath }, asr: { provider: 'pocketsphinx', grammar: 'off' } },
    integration: { webhooks: { url: `${ops.url}/events`, secretEnv: OPERATOR_SECRET_ENV, backoffMs: 50 } },
    telephony: { twilio: { authToken: TWILIO_AUTH_TOKEN } },
    sip: { rtpPortMin: 41_000, rtpPortMax: 41_200 },
  });
}, 60_000);

afterAll(async () => {
  await server?.stop();
  await ops?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

function transferEvent(callId: string): WebhookEvent | undefined {
  return ops.requests.map((r) => r.json as WebhookEvent).find((e) => e?.type === 'call.transfer' && e.call_id === callId);
}

describe('the summary', () => {
  const facts: HandoverFacts = {
    language: 'en',
    intents: ['report_lost_card'],
    slots: { card_last4: '4111', pin: '****' },
    lastWords: 'my card 4111 1111 1111 1111 was stolen\r\nX-Evil: injected; tag=1 & more',
    notUnderstood: 2,
    caller: { customer_id: 'C-42', number: '+33123456789', api_secret: 'never shown' },
  };

  it('is one bounded line, masked like the call record, with the caller context', () => {
    const line = summarize(facts, 400);
    expect(line).toMatch(/^lang=en; asked=report_lost_card; card_last4=4111; pin=\*\*\*\*; not_understood=2; customer_id=C-42; number=\+33123456789; said="/);
    expect(line).not.toMatch(/[\r\n\u0000-\u001f]/);
    expect(line).toContain('****1111'); // the card number, masked as redact.ts does
    expect(line).not.toContain('4111 1111');
    expect(line).not.toContain('never shown');
    for (const max of [64, 120, 300]) {
      const short = summarize({ ...facts, lastWords: 'é'.repeat(5000) }, max);
      expect(short.length).toBeLessThanOrEqual(max);
      expect(Buffer.from(short, 'utf8').toString('utf8')).toBe(short);
    }
    expect(summarize(facts, 400)).toBe(line); // deterministic
  });

  it('travels in Refer-To and TwiML escaped, and decodes back to the same headers', () => {
    const handover: Handover = { callId: 'c0ffee-1', queue: 'cards', target: 'sip:cards@pbx.example.com', summary: summarize(facts), facts };
    const uri = referToUri(handover);
    expect(uri).not.toMatch(/[\s<>"]/);
    const [base, query] = uri.split('?');
    expect(base).toBe('sip:cards@pbx.example.com');
    const decoded = query.split('&').map((pair) => pair.split('=').map(decodeURIComponent));
    expect(decoded).toEqual(contextHeaders(handover).map((h) => [h.name, h.value]));
    expect(decoded.find(([name]) => name === 'User-to-User')?.[1]).toBe(`${Buffer.from('c0ffee-1').toString('hex')};encoding=hex;purpose=call-id`);
    const twiml = twimlFor(handover);
    expect(twiml).toMatch(/<Dial><Sip>sip:cards@pbx\.example\.com\?X-Voice-Agent-Call-Id=c0ffee-1&amp;X-Voice-Agent-Queue=cards&amp;X-Voice-Agent-Summary=lang%3Den/);
    expect(twimlFor({ ...handover, target: '+441234567890' })).toContain('<Dial><Number>+441234567890</Number></Dial>');
    expect(twimlFor(null)).toContain('<Hangup/>');
  });
});

describe('queues', () => {
  it('transfer_to_human lists the configured queues for a model and refuses others; an intent must name a known one', async () => {
    const registry = new ToolRegistry({ handover: { queues: { default: 'sip:desk@pbx', cards: 'sip:cards@pbx', loans: '+441234567890' } } });
    const tool = registry.definitions().find((d) => d.name === 'transfer_to_human');
    expect((tool?.parameters.properties as Record<string, { enum?: string[] }>).queue.enum).toEqual(['default', 'cards', 'loans']);
    const ctx = { callId: 'c', signal: new AbortController().signal };
    const ok = await registry.execute({ id: 't1', name: 'transfer_to_human', arguments: '{"queue":"cards","reason":"lost card"}' }, ctx);
    expect(ok).toEqual({ content: JSON.stringify({ ok: true, queue: 'cards', reason: 'lost card' }), action: 'transfer' });
    const bad = await registry.execute({ id: 't2', name: 'transfer_to_human', arguments: '{"queue":"sales"}' }, ctx);
    expect(bad.action).toBeUndefined();
    expect(bad.content).toContain('unknown queue');
    const rules = JSON.parse(readFileSync('config/agent-rules.json', 'utf8')) as RulesConfig & { intents: { tool?: { name: string; arguments?: Record<string, unknown> } }[] };
    rules.handover = { queues: { cards: 'sip:cards@pbx', 'Bad Name': 'mailto:x' } };
    const transfer = rules.intents.find((i) => i.tool?.name === 'transfer_to_human');
    if (transfer?.tool) transfer.tool.arguments = { queue: 'sales' };
    expect(() => validateRulesConfig(rules)).toThrow(/handover\.queues\.Bad Name[\s\S]*tool\.arguments\.queue: unknown queue \(known: default, cards, Bad Name\)/);
  });
});

describe('the offer of a person, in the dialogue engine', () => {
  it('comes in the caller\'s language after turns not understood in the call, not only in a row', async () => {
    const rules = JSON.parse(readFileSync('config/agent-rules.json', 'utf8')) as RulesConfig;
    rules.handover = { queues: { default: 'sip:desk@pbx.example.com' }, offerAfter: { total: 3 } };
    const agent = new RuleBasedAgent({ rules });
    await agent.load();
    const lines: Record<string, { gibberish: string; ok: string; yes: string; offer: RegExp }> = {
      en: { gibberish: 'blorp wug', ok: 'what time is it', yes: 'yes', offer: /put you through to a person\?$/ },
      fr: { gibberish: 'blorp wug', ok: 'quelle heure est il', yes: 'oui', offer: /vous passe une personne \?$/ },
      de: { gibberish: 'blorp wug', ok: 'wie spät ist es', yes: 'ja', offer: /mit einer Person verbinden\?$/ },
      es: { gibberish: 'blorp wug', ok: 'qué hora es', yes: 'sí', offer: /le pase con una persona\?$/ },
      it: { gibberish: 'blorp wug', ok: 'che ore sono', yes: 'sì', offer: /la passi a una persona\?$/ },
    };
    for (const [language, l] of Object.entries(lines)) {
      const d = new TextDialogue(agent, new ToolRegistry({ handover: rules.handover }), { language, callId: `c-${language}` });
      await d.say(l.ok);
      expect((await d.say(l.gibberish)).text, language).not.toMatch(l.offer);
      await d.say(l.ok); // understood: the run ends, the call's count does not
      expect((await d.say(l.gibberish)).text, language).not.toMatch(l.offer);
      const offer = await d.say(l.gibberish);
      expect(offer.text, language).toMatch(l.offer);
      expect(offer.language).toBe(language);
      const yes = await d.say(l.yes);
      expect(yes.action, language).toBe('transfer');
      expect(agent.handoverFacts(d.history)).toMatchObject({ notUnderstood: 3 });
    }
  });
});

describe('a person offered after turns not understood', () => {
  it('offers after two in a row; no carries on; yes transfers with the context to the webhook and the record', async () => {
    const caller = new TextCaller(server.wsUrl, { apiKey: TEST_API_KEY });
    try {
      const callId = await caller.open();
      expect((await caller.say('what time is it')).text).toMatch(/^It is /);
      expect((await caller.say('blorp wug zzz')).text).not.toMatch(/person/);
      expect((await caller.say('flibber quux snark')).text).toBe('A person?');
      const no = await caller.say('no');
      expect(no.text).toBe('Go on.');
      expect(no.events.some((e) => e.type === 'call.action')).toBe(false);
      expect((await caller.say('gronk')).text).not.toMatch(/person/);
      expect((await caller.say('zorp zorp')).text).toBe('A person?');
      const yes = await caller.say('yes');
      expect(yes.text).toBe('Transferring.');
      const action = yes.events.find((e) => e.type === 'call.action');
      // The caller's client learns the queue, never the target or the summary.
      expect(action).toEqual({ type: 'call.action', action: 'transfer', queue: 'default' });

      const event = await until('the call.transfer webhook', () => transferEvent(callId), 5000);
      const signed = ops.requests.find((r) => (r.json as WebhookEvent)?.id === event.id);
      expect(signed?.signed).toBe(true);
      expect(event.data).toMatchObject({
        queue: 'default',
        reason: 'not_understood',
        target: `sip:desk@127.0.0.1:${deskPort}`,
        language: 'en',
        intents: ['ask_time'],
        slots: {},
        not_understood: 4,
      });
      const summary = String(event.data.summary);
      expect(summary).toMatch(/^lang=en; asked=ask_time; not_understood=4; said="yes"$/);
      const record = (await (await fetch(`${server.httpUrl}/v1/calls/${callId}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).json()) as { transfer: unknown };
      expect(record.transfer).toMatchObject({ queue: 'default', reason: 'not_understood', target: `sip:desk@127.0.0.1:${deskPort}` });
    } finally {
      await caller.close();
    }
  }, 30_000);
});

describe('Twilio <Connect action>', () => {
  const actionUrl = (): string => `${server.httpUrl}/v1/telephony/twilio/connect-action`;
  const post = (params: Record<string, string>, signature?: string): Promise<Response> =>
    fetch(actionUrl(), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', ...(signature ? { 'x-twilio-signature': signature } : {}) },
      body: new URLSearchParams(params).toString(),
    });

  it('refuses unsigned and wrongly signed requests', async () => {
    const params = { CallSid: 'CA123', AccountSid: 'AC1', CallStatus: 'in-progress' };
    expect((await post(params)).status).toBe(403);
    expect((await post(params, computeTwilioSignature('another-token', actionUrl(), params))).status).toBe(403);
    // Signed for other parameters than those sent.
    expect((await post(params, computeTwilioSignature(TWILIO_AUTH_TOKEN, actionUrl(), { ...params, CallSid: 'CA999' }))).status).toBe(403);
    const unknown = await post(params, computeTwilioSignature(TWILIO_AUTH_TOKEN, actionUrl(), params));
    expect(unknown.status).toBe(200);
    expect(await unknown.text()).toContain('<Hangup/>');
  });

  it('dials the queue the agent chose, with the context, once the stream it transferred has ended', async () => {
    const twilio = new TwilioCaller(`ws://127.0.0.1:${server.port}/v1/telephony/twilio`, { authToken: TWILIO_AUTH_TOKEN, parameters: { customer_id: 'C-7' } });
    const silence = new Int16Array(320);
    await twilio.connect();
    try {
      // The caller presses 0 for the card team.
      for (let i = 0; i < 10; i++) twilio.sendFrame(silence);
      for (const digit of ['0', '#']) twilio.sendDtmf(digit);
      const closed = await until('the stream to end', () => twilio.closeInfo, 20_000, () => twilio.sendFrame(silence));
      expect(closed).toEqual({ code: 1000, reason: 'agent transferred the call' });
      const params = { CallSid: twilio.callSid, AccountSid: 'AC' + '0'.repeat(32), CallStatus: 'in-progress' };
      const res = await post(params, computeTwilioSignature(TWILIO_AUTH_TOKEN, actionUrl(), params));
      expect(res.status).toBe(200);
      expect(res.headers.get('content-type')).toContain('text/xml');
      const twiml = await res.text();
      const sip = /<Dial><Sip>(.+)<\/Sip><\/Dial>/.exec(twiml)?.[1]?.replaceAll('&amp;', '&');
      expect(sip).toBeDefined();
      const [target, query] = (sip ?? '').split('?');
      expect(target).toBe(`sip:cards@127.0.0.1:${deskPort}`);
      const headers = Object.fromEntries(query.split('&').map((pair) => pair.split('=').map(decodeURIComponent)));
      const callId = await server.server.service.store.idForNetworkId(twilio.callSid);
      expect(headers['X-Voice-Agent-Call-Id']).toBe(callId);
      expect(headers['X-Voice-Agent-Queue']).toBe('cards');
      expect(headers['X-Voice-Agent-Summary']).toMatch(/^lang=en; asked=card_team; not_understood=0; customer_id=C-7; said="DTMF: 0"$/);
      expect((await until('the call.transfer webhook', () => transferEvent(callId ?? ''), 5000)).data).toMatchObject({ queue: 'cards', network_id: twilio.callSid, caller: { customer_id: 'C-7' } });
      // Once only: a replayed request hangs up.
      const again = await post(params, computeTwilioSignature(TWILIO_AUTH_TOKEN, actionUrl(), params));
      expect(await again.text()).toContain('<Hangup/>');
    } finally {
      await twilio.close();
    }
  }, 40_000);
});

describe('Twilio <Connect action> for a call this node did not run', () => {
  const actionUrl = (): string => `${server.httpUrl}/v1/telephony/twilio/connect-action`;
  const act = async (callSid: string): Promise<string> => {
    const params = { CallSid: callSid, AccountSid: 'AC' + '0'.repeat(32), CallStatus: 'in-progress' };
    const res = await fetch(actionUrl(), {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', 'x-twilio-signature': computeTwilioSignature(TWILIO_AUTH_TOKEN, actionUrl(), params) },
      body: new URLSearchParams(params).toString(),
    });
    expect(res.status).toBe(200);
    return res.text();
  };

  it('hands a call whose node died to a person (default queue), and hangs up a call that ended normally', async () => {
    const store = server.server.service.store;
    const owner = server.server.service.networkCallsOwner;
    // What another node left in the shared call record: one call still open when its node died, one ended.
    await store.callStarted('lost-call-1', 'twilio', owner, 'CAlost0001', { customerId: 'C-9' });
    await store.callStarted('done-call-1', 'twilio', owner, 'CAdone0001');
    store.utterance('lost-call-1', { role: 'caller', turn: 1, text: 'I lost my card', language: 'en' });
    store.callEnded('done-call-1', 'hangup');

    const lost = await act('CAlost0001');
    const sip = /<Dial><Sip>(.+)<\/Sip><\/Dial>/.exec(lost)?.[1]?.replaceAll('&amp;', '&') ?? '';
    const [target, query] = sip.split('?');
    expect(target).toBe(`sip:desk@127.0.0.1:${deskPort}`);
    const headers = Object.fromEntries(query.split('&').map((pair) => pair.split('=').map(decodeURIComponent)));
    expect(headers).toMatchObject({ 'X-Voice-Agent-Call-Id': 'lost-call-1', 'X-Voice-Agent-Queue': 'default' });
    expect(headers['X-Voice-Agent-Summary']).toMatch(/customer_id=C-9; said="I lost my card"$/);
    expect(await act('CAdone0001')).toContain('<Hangup/>');
  }, 20_000);
});

describe('SIP transfer to a real transferee', () => {
  it('the caller follows the REFER to the desk (SIPp), whose INVITE carries the call id and the summary', async () => {
    const sip = sipServerOf(server.server.service);
    if (!sip) throw new Error('SIP transport did not start');
    const desk = await startDesk();
    const caller = new SipTransferee();
    await caller.start();
    try {
      await caller.call(sip.port);
      const call = await until('the SIP call', () => [...sip.calls.values()].find((c) => c.state === 'confirmed'));
      const session = await until('the session', () => server.server.service.sessions.get(call.recordId));
      session.submitText('card team please');
      const { refer, targetPort } = await caller.followRefer(sip.port);
      expect(targetPort).toBe(deskPort);
      // The context rides on the REFER itself too.
      expect(refer).toMatch(new RegExp(`^X-Voice-Agent-Call-Id: ${call.recordId}\\r?$`, 'mi'));
      await until('our leg to end', () => !sip.calls.has(call.callId), 5000);
      // The record is closed with the session, a moment after our leg left the dialog table.
      expect(await until('the record closed', async () => (await server.server.service.store.get(call.recordId, 'any'))?.end_reason, 5000)).toBe('transferred');
      // What the desk received, as SIPp logged it.
      const received = await until('the desk INVITE', () => {
        const text = desk.log();
        return /INVITE sip:cards@/.test(text) ? text : null;
      }, 5000);
      const invite = received.slice(received.indexOf('INVITE sip:cards@'));
      expect(invite).toMatch(new RegExp(`^X-Voice-Agent-Call-Id: ${call.recordId}\\r?$`, 'mi'));
      expect(invite).toMatch(/^X-Voice-Agent-Queue: cards\r?$/im);
      expect(invite).toMatch(/^X-Voice-Agent-Summary: lang=en; asked=card_team; not_understood=0; number=caller; said="card team please"\r?$/im);
      expect(invite).toMatch(new RegExp(`^User-to-User: ${Buffer.from(call.recordId).toString('hex')};encoding=hex;purpose=call-id\\r?$`, 'mi'));
      const event = await until('the call.transfer webhook', () => transferEvent(call.recordId), 5000);
      expect(event.data).toMatchObject({ queue: 'cards', target: `sip:cards@127.0.0.1:${deskPort}` });
      expect((await server.server.service.store.get(call.recordId, 'any'))?.transfer).toMatchObject({ queue: 'cards', reason: null });
      await caller.hangUpTarget();
    } finally {
      caller.close();
      await desk.stop();
    }
  }, 30_000);

  it('a phone that cannot follow embedded headers (baresip 1.0) gets the REFER again without them', async () => {
    const sip = sipServerOf(server.server.service);
    if (!sip) throw new Error('SIP transport did not start');
    const desk = await startDesk();
    const phone = await Baresip.start(new Int16Array(8000 * 30));
    try {
      await phone.command('dial', `sip:agent@127.0.0.1:${sip.port}`);
      await phone.waitFor('CALL_ESTABLISHED');
      const call = await until('the SIP call', () => [...sip.calls.values()].find((c) => c.state === 'confirmed'));
      const session = await until('the session', () => server.server.service.sessions.get(call.recordId));
      session.submitText('card team please');
      await until('our leg to end', () => !sip.calls.has(call.callId), 20_000);
      // The record is closed with the session, a moment after our leg left the dialog table.
      expect(await until('the record closed', async () => (await server.server.service.store.get(call.recordId, 'any'))?.end_reason, 5000)).toBe('transferred');
      const refers = phone.log.join('').split(/\r?\n/).filter((line) => line.startsWith('Refer-To:'));
      expect(refers).toHaveLength(2);
      expect(refers[0]).toContain('?X-Voice-Agent-Call-Id=');
      expect(refers[1]).toBe(`Refer-To: <sip:cards@127.0.0.1:${deskPort}>`);
      // baresip reached the desk: without the headers, which the REFER and the webhook still carried.
      const received = await until('the desk INVITE', () => (/INVITE sip:cards@/.test(desk.log()) ? desk.log() : null), 5000);
      expect(received).toMatch(/User-Agent: baresip/);
      await phone.command('hangup');
    } finally {
      await phone.stop();
      await phone.cleanup();
      await desk.stop();
    }
  }, 40_000);
});

/** SIPp as a person's desk on `deskPort`: answers one call and logs every message (-trace_msg). */
async function startDesk(): Promise<{ log(): string; stop(): Promise<void> }> {
  const traceDir = await mkdtemp(path.join(tmpdir(), 'sipp-'));
  const trace = path.join(traceDir, 'desk.log');
  const proc: ChildProcess = spawn(
    'sipp',
    ['-sf', path.resolve('test/fixtures/sipp-transfer-target.xml'), '-i', '127.0.0.1', '-p', String(deskPort), '-m', '1', '-trace_msg', '-message_file', trace, '-nostdin', '-timeout', '40s'],
    { cwd: traceDir, stdio: 'ignore' },
  );
  const exited = new Promise<void>((resolve) => proc.once('exit', () => resolve()));
  // SIPp is listening once it has written its (empty) trace file.
  await until('SIPp to start', () => existsSync(trace) || proc.exitCode !== null, 5000);
  return {
    log: () => (existsSync(trace) ? readFileSync(trace, 'utf8') : ''),
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill();
      await exited;
      await rm(traceDir, { recursive: true, force: true });
    },
  };
}
