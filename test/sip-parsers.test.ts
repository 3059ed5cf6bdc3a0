import { describe, expect, it } from 'vitest';
import fc from 'fast-check';
import {
  SipParseError,
  SipStreamFramer,
  buildResponse,
  header,
  headerList,
  parseNameAddr,
  parseSipMessage,
  parseVia,
  requestEssentials,
  serializeSipMessage,
  type SipRequest,
} from '../src/transports/sip/message.js';
import { SdpError, buildAnswer, negotiate, parseSdp } from '../src/transports/sip/sdp.js';
import { RtpParseError, parseRtp, serializeRtp } from '../src/transports/sip/rtp/packet.js';
import { DtmfReceiver, parseTelephoneEvent } from '../src/transports/sip/rtp/dtmf.js';
import { JitterBuffer } from '../src/transports/sip/rtp/jitter-buffer.js';
import { DigestAuth, digestResponse } from '../src/transports/sip/access.js';
import { isAllowed, networkList } from '../src/core/networks.js';
import { TORTURE, crlf } from './fixtures/sip-torture.js';

/** Parse as the UAS does: message, then (for requests) the mandatory headers. Returns the status owed or 'ok'. */
function verdict(text: string): 'ok' | number {
  try {
    const m = parseSipMessage(Buffer.from(text, 'utf8'));
    if (m.kind === 'request') requestEssentials(m);
    return 'ok';
  } catch (err) {
    if (err instanceof SipParseError) return err.status;
    throw err;
  }
}

