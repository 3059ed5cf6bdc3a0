import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, mergeConfig, type SipConfig } from '../src/config.js';
import { digestResponse } from '../src/transports/sip/access.js';
import { SipServer, sipServerOf } from '../src/transports/sip/index.js';
import { serializeRtp } from '../src/transports/sip/rtp/packet.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { until as poll } from './helpers/until.js';

/**
 * Issue 10, SIP doors, on raw UDP over loopback: 127.0.0.1 is the caller (its trunk), 127.0.0.2 a third party
 * that must never receive our media nor take the call's audio. Media must follow the signalling, start only
 * after the ACK, latch once to a plausible source; Digest must throttle guessing and refuse replays.
 */
let server: TestServer;
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

beforeAll(async () => {
  server = await startTestServer({ sip: { rtpPortMin: 41_000, rtpPortMax: 41_200 } });
});

afterAll(async () => {
  await server?.stop();
});

const until = <T>(what: string, check: () => T | null | undefined | false, timeoutMs = 5000): Promise<T> => poll(what, check, timeoutMs);

const status = (m: string | undefined) => Number(/^SIP\/2\.0 (\d{3})/.exec(m ?? '')?.[1] ?? 0);

/** A UDP socket on `address` that counts (and keeps) what reaches it. */
async function listener(address: string): Promise<{ socket: dgram.Socket; port: number; got: { data: Buffer; from: string }[]; close(): void }> {
  const socket = dgram.createSocket('udp4');
  const got: { data: Buffer; from: string }[] = [];
  socket.on('message', (data, rinfo) => got.push({ data, from: `${rinfo.address}:${rinfo.port}` }));
  await new Promise<void>((r) => socket.bind(0, address, () => r()));
  return { socket, port: socket.address().port, got, close: () => socket.close() };
}

function rtpPacket(seq: number, ssrc: number): Buffer {
  return serializeRtp({ payloadType: 8, marker: false, seq, timestamp: seq * 160, ssrc, payload: Buffer.alloc(160, 0xd5) });
}

