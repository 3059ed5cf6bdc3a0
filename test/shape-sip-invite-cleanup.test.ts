import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it, vi, type MockInstance } from 'vitest';
import { sipServerOf, SipServer } from '../src/transports/sip/index.js';
import { CallMedia } from '../src/transports/sip/call.js';
import { RtpStream } from '../src/transports/sip/rtp/stream.js';
import { RtpPortPool } from '../src/transports/sip/rtp/port-pool.js';
import { startTestServer, type TestServer } from './helpers/server.js';

/**
 * An INVITE whose handling fails after the call took a slot and an RTP port must give both back (and the
 * session, and the per-key admission), on every error path: raw UDP INVITEs on loopback, with failures injected
 * in the media layer and in a provider.
 */
let server: TestServer;

beforeAll(async () => {
  // One call per key: a leaked admission would refuse the next call with 486.
  server = await startTestServer({ sip: { enabled: true, ringMs: 0, rtpPortMin: 41_000, rtpPortMax: 41_100 }, limits: { maxSessionsPerKey: 1 } });
});
afterAll(async () => {
  vi.restoreAllMocks();
  await server?.stop();
});

function sip(): SipServer {
  const s = sipServerOf(server.server.service);
  if (!s) throw new Error('SIP transport did not start');
  return s;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const status = (message: string) => Number(/^SIP\/2\.0 (\d{3})/.exec(message)?.[1] ?? 0);

/** A phone on a UDP socket: sends requests, collects everything the agent sends back. */
class RawPhone {
  readonly received: string[] = [];
  private readonly socket = dgram.createSocket('udp4');
  port = 0;
  readonly callId = `cleanup-${Math.random().toString(36).slice(2)}`;

  /** `target`: the SIP server this phone calls (the test server's by default). */
  constructor(private readonly target: () => SipServer = sip) {}

  async open(): Promise<void> {
    this.socket.on('message', (m) => this.received.push(m.toString('utf8')));
    await new Promise<void>((r) => this.socket.bind(0, '127.0.0.1', () => r()));
    this.port = this.socket.address().port;
  }

  send(method: string, cseq: number, extra: string[] = [], body = ''): void {
    const lines = [
      `${method} sip:agent@127.0.0.1:${this.target().port} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
      'Max-Forwards: 70',
      'From: <sip:+15550100@127.0.0.1>;tag=phone1',
      `To: <sip:agent@127.0.0.1:${this.target().port}>${extra.find((h) => h.startsWith(';tag=')) ?? ''}`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${cseq} ${method}`,
      `Contact: <sip:phone@127.0.0.1:${this.port}>`,
      ...extra.filter((h) => !h.startsWith(';tag=')),
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ];
    this.socket.send(lines.join('\r\n'), this.target().port, '127.0.0.1');
  }

  invite(): void {
    const sdp = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', 'm=audio 30000 RTP/AVP 0 101', 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', ''].join('\r\n');
    this.send('INVITE', 1, ['Content-Type: application/sdp'], sdp);
  }

  /** Wait for a message from the agent that `match` accepts. */
  async waitFor(what: string, match: (m: string) => boolean, timeoutMs = 5000): Promise<string> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const found = this.received.find(match);
      if (found) return found;
      await sleep(20);
    }
    throw new Error(`no ${what}; got ${this.received.map((m) => m.split('\r\n')[0]).join(' | ')}`);
  }

  /** The first final response to our INVITE (and with it the agent's To tag). */
  async finalResponse(timeoutMs = 5000): Promise<{ status: number; toTag: string }> {
    const deadline = performance.now() + timeoutMs;
    while (performance.now() < deadline) {
      const final = this.received.find((m) => status(m) >= 200 && /CSeq: 1 INVITE/i.test(m));
      if (final) return { status: status(final), toTag: /^To:.*;tag=([^;\r\n]+)/im.exec(final)?.[1] ?? '' };
      await sleep(20);
    }
    throw new Error(`no final response; got ${this.received.map((m) => m.split('\r\n')[0]).join(' | ')}`);
  }

  close(): void {
    this.socket.close();
  }
}

/** Everything a call can hold is free again. */
async function expectAllReleased(): Promise<void> {
  for (let i = 0; i < 100 && (sip().calls.size > 0 || sip().rtpPortsInUse > 0 || server.server.service.sessions.size > 0); i++) await sleep(20);
  expect(sip().calls.size).toBe(0);
  expect(sip().rtpPortsInUse).toBe(0);
  expect(server.server.service.sessions.size).toBe(0);
}

/** A call that must be answered now, then hung up by the phone. */
async function answeredAndHungUp(): Promise<void> {
  const phone = new RawPhone();
  await phone.open();
  try {
    phone.invite();
    const final = await phone.finalResponse();
    expect(final.status).toBe(200);
    expect(sip().rtpPortsInUse).toBe(1);
    phone.send('ACK', 1, [`;tag=${final.toTag}`]);
    phone.send('BYE', 2, [`;tag=${final.toTag}`]);
    await expectAllReleased();
  } finally {
    phone.close();
  }
}

/**
 * A call while `failure` (a spy set to throw once) is in place: `check` gets the phone and its final response.
 * The spy is restored after; then nothing may be held: the next call (same key, limit 1) is answered.
 */
async function callFailingOnce(failure: MockInstance, check: (phone: RawPhone, final: { status: number; toTag: string }) => Promise<void>): Promise<void> {
  const phone = new RawPhone();
  await phone.open();
  try {
    phone.invite();
    const final = await phone.finalResponse();
    expect(failure).toHaveBeenCalledTimes(1);
    await check(phone, final);
  } finally {
    phone.close();
    failure.mockRestore();
  }
  await answeredAndHungUp();
}