describe('SIP message parser (RFC 3261, RFC 4475 torture cases)', () => {
  for (const c of TORTURE) {
    it(`${c.name} → ${c.expect}`, () => {
      expect(verdict(c.message)).toBe(c.expect);
      if (c.expect !== 'ok' || !c.check) return;
      const m = parseSipMessage(Buffer.from(c.message, 'utf8'));
      if (c.check.method) expect(m.kind === 'request' && m.method).toBe(c.check.method);
      if (c.check.callId) expect(header(m, 'call-id')).toBe(c.check.callId);
      if (c.check.bodyLength !== undefined) expect(m.body.length).toBe(c.check.bodyLength);
    });
  }

  it('unfolds, expands compact forms and splits comma lists in wsinv', () => {
    const m = parseSipMessage(Buffer.from(TORTURE.find((c) => c.name === 'wsinv')!.message, 'utf8')) as SipRequest;
    const e = requestEssentials(m);
    expect(e.cseq).toEqual({ seq: 9, method: 'INVITE' });
    expect(e.maxForwards).toBe(68);
    expect(e.to.params.get('tag')).toBe('1918181833n');
    expect(e.from.params.get('tag')).toBe('98asjd8');
    expect(e.from.uri).toBe('sip:jdrosen@example.com');
    const vias = headerList(m, 'via').map(parseVia);
    expect(vias.map((v) => [v.transport, v.host, v.params.get('branch')])).toEqual([
      ['UDP', '192.0.2.2', '390skdjuw'],
      ['TCP', 'spindle.example.com', 'z9hG4bK9ikj8'],
      ['UDP', '192.168.255.111', 'z9hG4bK30239'],
    ]);
    expect(header(m, 'newfangledheader')).toBe('newfangled value continued newfangled value');
    expect(parseNameAddr(header(m, 'contact')!).params.get('q')).toBe('0.33');
    expect(m.body.toString()).toContain('m=audio 49217');
  });

  it('builds responses that copy Via/From/To/Call-ID/CSeq and add the To tag', () => {
    const req = parseSipMessage(Buffer.from(TORTURE.find((c) => c.name === 'compact')!.message)) as SipRequest;
    const text = serializeSipMessage(buildResponse(req, 200, { toTag: 'xyz' })).toString();
    expect(text.startsWith('SIP/2.0 200 OK\r\n')).toBe(true);
    expect(text).toContain('To: <sip:user@example.com>;tag=xyz\r\n');
    expect(text).toContain('Call-ID: compact.23a2d3@192.0.2.1\r\n');
    expect(text).toContain('Content-Length: 0\r\n\r\n');
    expect(verdict(text)).toBe('ok');
  });

  it('frames a TCP stream by Content-Length, across any chunking, and answers CRLF keep-alives', () => {
    const one = crlf(['OPTIONS sip:a@b SIP/2.0', 'Via: SIP/2.0/TCP h;branch=z9hG4bK1', 'Content-Length: 5', '', 'hello']);
    const two = crlf(['BYE sip:a@b SIP/2.0', 'l: 0', '', '']);
    const stream = Buffer.from(`\r\n\r\n${one}${two}`);
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 1, max: stream.length - 1 }), { maxLength: 8 }), (cuts) => {
        const framer = new SipStreamFramer();
        const points = [...new Set(cuts)].sort((a, b) => a - b);
        const out: string[] = [];
        let keepalives = 0;
        let prev = 0;
        for (const p of [...points, stream.length]) {
          const r = framer.push(stream.subarray(prev, p));
          out.push(...r.messages.map((m) => m.toString()));
          keepalives += r.keepalives;
          prev = p;
        }
        expect(out).toEqual([one, two]);
        expect(keepalives).toBe(1);
      }),
      { numRuns: 200 },
    );
    expect(() => new SipStreamFramer().push(Buffer.from('OPTIONS sip:a@b SIP/2.0\r\nl: x\r\n\r\n'))).toThrow(SipParseError);
    expect(() => new SipStreamFramer({ maxMessageBytes: 100, maxHeaders: 10 }).push(Buffer.alloc(200, 0x41))).toThrow(/too large/);
  });

  it('fuzz: any bytes give a message or a SipParseError, never another exception', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 2048 }), (bytes) => {
        try {
          const m = parseSipMessage(Buffer.from(bytes));
          if (m.kind === 'request') requestEssentials(m);
        } catch (err) {
          expect(err).toBeInstanceOf(SipParseError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('fuzz: mutated torture messages give a message or a SipParseError', () => {
    const seeds = TORTURE.map((c) => Buffer.from(c.message, 'utf8'));
    fc.assert(
      fc.property(
        fc.integer({ min: 0, max: seeds.length - 1 }),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 }), fc.constantFrom('set', 'cut', 'insert')), { minLength: 1, maxLength: 6 }),
        (seedIndex, edits) => {
          let buf = Buffer.from(seeds[seedIndex]);
          for (const [pos, byte, op] of edits) {
            const at = buf.length === 0 ? 0 : pos % buf.length;
            if (op === 'set' && buf.length > 0) buf[at] = byte;
            else if (op === 'cut') buf = buf.subarray(0, at);
            else buf = Buffer.concat([buf.subarray(0, at), Buffer.from([byte]), buf.subarray(at)]);
          }
          try {
            const m = parseSipMessage(buf);
            if (m.kind === 'request') {
              const e = requestEssentials(m);
              headerList(m, 'via').map(parseVia);
              // A parsed request can always be answered.
              serializeSipMessage(buildResponse(m, 400, { toTag: 't' }));
              expect(e.callId.length).toBeGreaterThan(0);
            }
          } catch (err) {
            expect(err).toBeInstanceOf(SipParseError);
          }
          const framer = new SipStreamFramer();
          try {
            framer.push(buf);
          } catch (err) {
            expect(err).toBeInstanceOf(SipParseError);
          }
        },
      ),
      { numRuns: 3000 },
    );
  });

  it('fuzz: serialise → parse round-trips generated requests', () => {
    const token = fc.stringMatching(/^[A-Za-z][A-Za-z0-9-]{0,15}$/);
    const value = fc.stringMatching(/^[A-Za-z0-9 ;=.@:<>_-]{0,40}$/).map((s) => s.trim());
    fc.assert(
      fc.property(token, fc.array(fc.tuple(token.map((t) => `x-${t}`), value), { maxLength: 6 }), fc.uint8Array({ maxLength: 300 }), (method, extra, body) => {
        const req: SipRequest = {
          kind: 'request',
          method: method.toUpperCase(),
          uri: 'sip:agent@127.0.0.1:5060',
          headers: [
            { name: 'via', value: 'SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bKabc' },
            { name: 'from', value: '<sip:a@b>;tag=1' },
            { name: 'to', value: '<sip:c@d>' },
            { name: 'call-id', value: 'abc@def' },
            { name: 'cseq', value: `7 ${method.toUpperCase()}` },
            ...extra.map(([n, v]) => ({ name: n.toLowerCase(), value: v })),
          ],
          body: Buffer.from(body),
        };
        const parsed = parseSipMessage(serializeSipMessage(req)) as SipRequest;
        expect(parsed.method).toBe(req.method);
        expect(parsed.body.equals(req.body)).toBe(true);
        expect(parsed.headers.filter((h) => h.name !== 'content-length')).toEqual(req.headers);
        expect(requestEssentials(parsed).cseq.seq).toBe(7);
      }),
      { numRuns: 500 },
    );
  });
});

