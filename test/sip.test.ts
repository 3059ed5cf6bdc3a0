import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import dgram from 'node:dgram';
import fc from 'fast-check';
import net from 'node:net';
import { rmsDbfs } from '../src/audio/format.js';
import { concatPcm } from '../src/audio/framer.js';
import { resampleOnce } from '../src/audio/resample.js';
import { sipServerOf, SipServer } from '../src/transports/sip/index.js';
import { digestResponse } from '../src/transports/sip/access.js';
import { parseRtp, serializeRtp, type RtpPacket } from '../src/transports/sip/rtp/packet.js';
import { decodeAlaw, encodeAlaw } from '../src/audio/g711.js';
import { DEFAULT_CONFIG, mergeConfig, type SipConfig } from '../src/config.js';
import { speak } from './helpers/speech.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { Baresip } from './helpers/baresip.js';
import { until as poll } from './helpers/until.js';

/**
 * Native SIP + RTP with a real SIP phone: Debian's baresip calls the service over 127.0.0.1 with recorded speech
 * as its microphone and records what it hears. Garbage, digest auth and the allow-list use raw sockets.
 */
let server: TestServer;
let sipPort: number;
let microphone: Int16Array;

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const decodeAlawPacket = (payload: Buffer): Int16Array => decodeAlaw(new Uint8Array(payload));

beforeAll(async () => {
  let speech: Int16Array;
  [server, speech] = await Promise.all([startTestServer({ sip: { rtpPortMin: 40_000, rtpPortMax: 40_400 } }), speak('What time is it?')]);
  const sip = sipServerOf(server.server.service);
  if (!sip) throw new Error('SIP transport did not start');
  sipPort = sip.port;
  // baresip's aufile wants the codec's rate (8 kHz for G.711); 1 s of silence first, a long tail after so the
  // phone keeps sending RTP (silence) for the whole call.
  const narrow = await resampleOnce(speech, 16_000, 8000);
  microphone = new Int16Array(8000 + narrow.length + 8000 * 40);
  microphone.set(narrow, 8000);
});

afterAll(async () => {
  await server?.stop();
});

function sip(): SipServer {
  const s = sipServerOf(server.server.service);
  if (!s) throw new Error('no SIP server');
  return s;
}

/** Poll (every 50 ms, 15 s by default) until `check` returns a value, or fail with `what`. */
const until = <T>(what: string, check: () => T | null | undefined | false | Promise<T | null | undefined | false>, timeoutMs = 15_000): Promise<T> =>
  poll(what, check, timeoutMs, 50);

/**
 * How the call record says the call ended. The dialog leaves the table first; the record is closed with the
 * session a moment later (once the session has stopped its stages), so a test waits for it.
 */
const endReason = (recordId: string): Promise<string> =>
  until(`the record of ${recordId} closed`, async () => (await server.server.service.store.get(recordId, 'any-key'))?.end_reason, 5000);

/** One request over UDP from a fresh socket; resolves with every datagram received within `waitMs`. */
async function udpExchange(payload: Buffer | string, waitMs = 400): Promise<string[]> {
  const socket = dgram.createSocket('udp4');
  const got: string[] = [];
  socket.on('message', (m) => got.push(m.toString('utf8')));
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const port = socket.address().port;
  const data = typeof payload === 'string' ? Buffer.from(payload.replaceAll('$PORT', String(port))) : payload;
  socket.send(data, sipPort, '127.0.0.1');
  await sleep(waitMs);
  socket.close();
  return got;
}

/** Write to a fresh TCP connection; resolves with what came back and whether the server closed it. */
async function tcpExchange(payload: Buffer | string, waitMs = 400): Promise<{ text: string; closed: boolean }> {
  const socket = net.connect(sipPort, '127.0.0.1');
  let text = '';
  let closed = false;
  socket.on('data', (d) => (text += d.toString('utf8')));
  socket.on('close', () => (closed = true));
  socket.on('error', () => {});
  await new Promise<void>((r) => socket.once('connect', () => r()));
  socket.write(typeof payload === 'string' ? payload.replaceAll('$PORT', String(socket.localPort)) : payload);
  await sleep(waitMs);
  socket.destroy();
  return { text, closed };
}