describe('SIP INVITE error paths release the call slot and the RTP port', () => {
  it('a media layer that throws after the port is bound: the call is ended, slot, port and session freed', async () => {
    const start = vi.spyOn(CallMedia.prototype, 'start').mockImplementationOnce(() => {
      throw new Error('injected media failure');
    });
    await callFailingOnce(start, async (phone, final) => {
      // The 200 OK was already out when the media failed: the agent ends the dialog it created with a BYE.
      if (final.status === 200) {
        for (let i = 0; i < 100 && !phone.received.some((m) => m.startsWith('BYE ')); i++) await sleep(20);
        expect(phone.received.some((m) => m.startsWith('BYE '))).toBe(true);
      } else {
        expect(final.status).toBe(500);
      }
      await expectAllReleased();
    });
  });

  it('a second call from a source at its session limit: 486 with Retry-After (the kit\'s refusal table), the first call untouched', async () => {
    const first = new RawPhone();
    const second = new RawPhone();
    await first.open();
    await second.open();
    try {
      first.invite();
      const answered = await first.finalResponse();
      expect(answered.status).toBe(200);
      first.send('ACK', 1, [`;tag=${answered.toTag}`]);
      second.invite();
      const refused = await second.finalResponse();
      expect(refused.status).toBe(486);
      const response = second.received.find((m) => status(m) === 486) ?? '';
      expect(Number(/^Retry-After:\s*(\d+)/im.exec(response)?.[1])).toBeGreaterThan(0);
      expect(sip().calls.size).toBe(1);
      expect(server.server.service.sessions.size).toBe(1);
      first.send('BYE', 2, [`;tag=${answered.toTag}`]);
      await expectAllReleased();
    } finally {
      first.close();
      second.close();
    }
  });

  it('a provider that fails to open the call: refused, and the per-key admission and the record are released', async () => {
    const vad = server.server.service.providers.vad;
    const createStream = vi.spyOn(vad, 'createStream').mockImplementationOnce(() => {
      throw new Error('injected VAD failure');
    });
    await callFailingOnce(createStream, async (phone, final) => {
      expect(final.status).toBe(503);
      await expectAllReleased();
      const recordId = await server.server.service.store.idForNetworkId(phone.callId);
      expect(recordId).not.toBeNull();
      expect((await server.server.service.store.get(recordId!, '*'))?.end_reason).toBe('failed');
    });
  });
});

/** Every port of [min, max] can be bound again: nothing of ours still holds one. */
async function expectPortsFree(min: number, max: number): Promise<void> {
  for (let port = min; port <= max; port++) {
    const socket = dgram.createSocket('udp4');
    await new Promise<void>((resolve, reject) => {
      socket.once('error', reject);
      socket.bind(port, '127.0.0.1', () => resolve());
    }).finally(() => socket.close());
  }
}

describe('closing cascades: server → calls → RTP streams → ports', () => {
  it('an RTP stream whose close throws: the session, the slot and the port are still released', async () => {
    const realClose = RtpStream.prototype.close;
    const close = vi.spyOn(RtpStream.prototype, 'close').mockImplementationOnce(function (this: RtpStream) {
      realClose.call(this);
      throw new Error('injected close failure');
    });
    try {
      await answeredAndHungUp();
      expect(close).toHaveBeenCalled();
    } finally {
      close.mockRestore();
    }
    await answeredAndHungUp();
  });

  it('stop() with an answered call and a ringing one: BYE and 480 go out, every call, session and port is released', async () => {
    const service = server.server.service;
    const [min, max] = [41_200, 41_220];
    // Ringing for 3 s: the first call is answered after it, the second is still ringing (its port bound) at stop().
    const own = new SipServer({ service, config: { ...service.config.sip!, port: 0, ringMs: 3000, rtpPortMin: min, rtpPortMax: max }, logger: service.logger });
    await own.start();
    const answered = new RawPhone(() => own);
    const ringing = new RawPhone(() => own);
    await answered.open();
    await ringing.open();
    try {
      answered.invite();
      const final = await answered.finalResponse(10_000);
      expect(final.status).toBe(200);
      answered.send('ACK', 1, [`;tag=${final.toTag}`]);
      ringing.invite();
      await ringing.waitFor('180 Ringing', (m) => status(m) === 180);
      expect(own.calls.size).toBe(2);
      expect(own.rtpPortsInUse).toBe(2);
      expect(service.sessions.size).toBe(1);

      await own.stop();
      expect(own.calls.size).toBe(0);
      expect(own.rtpPortsInUse).toBe(0);
      for (let i = 0; i < 100 && service.sessions.size > 0; i++) await sleep(20);
      expect(service.sessions.size).toBe(0);
      await answered.waitFor('BYE', (m) => m.startsWith('BYE '));
      expect((await ringing.finalResponse()).status).toBe(480);
      await expectPortsFree(min, max);
    } finally {
      answered.close();
      ringing.close();
      await own.stop();
    }
    // The shared server is untouched and nothing is held: the next call (same key, limit 1) is answered.
    await answeredAndHungUp();
  });

  it('the port pool closes what is still bound and refuses new binds once closed', async () => {
    const [min, max] = [41_300, 41_310];
    const pool = new RtpPortPool(min, max);
    const pair = await pool.bind('127.0.0.1');
    expect(pool.used).toBe(1);
    expect(pool.close()).toBe(1);
    expect(pool.used).toBe(0);
    await expectPortsFree(pair.port, pair.port + 1);
    await expect(pool.bind('127.0.0.1')).rejects.toThrow(/closed/);
    pool.reopen();
    const again = await pool.bind('127.0.0.1');
    expect(pool.used).toBe(1);
    pool.release(again.port);
    expect(pool.used).toBe(0);
    await expectPortsFree(again.port, again.port + 1);
  });
});