describe('SDP offer/answer (RFC 3264)', () => {
  const offer = (m: string, extra: string[] = []) =>
    crlf(['v=0', 'o=- 1 2 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', m, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:96 opus/48000/2', 'a=rtpmap:101 telephone-event/8000', 'a=fmtp:101 0-15', ...extra, '']);

  it('keeps the offerer order, finds telephone-event, and answers the direction', () => {
    const a = negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 8 0 101')), ['pcmu', 'pcma', 'opus'])!;
    expect([a.codec, a.payloadType, a.telephoneEvent, a.remotePort, a.direction]).toEqual(['pcma', 8, 101, 4000, 'sendrecv']);
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 96 0', ['a=sendonly'])), ['pcmu', 'pcma', 'opus'])!).toMatchObject({ codec: 'opus', clockRate: 48000, telephoneEvent: null, direction: 'recvonly' });
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 0', ['a=inactive'])), ['pcmu'])!.direction).toBe('inactive');
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 96')), ['pcmu', 'pcma'])).toBeNull();
    expect(negotiate(parseSdp(offer('m=audio 0 RTP/AVP 0')), ['pcmu'])).toBeNull();
    const held = negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 0').replace('c=IN IP4 127.0.0.1', 'c=IN IP4 0.0.0.0')), ['pcmu'])!;
    expect(held.direction).toBe('recvonly');
    const answer = buildAnswer({ sessionId: '9', version: 1, address: '127.0.0.1', port: 40000, media: a });
    expect(answer).toContain('m=audio 40000 RTP/AVP 8 101\r\n');
    expect(answer).toContain('a=rtpmap:101 telephone-event/8000\r\n');
    expect(negotiate(parseSdp(answer), ['pcma'])!.codec).toBe('pcma');
  });

  it('answers comfort noise (CN/8000, RFC 3389) with G.711 when offered and allowed, never with Opus', () => {
    const withCn = negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 0 101 13')), ['pcmu'], { comfortNoise: true })!;
    expect(withCn.comfortNoise).toBe(13);
    const answer = buildAnswer({ sessionId: '9', version: 1, address: '127.0.0.1', port: 40000, media: withCn });
    expect(answer).toContain('m=audio 40000 RTP/AVP 0 101 13\r\n');
    expect(answer).toContain('a=rtpmap:13 CN/8000\r\n');
    // A dynamic CN/8000 is found by its rtpmap; CN at another rate is not ours.
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 8 98', ['a=rtpmap:98 CN/8000'])), ['pcma'], { comfortNoise: true })!.comfortNoise).toBe(98);
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 8 98', ['a=rtpmap:98 CN/16000'])), ['pcma'], { comfortNoise: true })!.comfortNoise).toBeNull();
    // Not offered, not allowed, or with Opus: no CN, and the answer does not name it.
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 0 101')), ['pcmu'], { comfortNoise: true })!.comfortNoise).toBeNull();
    const off = negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 0 13')), ['pcmu'], { comfortNoise: false })!;
    expect(off.comfortNoise).toBeNull();
    expect(buildAnswer({ sessionId: '9', version: 1, address: '127.0.0.1', port: 40000, media: off })).not.toMatch(/CN\/8000| 13\r\n/);
    expect(negotiate(parseSdp(offer('m=audio 4000 RTP/AVP 96 13')), ['opus'], { comfortNoise: true })!.comfortNoise).toBeNull();
  });

  it('fuzz: any text gives an offer or an SdpError', () => {
    fc.assert(
      fc.property(fc.string({ maxLength: 600 }), fc.boolean(), (text, prefix) => {
        try {
          negotiate(parseSdp(prefix ? `v=0\r\n${text}` : text), ['pcmu', 'pcma', 'opus']);
        } catch (err) {
          expect(err).toBeInstanceOf(SdpError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});

describe('RTP', () => {
  it('round-trips packets and rejects what is not RTP v2', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 127 }), fc.boolean(), fc.integer({ min: 0, max: 65535 }), fc.nat(), fc.nat(), fc.uint8Array({ maxLength: 400 }), (pt, marker, seq, ts, ssrc, payload) => {
        const p = { payloadType: pt, marker, seq, timestamp: ts >>> 0, ssrc: ssrc >>> 0, payload: Buffer.from(payload) };
        const back = parseRtp(serializeRtp(p));
        expect({ ...back, payload: Buffer.from(back.payload) }).toEqual(p);
      }),
      { numRuns: 500 },
    );
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 300 }), (bytes) => {
        try {
          const p = parseRtp(Buffer.from(bytes));
          expect(p.payload.length).toBeLessThanOrEqual(bytes.length - 12);
          if (p.payload.length >= 4) parseTelephoneEvent(p.payload);
        } catch (err) {
          expect(err).toBeInstanceOf(RtpParseError);
        }
      }),
      { numRuns: 3000 },
    );
  });

  it('delivers each RFC 4733 digit once despite redundant end packets', () => {
    const rx = new DtmfReceiver();
    const ev = (event: number, end: boolean, duration: number) => ({ event, end, volume: 10, duration });
    const got: string[] = [];
    for (const [ts, e] of [
      [1000, ev(1, false, 160)],
      [1000, ev(1, false, 320)],
      [1000, ev(1, true, 480)],
      [1000, ev(1, true, 480)],
      [1000, ev(1, true, 480)],
      [2000, ev(11, false, 160)],
      [2000, ev(11, true, 400)],
      [2000, ev(11, true, 400)],
      [3000, ev(5, false, 160)], // its end packets are all lost…
      [4000, ev(10, true, 800)], // …so it is delivered when the next event starts
      [4000, ev(10, true, 800)],
      [5000, ev(16, true, 800)], // not a DTMF event
    ] as const) {
      got.push(...rx.push(ts, e));
    }
    expect(got.join('')).toBe('1#5*');
  });

  it('jitter buffer: reorders shuffled packets, conceals dropped ones, never plays one twice, across seq wrap-around', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 20, max: 200 }),
        fc.integer({ min: 0, max: 65535 }),
        fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 200, maxLength: 200 }),
        fc.array(fc.boolean(), { minLength: 200, maxLength: 200 }),
        (count, startSeq, delays, drops) => {
          // minFrames 5 = 100 ms of buffer, more than the 60 ms of jitter: nothing may arrive too late.
          const jb = new JitterBuffer({ minFrames: 5, maxFrames: 25 });
          const dropped = new Set<number>();
          for (let i = 1; i < count - 1; i++) if (drops[i] && i % 7 === 0) dropped.add(i);
          const arrivals = new Map<number, number[]>();
          for (let i = 0; i < count; i++) {
            if (dropped.has(i)) continue;
            const tick = i + delays[i];
            arrivals.set(tick, [...(arrivals.get(tick) ?? []), i]);
          }
          const played: number[] = [];
          let lost = 0;
          for (let tick = 0; tick < count + 20; tick++) {
            // Within one tick packets come in any order.
            for (const i of (arrivals.get(tick) ?? []).reverse()) {
              const payload = Buffer.alloc(4);
              payload.writeUInt32BE(i);
              jb.push((startSeq + i) & 0xffff, i * 20, payload, tick * 20);
            }
            const out = jb.pop();
            if (out.kind === 'audio') played.push(out.payload.readUInt32BE(0));
            else if (out.kind === 'lost' && played.length > 0 && played.at(-1)! < count - 1) lost++;
          }
          const expected = [...Array(count).keys()].filter((i) => !dropped.has(i));
          expect(played).toEqual(expected);
          expect(jb.stats.late).toBe(0);
          expect(lost).toBe(dropped.size);
        },
      ),
      { numRuns: 150 },
    );
  });

  it('jitter buffer: deepens when the network jitters and drops packets that come after their slot', () => {
    const jb = new JitterBuffer();
    expect(jb.targetFrames).toBe(1);
    for (let i = 0; i < 50; i++) jb.push(i, i * 20, Buffer.alloc(1), i * 20 + (i % 2 === 0 ? 0 : 45));
    expect(jb.jitter).toBeGreaterThan(20);
    expect(jb.targetFrames).toBeGreaterThan(2);
    const late = new JitterBuffer({ minFrames: 1 });
    late.push(0, 0, Buffer.alloc(1), 0);
    late.push(2, 40, Buffer.alloc(1), 40);
    expect(late.pop().kind).toBe('audio');
    expect(late.pop().kind).toBe('lost');
    late.push(1, 20, Buffer.alloc(1), 60);
    expect(late.stats.late).toBe(1);
  });
});