const offer = (address: string, rtpPort: number) =>
  ['v=0', `o=- 1 1 IN IP4 ${address}`, 's=-', `c=IN IP4 ${address}`, 't=0 0', `m=audio ${rtpPort} RTP/AVP 8 101`, 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:101 telephone-event/8000', ''].join('\r\n');

/** A SIP phone on raw UDP: INVITE, ACK, BYE against one SIP server. */
async function phone(sipPort: number, from = '127.0.0.1') {
  const signalling = await listener(from);
  let cseq = 1;
  const build = (method: string, callId: string, o: { body?: string; headers?: string[]; toTag?: string; cseq?: number } = {}) => {
    const body = o.body ?? '';
    return [
      `${method} sip:agent@127.0.0.1:${sipPort} SIP/2.0`,
      `Via: SIP/2.0/UDP ${from}:${signalling.port};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
      'Max-Forwards: 70',
      'From: <sip:caller@example.com>;tag=caller1',
      `To: <sip:agent@127.0.0.1:${sipPort}>${o.toTag ? `;tag=${o.toTag}` : ''}`,
      `Call-ID: ${callId}`,
      `CSeq: ${o.cseq ?? cseq++} ${method}`,
      `Contact: <sip:caller@${from}:${signalling.port}>`,
      ...(o.headers ?? []),
      ...(body ? ['Content-Type: application/sdp'] : []),
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ].join('\r\n');
  };
  const send = (text: string) => signalling.socket.send(Buffer.from(text), sipPort, '127.0.0.1');
  const texts = () => signalling.got.map((g) => g.data.toString('utf8'));
  return {
    texts,
    build,
    send,
    /** INVITE and wait for its final response; returns it with our RTP port and the To tag. */
    async invite(callId: string, sdp: string, headers: string[] = []): Promise<{ final: string; ourRtpPort: number; toTag: string; cseq: number }> {
      const seq = cseq++;
      signalling.got.length = 0;
      send(build('INVITE', callId, { body: sdp, headers, cseq: seq }));
      const final = await until(`final response to INVITE ${callId}`, () => texts().find((t) => status(t) >= 200 && t.includes(`Call-ID: ${callId}\r\n`) && t.includes(`CSeq: ${seq} INVITE`)));
      return { final, ourRtpPort: Number(/^m=audio (\d+)/m.exec(final)?.[1] ?? 0), toTag: /^To: .*;tag=([^;\r\n]+)/m.exec(final)?.[1] ?? '', cseq: seq };
    },
    ack(callId: string, toTag: string, inviteCseq: number) {
      send(build('ACK', callId, { toTag, cseq: inviteCseq }));
    },
    bye(callId: string, toTag: string) {
      send(build('BYE', callId, { toTag }));
    },
    close: () => signalling.close(),
  };
}

/**
 * /healthz answers: the median of five probes, ms (one probe on a shared CI core may wait for the scheduler),
 * with none slower than a second.
 */
async function healthMs(): Promise<number> {
  const times: number[] = [];
  for (let i = 0; i < 5; i++) {
    const started = performance.now();
    const res = await fetch(`${server.httpUrl}/healthz`);
    await res.arrayBuffer();
    expect(res.status).toBe(200);
    times.push(performance.now() - started);
  }
  times.sort((a, b) => a - b);
  expect(times[4]).toBeLessThan(1000);
  return times[2];
}

function sip(): SipServer {
  const s = sipServerOf(server.server.service);
  if (!s) throw new Error('SIP transport did not start');
  return s;
}

/** A second SIP listener on the same service with its own settings. */
async function withSip(overrides: Partial<SipConfig>, body: (s: SipServer) => Promise<void>): Promise<void> {
  const config = mergeConfig(DEFAULT_CONFIG.sip, { host: '127.0.0.1', port: 0, rtpPortMin: 41_400, rtpPortMax: 41_600, ...overrides });
  const s = new SipServer({ service: server.server.service, config, logger: server.server.service.logger });
  await s.start();
  try {
    await body(s);
  } finally {
    await s.stop();
  }
}

/** A phone on SIP port `sipPort` and a UDP listener at `mediaAt` for its media; both closed after `body`. */
async function withPhone(sipPort: number, mediaAt: string, body: (caller: Awaited<ReturnType<typeof phone>>, media: Awaited<ReturnType<typeof listener>>) => Promise<void>): Promise<void> {
  const media = await listener(mediaAt);
  const caller = await phone(sipPort);
  try {
    await body(caller, media);
  } finally {
    media.close();
    caller.close();
  }
}

describe('SIP media goes only where the signalling says, after the ACK', () => {
  it('an INVITE naming a third party in c= gets no media there, ACKed or not; a host name in c= is refused', async () => {
    await withPhone(sip().port, '127.0.0.2', async (caller, third) => {
      const callId = `third-party-${Date.now()}`;
      const { final, toTag, cseq } = await caller.invite(callId, offer('127.0.0.2', third.port));
      expect(status(final)).toBe(200);
      await sleep(1500); // no ACK: the 200 OK alone must not start a stream
      expect(third.got.length).toBe(0);
      caller.ack(callId, toTag, cseq);
      await sleep(1000);
      expect(third.got.length).toBe(0);
      caller.bye(callId, toTag);
      await until('call ended', () => !sip().calls.has(callId));

      const named = await caller.invite(`hostname-${Date.now()}`, offer('localhost', third.port));
      expect(status(named.final)).toBe(488);
      expect(named.final).toMatch(/Warning: 305 .*IP address/);
    });
  });

  it('the caller itself gets RTP only once it has ACKed our answer (with our To tag)', async () => {
    await withPhone(sip().port, '127.0.0.1', async (caller, media) => {
      const callId = `ack-first-${Date.now()}`;
      const { final, toTag, cseq } = await caller.invite(callId, offer('127.0.0.1', media.port));
      expect(status(final)).toBe(200);
      await sleep(1000);
      expect(media.got.length).toBe(0);
      // A spoofer chose the Call-ID but never saw our 200 OK: its ACK lacks our To tag and starts nothing.
      caller.ack(callId, 'guessed-tag', cseq);
      await sleep(500);
      expect(media.got.length).toBe(0);
      caller.ack(callId, toTag, cseq);
      await until('RTP after the ACK', () => media.got.length > 5, 2000);
      caller.bye(callId, toTag);
      await until('call ended', () => !sip().calls.has(callId));
    });
  });

  it('sip.mediaNetworks lets media go to a trunk\'s separate media servers', async () => {
    await withSip({ mediaNetworks: ['127.0.0.2/32'] }, async (s) => {
      await withPhone(s.port, '127.0.0.2', async (caller, mediaServer) => {
        const callId = `media-net-${Date.now()}`;
        const { final, toTag, cseq } = await caller.invite(callId, offer('127.0.0.2', mediaServer.port));
        expect(status(final)).toBe(200);
        caller.ack(callId, toTag, cseq);
        await until('RTP to the configured media network', () => mediaServer.got.length > 5, 2000);
        caller.bye(callId, toTag);
        await until('call ended', () => !s.calls.has(callId));
      });
    });
  });
});

describe('RTP latching cannot be hijacked', () => {
  it('a third party\'s RTP, before or during the caller\'s, never redirects the agent\'s audio', async () => {
    const media = await listener('127.0.0.1');
    const attacker = await listener('127.0.0.2');
    const sameHost = await listener('127.0.0.1');
    const caller = await phone(sip().port);
    const callId = `latch-${Date.now()}`;
    try {
      const { final, toTag, cseq, ourRtpPort } = await caller.invite(callId, offer('127.0.0.1', media.port));
      expect(status(final)).toBe(200);
      expect(ourRtpPort).toBeGreaterThan(0);
      caller.ack(callId, toTag, cseq);
      // The attacker speaks first, before the caller's first packet.
      for (let i = 0; i < 10; i++) attacker.socket.send(rtpPacket(i, 0xbad), ourRtpPort, '127.0.0.1');
      await sleep(600);
      expect(attacker.got.length).toBe(0);
      expect(await healthMs()).toBeLessThan(100);
      const beforeCaller = media.got.length;
      expect(beforeCaller).toBeGreaterThan(5);
      // Now the caller's own stream, and mid-call the attacker copying its SSRC, from 127.0.0.2 and from
      // another port of the caller's own address.
      const ssrc = 0x1234;
      for (let i = 0; i < 25; i++) {
        media.socket.send(rtpPacket(100 + i, ssrc), ourRtpPort, '127.0.0.1');
        attacker.socket.send(rtpPacket(200 + i, ssrc), ourRtpPort, '127.0.0.1');
        sameHost.socket.send(rtpPacket(300 + i, ssrc), ourRtpPort, '127.0.0.1');
        await sleep(20);
      }
      const atCaller = media.got.length;
      expect(await healthMs()).toBeLessThan(100);
      await sleep(400);
      expect(attacker.got.length).toBe(0);
      expect(sameHost.got.length).toBe(0);
      expect(media.got.length).toBeGreaterThan(atCaller + 10);
      caller.bye(callId, toTag);
      await until('call ended', () => !sip().calls.has(callId));
    } finally {
      media.close();
      attacker.close();
      sameHost.close();
      caller.close();
    }
  });
});

describe('SIP Digest and Call-IDs', () => {
  it('wrong answers are throttled per source, and a captured response cannot be replayed', async () => {
    await withSip({ digest: { realm: 'voice-test', users: { trunk: 'pa55word' } } }, async (s) => {
      const guesser = await phone(s.port, '127.0.0.1');
      const other = await phone(s.port, '127.0.0.2');
      const uri = `sip:agent@127.0.0.1:${s.port}`;
      try {
        const challenge = await guesser.invite(`guess-0-${Date.now()}`, offer('127.0.0.1', 9000));
        expect(status(challenge.final)).toBe(401);
        const nonce = /nonce="([^"]+)"/.exec(challenge.final)![1];
        const answer = (password: string, nc: string, cnonce: string) => `Authorization: ${digestResponse({ username: 'trunk', password, realm: 'voice-test', nonce, method: 'INVITE', uri, nc, cnonce })}`;
        const statuses: number[] = [];
        for (let i = 1; i <= 7; i++) statuses.push(status((await guesser.invite(`guess-${i}-${Date.now()}`, offer('127.0.0.1', 9000), [answer(`guess${i}`, '00000001', `c${i}`)])).final));
        // Five wrong answers are challenged again; after that the source is refused outright.
        expect(statuses.slice(0, 5)).toEqual([401, 401, 401, 401, 401]);
        expect(statuses.slice(5)).toEqual([403, 403]);
        expect(await healthMs()).toBeLessThan(100);
        // Even the right password from the throttled source, for now.
        expect(status((await guesser.invite(`right-${Date.now()}`, offer('127.0.0.1', 9000), [answer('pa55word', '00000001', 'good')])).final)).toBe(403);

        // Another source is not affected: its right answer is a call...
        const media = await listener('127.0.0.2');
        const callId = `authorised-${Date.now()}`;
        const good = answer('pa55word', '00000001', 'fresh');
        const call = await other.invite(callId, offer('127.0.0.2', media.port), [good]);
        expect(status(call.final)).toBe(200);
        other.ack(callId, call.toTag, call.cseq);
        other.bye(callId, call.toTag);
        await until('call ended', () => !s.calls.has(callId));
        media.close();
        // ...but the same Authorization (same nonce, nc and cnonce) replayed for a new call is not.
        const replay = await other.invite(`replay-${Date.now()}`, offer('127.0.0.2', 9000), [good]);
        expect(status(replay.final)).toBe(401);
      } finally {
        guesser.close();
        other.close();
      }
    });
  });

  it('a Call-ID equal to a live call\'s id neither replaces its session nor reaches its record', async () => {
    await withPhone(sip().port, '127.0.0.1', async (caller, media) => {
      const firstCallId = `first-${Date.now()}`;
      const first = await caller.invite(firstCallId, offer('127.0.0.1', media.port));
      expect(status(first.final)).toBe(200);
      caller.ack(firstCallId, first.toTag, first.cseq);
      const recordId = sip().calls.get(firstCallId)!.recordId;
      const session = server.server.service.sessions.get(recordId);
      expect(session).toBeDefined();
      // A second call whose SIP Call-ID is the first call's own id.
      const second = await caller.invite(recordId, offer('127.0.0.1', media.port));
      expect(status(second.final)).toBe(200);
      caller.ack(recordId, second.toTag, second.cseq);
      expect(server.server.service.sessions.get(recordId)).toBe(session);
      const secondRecordId = sip().calls.get(recordId)!.recordId;
      expect(secondRecordId).not.toBe(recordId);
      expect((await server.server.service.store.get(secondRecordId, 'k'))?.network_id).toBe(recordId);
      caller.bye(recordId, second.toTag);
      caller.bye(firstCallId, first.toTag);
      await until('calls ended', () => !sip().calls.has(firstCallId) && !sip().calls.has(recordId));
    });
  });
});