function request(method: string, extra: { callId?: string; headers?: string[]; body?: string; transport?: 'UDP' | 'TCP'; cseq?: number; uri?: string } = {}): string {
  const body = extra.body ?? '';
  const callId = extra.callId ?? `t-${Math.random().toString(36).slice(2)}`;
  return [
    `${method} ${extra.uri ?? `sip:agent@127.0.0.1:${sipPort}`} SIP/2.0`,
    `Via: SIP/2.0/${extra.transport ?? 'UDP'} 127.0.0.1:$PORT;branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
    'Max-Forwards: 70',
    'From: <sip:tester@127.0.0.1>;tag=abc123',
    `To: <sip:agent@127.0.0.1:${sipPort}>`,
    `Call-ID: ${callId}`,
    `CSeq: ${extra.cseq ?? 1} ${method}`,
    ...(extra.headers ?? []),
    `Content-Length: ${Buffer.byteLength(body)}`,
    '',
    body,
  ].join('\r\n');
}

const status = (response: string | undefined) => Number(/^SIP\/2\.0 (\d{3})/.exec(response ?? '')?.[1] ?? 0);

/** SIP garbage over UDP and TCP: the right 4xx/5xx or a silent drop. Runs while a real call is up. */
async function garbageChecks(): Promise<void> {
  // UDP
  expect(status((await udpExchange(request('OPTIONS')))[0])).toBe(200);
  expect(status((await udpExchange(request('FOO')))[0])).toBe(501);
  expect(status((await udpExchange(request('SUBSCRIBE')))[0])).toBe(405);
  const truncated = request('INVITE', { body: 'v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n' }).replace(/Content-Length: \d+/, 'Content-Length: 900');
  expect(status((await udpExchange(truncated))[0])).toBe(400);
  const huge = request('OPTIONS', { headers: [`X-Huge: ${'a'.repeat(20_000)}`] });
  expect(status((await udpExchange(huge))[0])).toBe(513);
  expect(status((await udpExchange(request('OPTIONS').replace(/Call-ID: .*\r\n/, '')))[0])).toBe(400);
  expect(status((await udpExchange(request('OPTIONS').replace('SIP/2.0\r\n', 'SIP/3.0\r\n')))[0])).toBe(505);
  expect(status((await udpExchange(request('OPTIONS').replace('CSeq: 1 OPTIONS', 'CSeq: 1 INVITE')))[0])).toBe(400);
  expect(status((await udpExchange(request('OPTIONS').replace('Max-Forwards: 70', 'Max-Forwards: 0')))[0])).toBe(483);
  expect(status((await udpExchange(request('BYE', { callId: 'no-such-call' })))[0])).toBe(481);
  expect(status((await udpExchange(request('INVITE', { body: 'not sdp at all', headers: ['Content-Type: application/sdp'] })))[0])).toBe(400);
  expect(status((await udpExchange(request('INVITE', { headers: ['Require: 100rel'] })))[0])).toBe(420);
  // Noise: no response, no crash.
  expect(await udpExchange(Buffer.from([0x80, 0x00, 0xff, 0x13, 0x37, 0x00, 0x01]))).toEqual([]);
  expect(await udpExchange('HELLO\r\n\r\n')).toEqual([]);
  expect(await udpExchange(Buffer.alloc(60_000, 0x41))).toEqual([]);

  // TCP
  const unknown = await tcpExchange(request('FOO', { transport: 'TCP' }) + request('OPTIONS', { transport: 'TCP' }));
  expect([...unknown.text.matchAll(/^SIP\/2\.0 (\d{3})/gm)].map((m) => Number(m[1]))).toEqual([501, 200]);
  expect(unknown.closed).toBe(false);
  const badLength = await tcpExchange(request('OPTIONS', { transport: 'TCP' }).replace(/Content-Length: \d+/, 'Content-Length: -5'));
  expect(status(badLength.text)).toBe(400);
  expect(badLength.closed).toBe(true);
  const noLength = await tcpExchange(request('OPTIONS', { transport: 'TCP' }).replace(/Content-Length: \d+\r\n/, ''));
  expect(status(noLength.text)).toBe(400);
  const endless = await tcpExchange(`OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/TCP 127.0.0.1:1;branch=z9hG4bKx\r\nX: ${'b'.repeat(20_000)}`);
  expect(endless.closed).toBe(true);
  const keepalive = await tcpExchange('\r\n\r\n');
  expect(keepalive.text).toBe('\r\n');

  // Random mutations of valid requests, fired over UDP and one TCP connection: the server stays up.
  const seeds = [request('OPTIONS'), request('BYE', { callId: 'fuzz' }), request('INFO', { callId: 'fuzz', body: 'Signal=5', headers: ['Content-Type: application/dtmf-relay'] })];
  const mutated = fc.sample(
    fc.tuple(fc.constantFrom(...seeds), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 5 })).map(([seed, edits]) => {
      const b = Buffer.from(seed.replaceAll('$PORT', '9'));
      for (const [pos, byte] of edits) b[pos % b.length] = byte;
      return b;
    }),
    { numRuns: 300, seed: 4475 },
  );
  const fuzzSocket = dgram.createSocket('udp4');
  await new Promise<void>((r) => fuzzSocket.bind(0, '127.0.0.1', () => r()));
  const fuzzTcp = net.connect(sipPort, '127.0.0.1');
  fuzzTcp.on('error', () => {});
  for (const b of mutated) {
    fuzzSocket.send(b, sipPort, '127.0.0.1');
    if (!fuzzTcp.destroyed) fuzzTcp.write(b);
  }
  await sleep(300);
  fuzzSocket.close();
  fuzzTcp.destroy();
  expect(status((await udpExchange(request('OPTIONS')))[0])).toBe(200);
}

/** Dials the agent from a real phone (baresip) playing `audio`; `body` runs once the call is answered. */
async function answeredCall(
  audio: Int16Array,
  body: (phone: Baresip, call: NonNullable<ReturnType<SipServer['calls']['get']>>) => Promise<void>,
  options?: Parameters<typeof Baresip.start>[1],
): Promise<void> {
  const phone = await Baresip.start(audio, options);
  try {
    await phone.command('dial', `sip:agent@127.0.0.1:${sipPort}`);
    await phone.waitFor('CALL_ESTABLISHED');
    await body(phone, await until('the SIP call', () => [...sip().calls.values()].find((c) => c.state === 'confirmed')));
  } finally {
    await phone.stop();
    await phone.cleanup();
  }
}

describe('SIP calls from a real SIP phone (baresip)', () => {
  it('answers, hears the caller, plays the answer, receives DTMF, survives garbage, holds and ends with a clean BYE', async () => {
    await answeredCall(microphone, async (phone, call) => {
      const callId = call.callId;
      // The session and record have our own id; the SIP Call-ID is kept as the record's network id.
      const recordId = call.recordId;
      expect(recordId).not.toBe(callId);
      expect(call.media.codec).toBe('pcmu');
      expect(call.media.telephoneEvent).not.toBeNull();

      // The caller's words reach ASR and the agent answers (narrowband: any words will do).
      const record = () => server.server.service.store.get(recordId, 'any-key');
      // A turn is taken whether the narrowband grammar recognised the words or rejected them (then the agent answers
      // honestly that it did not understand): this test is about the SIP/RTP path, not recognition.
      const heard = await until('caller transcript', async () => (await record())?.transcript.find((t) => t.role === 'caller'), 20_000);
      console.log(`SIP caller transcript: "${heard.text}"`);
      // SIP garbage on other sockets while the call is up.
      await garbageChecks();
      const answer = await until('agent reply', async () => (await record())?.transcript.find((t) => t.role === 'agent'), 20_000);
      console.log(`SIP agent reply: "${answer.text}"`);
      expect(sip().calls.get(callId)?.state).toBe('confirmed');

      // Keypad digits as RFC 4733 telephone-events.
      await phone.command('sndcode', '42#');
      const dtmf = await until('DTMF turn', async () => (await record())?.transcript.find((t) => t.role === 'caller' && t.text.startsWith('DTMF')), 10_000);
      expect(dtmf.text).toBe('DTMF: 4 2');

      // Barge-in: more digits while the agent answers the first ones interrupt it; queued RTP is flushed.
      await until('agent answering the digits', () => sip().calls.get(callId)?.callMedia?.rtp.queued, 5000);
      await phone.command('sndcode', '7#');
      await until('barge-in flush', () => (sip().calls.get(callId)?.callMedia?.stats.flushes ?? 0) > 0, 5000);
      console.log(`barge-in flushed ${sip().calls.get(callId)!.callMedia!.stats.flushedPackets} queued RTP packets`);

      // Hold: baresip re-INVITEs with sendonly; we answer recvonly and stop sending, then resume.
      await phone.command('hold');
      await until('hold', () => sip().calls.get(callId)?.media.direction === 'recvonly', 5000);
      const rtp = () => sip().calls.get(callId)?.callMedia?.rtp.packetsSent ?? -1;
      const sentAtHold = rtp();
      await sleep(300);
      expect(rtp()).toBe(sentAtHold);
      await phone.command('resume');
      await until('resume', () => sip().calls.get(callId)?.media.direction === 'sendrecv', 5000);
      await until('RTP flowing again', () => rtp() > sentAtHold + 5, 2000);

      const since = performance.now();
      await phone.command('hangup');
      await phone.waitFor('CALL_CLOSED', 5000, since);
      await until('call gone', () => !sip().calls.has(callId) && !server.server.service.sessions.has(recordId), 5000);
      expect(await endReason(recordId)).toBe('caller_hangup');
      expect((await record())?.network_id).toBe(callId);
      // The caller (From user part) is on the record, so their access and erasure requests find the call.
      expect((await record())?.caller).toBe('caller');
      expect((await server.server.service.store.findCalls({ caller: 'caller' })).map((c) => c.id)).toEqual([recordId]);
      await phone.stop();

      // What the phone heard: real agent speech, not silence.
      const heardAudio = await phone.voicedMs();
      console.log(`baresip heard ${heardAudio.seconds.toFixed(1)} s, ${heardAudio.voicedMs} ms voiced, loudest ${heardAudio.loudest.toFixed(1)} dBFS`);
      expect(heardAudio.voicedMs).toBeGreaterThan(500);
      expect(heardAudio.loudest).toBeGreaterThan(-30);
    });
  }, 90_000);

  it('Opus when the phone offers only Opus: DTMF in, agent audio out', async () => {
    // The caller's 12 s, then silence: baresip hangs up when its audio file ends, and the agent's answer (the honest
    // "I can only help with …" when the words are not understood) may still be playing at 12 s.
    const wide = concatPcm([await resampleOnce(microphone.subarray(0, 8000 * 12), 8000, 48_000), new Int16Array(48_000 * 10)]);
    await answeredCall(wide, async (phone, call) => {
      expect(call.media.codec).toBe('opus');
      expect(call.media.clockRate).toBe(48_000);
      await phone.command('sndcode', '9#');
      const record = () => server.server.service.store.get(call.recordId, 'any-key');
      await until('DTMF turn', async () => (await record())?.transcript.find((t) => t.role === 'caller' && t.text === 'DTMF: 9'), 10_000);
      await until('agent reply played', async () => (await record())?.transcript.find((t) => t.role === 'agent'), 15_000);
      const since = performance.now();
      await phone.command('hangup');
      await phone.waitFor('CALL_CLOSED', 5000, since);
      await phone.stop();
      const heardAudio = await phone.voicedMs();
      console.log(`baresip (opus) heard ${heardAudio.seconds.toFixed(1)} s at 48 kHz, ${heardAudio.voicedMs} ms voiced, loudest ${heardAudio.loudest.toFixed(1)} dBFS`);
      expect(heardAudio.voicedMs).toBeGreaterThan(500);
    }, { codec: 'opus' });
  }, 40_000);

  it('CANCEL before answer: 487 to the INVITE, no session opened', async () => {
    const phone = await Baresip.start(microphone);
    const sessionsBefore = server.server.service.sessions.size;
    server.config.sip.ringMs = 4000;
    try {
      await phone.command('dial', `sip:agent@127.0.0.1:${sipPort}`);
      await phone.waitFor('CALL_RINGING');
      const call = await until('the ringing call', () => [...sip().calls.values()].find((c) => c.state === 'proceeding'));
      expect(server.server.service.sessions.size).toBe(sessionsBefore);
      const since = performance.now();
      await phone.command('hangup');
      const closed = await phone.waitFor('CALL_CLOSED', 5000, since);
      console.log(`baresip after CANCEL: ${closed.param ?? ''}`);
      await until('call gone', () => !sip().calls.has(call.callId), 3000);
      // The ring time runs out with no session ever opened for the cancelled call.
      await sleep(300);
      expect(server.server.service.sessions.size).toBe(sessionsBefore);
      expect(await server.server.service.store.get(call.recordId, 'any-key')).toBeNull();
      // baresip's SIP trace (-s) shows our answers: 200 to its CANCEL, 487 to its INVITE.
      expect(phone.log.join('')).toMatch(/SIP\/2\.0 487 Request Terminated/);
      expect(phone.log.join('')).toMatch(/SIP\/2\.0 200 OK[^]*CSeq: \d+ CANCEL/);
    } finally {
      server.config.sip.ringMs = 0;
      await phone.stop();
      await phone.cleanup();
    }
  }, 30_000);

  it('the agent ends the call: BYE to the phone', async () => {
    await answeredCall(microphone, async (phone, call) => {
      const since = performance.now();
      server.server.service.sessions.get(call.recordId)!.hangUp('test');
      const closed = await phone.waitFor('CALL_CLOSED', 5000, since);
      console.log(`baresip after our BYE: ${closed.param ?? ''}`);
      await until('call gone', () => !sip().calls.has(call.callId) && !server.server.service.sessions.has(call.recordId), 3000);
      expect(await endReason(call.recordId)).toBe('agent_hangup');
    });
  }, 30_000);
});

describe('SIP transfer with a real phone', () => {
  it('blind transfer: REFER, the phone calls the target, its NOTIFY 200 ends our leg', async () => {
    await answeredCall(microphone, async (phone, first) => {
      // The transfer target is this service again (as a desk on the same box would be).
      expect(sip().transfer(first.callId, `sip:human@127.0.0.1:${sipPort}`)).toBe(true);
      const second = await until('the transferred call', () => [...sip().calls.values()].find((c) => c.callId !== first.callId && c.state === 'confirmed'), 10_000);
      expect(second.invite.uri).toContain('sip:human@');
      await until('first leg ended', () => !sip().calls.has(first.callId), 5000);
      expect(await endReason(first.recordId)).toBe('transferred');
      expect(phone.log.join('')).toMatch(/REFER sip:/);
      const since = performance.now();
      await phone.command('hangup');
      await phone.waitFor('CALL_CLOSED', 5000, since);
      await until('second leg ended', () => !sip().calls.has(second.callId), 5000);
    });
  }, 30_000);
});

describe('SIP trunk features on raw sockets', () => {
  /** A second SIP listener on the same service, with its own settings (no second HTTP server). */
  async function withSip(overrides: Partial<SipConfig>, body: (port: number, s: SipServer) => Promise<void>): Promise<void> {
    const config = mergeConfig(DEFAULT_CONFIG.sip, { host: '127.0.0.1', port: 0, rtpPortMin: 40_500, rtpPortMax: 40_600, ...overrides });
    const s = new SipServer({ service: server.server.service, config, logger: server.server.service.logger });
    const port = await s.start();
    try {
      await body(port, s);
    } finally {
      await s.stop();
    }
  }

  /** A raw UDP SIP client: sends requests, collects everything that comes back. */
  async function client(port: number) {
    const socket = dgram.createSocket('udp4');
    const got: string[] = [];
    socket.on('message', (m) => got.push(m.toString()));
    await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
    const local = socket.address().port;
    return {
      got,
      local,
      send: (text: string) => socket.send(Buffer.from(text.replaceAll('$PORT', String(local)).replaceAll(`127.0.0.1:${sipPort}`, `127.0.0.1:${port}`)), port, '127.0.0.1'),
      close: () => socket.close(),
    };
  }

  const offer = (rtpPort: number) => ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${rtpPort} RTP/AVP 8 101`, 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:101 telephone-event/8000', ''].join('\r\n');

  /**
   * A raw-socket phone: INVITE with `sdp` (its RTP port filled in), ACK, what it hears as parsed RTP, and a sender of
   * its own RTP (A-law by default) to the service's port.
   */
  async function rawPhone(port: number, s: SipServer, sdp: (rtpPort: number) => string) {
    const c = await client(port);
    const rtp = dgram.createSocket('udp4');
    const heard: { at: number; packet: RtpPacket }[] = [];
    rtp.on('message', (m) => {
      try {
        heard.push({ at: performance.now(), packet: parseRtp(m) });
      } catch {
        // not RTP: not ours to judge
      }
    });
    await new Promise<void>((r) => rtp.bind(0, '127.0.0.1', () => r()));
    const callId = `raw-${Date.now()}-${Math.random().toString(36).slice(2)}`;
    c.send(request('INVITE', { callId, cseq: 1, headers: ['Contact: <sip:tester@127.0.0.1:$PORT>', 'Content-Type: application/sdp'], body: sdp(rtp.address().port) }));
    const ok = await until('200 OK', () => c.got.find((m) => status(m) === 200), 5000);
    const toTag = /^To: .*;tag=([^;\r\n]+)/m.exec(ok)![1];
    const withTag = (text: string): string => text.replace(/^To: (.*)$/m, `To: $1;tag=${toTag}`);
    c.send(withTag(request('ACK', { callId, cseq: 1, headers: [] })));
    const serviceRtp = Number(/^m=audio (\d+)/m.exec(ok)![1]);
    const out = { seq: 1000, timestamp: 5000, ssrc: 0x1234 };
    return {
      ok,
      heard,
      callId,
      recordId: s.calls.get(callId)!.recordId,
      send(payloadType: number, payload: Uint8Array, marker = false): void {
        rtp.send(serializeRtp({ payloadType, marker, seq: out.seq, timestamp: out.timestamp, ssrc: out.ssrc, payload: Buffer.from(payload) }), serviceRtp, '127.0.0.1');
        out.seq = (out.seq + 1) & 0xffff;
        out.timestamp = (out.timestamp + 160) >>> 0;
      },
      /** "What time is it?" in 20 ms A-law packets, paced, up to the words' last sound: no trailing silence. */
      async speak(): Promise<void> {
        let lastSound = microphone.length - 1;
        while (lastSound > 8000 && Math.abs(microphone[lastSound]) < 200) lastSound--;
        const speech = microphone.subarray(8000 - 1600, lastSound + 160);
        for (let off = 0; off + 160 <= speech.length; off += 160) {
          this.send(8, encodeAlaw(speech.subarray(off, off + 160)), off === 0);
          await sleep(20);
        }
      },
      async hangUp(): Promise<void> {
        c.send(withTag(request('BYE', { callId, cseq: 2, headers: [] })));
        await until('call ended', () => !s.calls.has(callId), 3000);
        rtp.close();
        c.close();
      },
    };
  }

  const callerHeard = (recordId: string) =>
    until('the caller heard', async () => (await server.server.service.store.get(recordId, 'any-key'))?.transcript.find((t) => t.role === 'caller' && /time/i.test(t.text)), 10_000);

  it('comfort noise (RFC 3389) when the phone offers it: one CN packet a second between replies instead of 50 of silence, the marker on each reply, and a caller who suppresses its own silence is heard to its turn\'s end', async () => {
    await withSip({}, async (port, s) => {
      const cnOffer = (rtpPort: number) => offer(rtpPort).replace('RTP/AVP 8 101', 'RTP/AVP 8 101 13').replace('a=rtpmap:101', 'a=rtpmap:13 CN/8000\r\na=rtpmap:101');
      const phone = await rawPhone(port, s, cnOffer);
      const { heard } = phone;
      expect(phone.ok).toMatch(/^m=audio \d+ RTP\/AVP 8 101 13\r$/m);
      expect(phone.ok).toContain('a=rtpmap:13 CN/8000');

      // Nothing to say yet: a CN packet (noise level byte, no marker), then one a second, instead of 50 of silence.
      const armedAt = performance.now();
      await sleep(2500);
      const quiet = heard.filter((h) => h.at >= armedAt);
      expect(quiet.every((h) => h.packet.payloadType === 13)).toBe(true);
      expect(quiet.length).toBeGreaterThanOrEqual(2);
      expect(quiet.length).toBeLessThanOrEqual(4);
      expect(quiet[0].packet.payload).toEqual(Buffer.from([127]));
      expect(quiet[0].packet.marker).toBe(false);
      // Sequence numbers count packets sent; timestamps count the time, silence included (50 packet times apart).
      const [a, b] = [quiet[0].packet, quiet[1].packet];
      expect((b.seq - a.seq) & 0xffff).toBe(1);
      expect(((b.timestamp - a.timestamp) >>> 0) / 160).toBe(50);

      // The caller speaks, then suppresses its silence: one CN packet, nothing more. Its turn still ends.
      const repliesBefore = heard.length;
      await phone.speak();
      phone.send(13, Uint8Array.of(80));
      await callerHeard(phone.recordId);
      const reply = await until('the reply', () => heard.slice(repliesBefore).find((h) => h.packet.payloadType === 8), 10_000);
      expect(reply.packet.marker).toBe(true);
      // Only the talkspurt's first packet has the marker; after the reply, CN again.
      const afterReply = await until('CN after the reply', () => heard.find((h) => h.at > reply.at && h.packet.payloadType === 13), 15_000);
      const spurt = heard.filter((h) => h.at >= reply.at && h.at < afterReply.at);
      expect(spurt.length).toBeGreaterThan(25);
      expect(spurt.filter((h) => h.packet.marker)).toHaveLength(1);
      expect(s.calls.get(phone.callId)).toBeDefined();
      await phone.hangUp();
    });
  }, 40_000);

  it('a phone whose RTP stops after its words (silence suppression without CN, a dropout) is still heard to its turn\'s end', async () => {
    await withSip({}, async (port, s) => {
      const phone = await rawPhone(port, s, offer);
      expect(phone.ok).not.toContain('CN/8000');
      await sleep(300);
      await phone.speak();
      // Nothing more is sent: past the jitter buffer's concealment the call hears silence, and answers.
      await callerHeard(phone.recordId);
      await until('the reply', () => phone.heard.some((h) => h.packet.payloadType === 8 && rmsDbfs(decodeAlawPacket(h.packet.payload)) > -40), 10_000);
      await phone.hangUp();
    });
  }, 30_000);

  it('source addresses outside sip.allowFrom get 403', async () => {
    await withSip({ allowFrom: ['10.0.0.0/8'] }, async (port, s) => {
      const c = await client(port);
      c.send(request('OPTIONS'));
      await sleep(300);
      c.close();
      expect(status(c.got[0])).toBe(403);
      expect(s.counters.forbidden).toBe(1);
    });
  });

  it('digest auth: 401 challenge, then the call is answered; INFO DTMF; a dead RTP stream is hung up with BYE', async () => {
    await withSip({ digest: { realm: 'voice-test', users: { trunk: 'pa55word' } }, rtpTimeoutMs: 1500 }, async (port, s) => {
      const c = await client(port);
      const callId = `digest-${Date.now()}`;
      const invite = (cseq: number, headers: string[] = []) => request('INVITE', { callId, cseq, headers: ['Contact: <sip:tester@127.0.0.1:$PORT>', 'Content-Type: application/sdp', ...headers], body: offer(c.local + 2) });
      c.send(invite(1));
      await sleep(300);
      expect(status(c.got[0])).toBe(401);
      const nonce = /nonce="([^"]+)"/.exec(c.got[0])![1];
      c.send(invite(2, [`Authorization: ${digestResponse({ username: 'trunk', password: 'wrong', realm: 'voice-test', nonce, method: 'INVITE', uri: `sip:agent@127.0.0.1:${port}`, nc: '00000001', cnonce: 'x' })}`]));
      await sleep(300);
      expect(status(c.got[1])).toBe(401);
      c.got.length = 0;
      c.send(invite(3, [`Authorization: ${digestResponse({ username: 'trunk', password: 'pa55word', realm: 'voice-test', nonce, method: 'INVITE', uri: `sip:agent@127.0.0.1:${port}`, nc: '00000001', cnonce: 'y' })}`]));
      const ok = await until('200 OK', () => c.got.find((m) => status(m) === 200), 5000);
      expect(c.got.map(status).slice(0, 3)).toEqual([100, 180, 200]);
      expect(ok).toContain('a=rtpmap:8 PCMA/8000');
      expect(ok).toContain('a=rtpmap:101 telephone-event/8000');
      const toTag = /^To: .*;tag=([^;\r\n]+)/m.exec(ok)![1];
      const recordId = s.calls.get(callId)!.recordId;
      c.send(request('ACK', { callId, cseq: 3, headers: [] }).replace(/^To: (.*)$/m, `To: $1;tag=${toTag}`));
      // Keypad digits out of band (SIP INFO, application/dtmf-relay), as some PBXs send them.
      const info = (cseq: number, signal: string) =>
        request('INFO', { callId, cseq, headers: ['Content-Type: application/dtmf-relay'], body: `Signal=${signal}\r\nDuration=160\r\n` }).replace(/^To: (.*)$/m, `To: $1;tag=${toTag}`);
      c.send(info(4, '5'));
      c.send(info(5, '#'));
      await until('INFO DTMF turn', async () => (await server.server.service.store.get(recordId, 'any-key'))?.transcript.find((t) => t.text === 'DTMF: 5'), 1000);
      // Both INFOs answered 200 (the answers may still be in flight when the turn is already on the record).
      await until('200 to both INFOs', () => c.got.filter((m) => status(m) === 200 && /CSeq: \d+ INFO/.test(m)).length === 2, 2000);
      // No RTP from this "phone": after rtpTimeoutMs the service hangs up with BYE; we answer 200.
      const bye = await until('BYE', () => c.got.find((m) => m.startsWith('BYE ')), 6000);
      expect(bye).toContain(`Call-ID: ${callId}`);
      expect(bye).toMatch(/^From: .*tag=/m);
      const via = /^Via: (.*)$/m.exec(bye)![1];
      const headersOf = (name: string) => new RegExp(`^${name}: (.*)$`, 'm').exec(bye)![1];
      c.send(['SIP/2.0 200 OK', `Via: ${via}`, `From: ${headersOf('From')}`, `To: ${headersOf('To')}`, `Call-ID: ${callId}`, `CSeq: ${headersOf('CSeq')}`, 'Content-Length: 0', '', ''].join('\r\n'));
      await until('call ended', () => !s.calls.has(callId), 2000);
      expect(await endReason(recordId)).toBe('rtp_timeout');
      await sleep(1200);
      // The 200 stopped BYE retransmissions.
      expect(c.got.filter((m) => m.startsWith('BYE ')).length).toBe(1);
      c.close();
    });
  }, 20_000);
});