describe('SIP access control', () => {
  it('allow-list CIDRs, IPv4-mapped addresses, and bad entries', () => {
    const list = networkList(['127.0.0.0/8', '10.1.0.0/16', '2001:db8::/32', '192.0.2.7'], 'sip.allowFrom');
    expect(isAllowed(list, '127.0.0.1')).toBe(true);
    expect(isAllowed(list, '::ffff:10.1.200.3')).toBe(true);
    expect(isAllowed(list, '10.2.0.1')).toBe(false);
    expect(isAllowed(list, '2001:db8::1')).toBe(true);
    expect(isAllowed(list, '192.0.2.7')).toBe(true);
    expect(isAllowed(list, 'garbage')).toBe(false);
    expect(() => networkList(['10.0.0.0/33'], 'sip.allowFrom')).toThrow(/prefix/);
    expect(() => networkList(['example.com'], 'sip.allowFrom')).toThrow(/not an IP/);
  });

  it('digest: challenge, correct answer, wrong password, forged nonce', () => {
    const auth = new DigestAuth({ realm: 'voice', users: { trunk: 's3cret' } });
    const nonce = /nonce="([^"]+)"/.exec(auth.challenge())![1];
    const answer = (password: string, n = nonce) => digestResponse({ username: 'trunk', password, realm: 'voice', nonce: n, method: 'INVITE', uri: 'sip:agent@127.0.0.1', nc: '00000001', cnonce: 'abc' });
    expect(auth.verify('INVITE', answer('s3cret'))).toBe('ok');
    expect(auth.verify('INVITE', answer('wrong'))).toBe('invalid');
    expect(auth.verify('INVITE', answer('s3cret', `${Date.now().toString(16)}.forged`))).toBe('invalid');
    expect(auth.verify('INVITE', undefined)).toBe('invalid');
    expect(auth.verify('INVITE', 'Digest garbage')).toBe('invalid');
  });
});
