/**
 * Caller context in: the operator's backend puts a customer id, an agent, a language and its own variables into
 * the session token (validated and bounded); a SIP INVITE's From, P-Asserted-Identity, Request-URI and X-headers
 * become caller variables. A typed call shows a token claim reaching the operator's booking service through a
 * tool call (`send` and `headers` templates).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { callerFromParameters, callerFromSip, dialledLanguage } from '../src/integration/context.js';
import { parseSipMessage, type SipRequest } from '../src/transports/sip/message.js';
import { TEST_API_KEY, type TestServer } from './helpers/server.js';
import { startAgentWithOperator, type OperatorService } from './helpers/operator.js';
import { TextCaller } from './helpers/text-caller.js';
import { udpSipPhone } from './helpers/sip-phone.js';

function invite(sipPort: number, localPort: number, callId: string): string {
  const sdp = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 40000 RTP/AVP 0', 'a=rtpmap:0 PCMU/8000', ''].join('\r\n');
  return [
    `INVITE sip:+441234500000@127.0.0.1:${sipPort} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${localPort};branch=z9hG4bK${callId};rport`,
    'Max-Forwards: 70',
    'From: "Ana Ruiz" <sip:+34600111222@trunk.example>;tag=c1',
    `To: <sip:+441234500000@127.0.0.1:${sipPort}>`,
    `Call-ID: ${callId}`,
    'CSeq: 1 INVITE',
    `Contact: <sip:caller@127.0.0.1:${localPort}>`,
    'P-Asserted-Identity: <tel:+34600111222>',
    'X-Account-Id: ACME-9',
    'X-Queue: sales\u0001',
    'Content-Type: application/sdp',
    `Content-Length: ${Buffer.byteLength(sdp)}`,
    '',
    sdp,
  ].join('\r\n');
}

describe('SIP headers as caller variables', () => {
  it('From, P-Asserted-Identity, To, Request-URI and X-headers, control characters removed', () => {
    const req = parseSipMessage(Buffer.from(invite(5060, 5070, 'parse-1'))) as SipRequest;
    expect(callerFromSip(req)).toEqual({
      number: '+34600111222',
      display_name: 'Ana Ruiz',
      asserted_identity: '+34600111222',
      to: '+441234500000',
      request_uri: '+441234500000',
      x_account_id: 'ACME-9',
      x_queue: 'sales',
    });
  });

  it('the dialled number fixes the call\'s language (sip.languageByNumber)', () => {
    const caller = callerFromSip(parseSipMessage(Buffer.from(invite(5060, 5070, 'parse-2'))) as SipRequest);
    expect(dialledLanguage({ '+441234500000': 'es', '+34600111222': 'fr' }, caller)).toBe('es');
    // The caller's own number is not the dialled one.
    expect(dialledLanguage({ '+34600111222': 'fr' }, caller)).toBeUndefined();
    expect(dialledLanguage({ '+441234500000': 'es' }, { to: '+441234500000' })).toBe('es');
    expect(dialledLanguage(undefined, caller)).toBeUndefined();
  });
});

describe('media stream custom parameters as caller variables', () => {
  it('names normalised, credentials left out, from → number', () => {
    expect(callerFromParameters({ customerId: 'C-9', 'Account-Id': 'A1', from: '+441234567890', authToken: 'x', language: 'en' })).toEqual({
      customerid: 'C-9',
      account_id: 'A1',
      from: '+441234567890',
      language: 'en',
      number: '+441234567890',
    });
  });
});

describe('caller context through a real server', () => {
  let ops: OperatorService;
  let server: TestServer;
  let stop: (() => Promise<void>) | undefined;
  beforeAll(async () => {
    ({ ops, server, stop } = await startAgentWithOperator());
  }, 60_000);
  afterAll(async () => {
    await stop?.();
  });

  const mint = (body: Record<string, unknown>) =>
    fetch(`${server.httpUrl}/v1/tokens`, { method: 'POST', headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' }, body: JSON.stringify(body) });

  it('POST /v1/tokens refuses oversized, reserved or malformed context', async () => {
    const tooMany = Object.fromEntries(Array.from({ length: 17 }, (_, i) => [`v${i}`, 'x']));
    for (const body of [
      { vars: tooMany },
      { vars: { customer_id: 'spoofed' } },
      { vars: { 'Bad-Name': 'x' } },
      { vars: { note: 'x'.repeat(257) } },
      { agent: 'two words' },
      { language: 'english please' },
    ]) {
      const res = await mint(body);
      expect(res.status, JSON.stringify(body).slice(0, 60)).toBe(400);
    }
  });

  it('a token claim reaches the operator service through the booking tool', async () => {
    const res = await mint({ customer_id: 'C-42', agent: 'restaurant', language: 'en', vars: { tier: 'gold' } });
    expect(res.status).toBe(200);
    const { token } = (await res.json()) as { token: string };
    const caller = new TextCaller(server.wsUrl, { token });
    const callId = await caller.open();
    const session = server.server.service.sessions.get(callId);
    expect(session?.caller).toMatchObject({ customer_id: 'C-42', agent: 'restaurant', language: 'en', tier: 'gold', transport: 'ws' });
    await caller.say('book a table for two tomorrow at eight pm, the name is Anna');
    await caller.say('yes');
    const req = ops.requests.at(-1);
    expect(req?.signed).toBe(true);
    expect(req?.json).toMatchObject({ party_size: 2, customer_id: 'C-42', loyalty_tier: 'gold' });
    expect(req?.headers['x-customer-id']).toBe('C-42');
    await caller.close();
  }, 20_000);

  it('a SIP INVITE\'s caller headers are the call\'s caller variables', async () => {
    const phone = await udpSipPhone(server.server.service);
    const got = phone.got;
    const networkId = `ctx-${Date.now()}`;
    try {
      phone.send(invite(phone.sip.port, phone.port, networkId));
      let session;
      for (let i = 0; i < 250 && !session; i++) {
        const id = await server.server.service.store.idForNetworkId(networkId);
        session = id ? server.server.service.sessions.get(id) : undefined;
        if (!session) await new Promise((r) => setTimeout(r, 20));
      }
      expect(session?.caller).toMatchObject({
        transport: 'sip',
        number: '+34600111222',
        asserted_identity: '+34600111222',
        request_uri: '+441234500000',
        x_account_id: 'ACME-9',
      });
      for (let i = 0; i < 150 && !got.some((m) => m.startsWith('SIP/2.0 200')); i++) await new Promise((r) => setTimeout(r, 20));
      expect(got.some((m) => m.startsWith('SIP/2.0 200'))).toBe(true);
    } finally {
      phone.close();
    }
  }, 10_000);
});
