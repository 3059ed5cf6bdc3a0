import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { PayloadFramer, ReorderBuffer } from '../src/transports/telephony/reorder.js';
import { TelnyxSerializer } from '../src/transports/telephony/telnyx.js';
import { TwilioSerializer } from '../src/transports/telephony/twilio.js';
import { computeTwilioSignature, verifyTwilioSignature } from '../src/transports/telephony/twilio-signature.js';
import { decodeBase64, type InboundEvent, type MediaStreamSerializer } from '../src/transports/telephony/types.js';
import { VonageSerializer } from '../src/transports/telephony/vonage.js';

/**
 * The provider serializers against message sequences in each provider's documented format, the reorder
 * buffer, Twilio's signature algorithm against its published vectors, and fuzzing of every parser.
 */
const text = (value: unknown) => new TextEncoder().encode(typeof value === 'string' ? value : JSON.stringify(value));
const b64 = (bytes: Uint8Array) => Buffer.from(bytes).toString('base64');
const kinds = (events: InboundEvent[]) => events.map((e) => e.kind);

describe('Twilio serializer', () => {
  const streamSid = 'MZ18ad3ab5a668481ce02b83e7395059f0';
  it('parses a recorded stream: connected, start, media, dtmf, mark, stop', () => {
    const s = new TwilioSerializer();
    expect(s.outputFormat()).toBeNull();
    expect(kinds(s.parseInbound(text({ event: 'connected', protocol: 'Call', version: '1.0.0' }), false))).toEqual(['connected']);
    const [start] = s.parseInbound(
      text({
        event: 'start',
        sequenceNumber: '1',
        start: {
          accountSid: 'AC00000000000000000000000000000000',
          streamSid,
          callSid: 'CA00000000000000000000000000000001',
          tracks: ['inbound'],
          mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
          customParameters: { language: 'fr', caller: '+33123456789', nested: { no: 1 } },
        },
        streamSid,
      }),
      false,
    );
    expect(start).toEqual({
      kind: 'start',
      streamId: streamSid,
      providerCallId: 'CA00000000000000000000000000000001',
      format: { codec: 'pcmu', sampleRate: 8000 },
      parameters: { language: 'fr', caller: '+33123456789' },
    });
    const payload = new Uint8Array(160).fill(0x7f);
    const [media] = s.parseInbound(text({ event: 'media', sequenceNumber: '3', media: { track: 'inbound', chunk: '1', timestamp: '5', payload: b64(payload) }, streamSid }), false);
    expect(media).toEqual({ kind: 'media', payload, seq: 1 });
    expect(s.parseInbound(text({ event: 'dtmf', streamSid, sequenceNumber: '5', dtmf: { track: 'inbound_track', digit: '1' } }), false)).toEqual([{ kind: 'dtmf', digit: '1' }]);
    expect(s.parseInbound(text({ event: 'mark', sequenceNumber: '4', streamSid, mark: { name: '7:seg' } }), false)).toEqual([{ kind: 'mark', name: '7:seg' }]);
    expect(kinds(s.parseInbound(text({ event: 'stop', sequenceNumber: '5', streamSid, stop: { accountSid: 'AC0', callSid: 'CA0' } }), false))).toEqual(['stop']);
  });

  it('builds media, mark and clear messages naming the stream', () => {
    const s = new TwilioSerializer();
    s.parseInbound(text({ event: 'start', start: { streamSid, callSid: 'CA1', mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 } } }), false);
    expect(JSON.parse(String(s.media(new Uint8Array([1, 2, 3])).data))).toEqual({ event: 'media', streamSid, media: { payload: 'AQID' } });
    expect(JSON.parse(String(s.mark('1:seg').data))).toEqual({ event: 'mark', streamSid, mark: { name: '1:seg' } });
    expect(JSON.parse(String(s.clear().data))).toEqual({ event: 'clear', streamSid });
    expect(s.media(new Uint8Array(1)).binary).toBe(false);
  });

  it('refuses wrong formats, bad base64, oversized chunks and garbage with a reason', () => {
    const s = new TwilioSerializer();
    const [fatal] = s.parseInbound(text({ event: 'start', start: { streamSid, mediaFormat: { encoding: 'audio/l16', sampleRate: 16000, channels: 1 } } }), false);
    expect(fatal.kind).toBe('fatal');
    expect(kinds(s.parseInbound(text('{not json'), false))).toEqual(['invalid']);
    expect(kinds(s.parseInbound(text([1, 2]), false))).toEqual(['invalid']);
    expect(kinds(s.parseInbound(text({ event: 'media', media: { payload: '!!!not base64!!!' } }), false))).toEqual(['invalid']);
    expect(kinds(s.parseInbound(text({ event: 'media', media: { payload: b64(new Uint8Array(1601)) } }), false))).toEqual(['invalid']);
    expect(kinds(s.parseInbound(text({ event: 'media', media: { track: 'outbound', payload: 'AA==' } }), false))).toEqual(['ignored']);
    expect(kinds(s.parseInbound(text({ event: 'dtmf', dtmf: { digit: 'X' } }), false))).toEqual(['invalid']);
    expect(kinds(s.parseInbound(text({ event: 'dance' }), false))).toEqual(['ignored']);
    expect(kinds(s.parseInbound(new Uint8Array([0, 1, 2]), true))).toEqual(['invalid']);
  });
});

describe('Telnyx serializer', () => {
  const streamId = '32DE0DEA-53CB-4B21-89A4-9E1819C043BC';
  const start = (encoding: string) => ({
    event: 'start',
    sequence_number: '1',
    stream_id: streamId,
    start: {
      user_id: '3E6F995F-85F7-4705-9741-53B116D28237',
      call_control_id: 'v2:T02llQxIyaRkhfRKxgAP8nY511EhFLizdvdUKJiSw8d6A9BborherQ',
      call_session_id: 'ff55a038-6f5d-11ef-9692-02420aeffb1f',
      from: '+13122010094',
      to: '+13122123456',
      custom_parameters: { customer_id: 'customer_123' },
      media_format: { encoding, sample_rate: 8000, channels: 1 },
    },
  });

  it('parses a recorded stream in PCMA with chunk numbers, dtmf, mark echoes, clear, error and stop', () => {
    const s = new TelnyxSerializer();
    expect(kinds(s.parseInbound(text({ event: 'connected', version: '1.0.0' }), false))).toEqual(['connected']);
    expect(kinds(s.parseInbound(text({ event: 'media', media: { chunk: '1', payload: 'AA==' } }), false))).toEqual(['ignored']);
    const [started] = s.parseInbound(text(start('PCMA')), false);
    expect(started).toMatchObject({ kind: 'start', streamId, providerCallId: start('PCMA').start.call_control_id, format: { codec: 'pcma', sampleRate: 8000 }, parameters: { customer_id: 'customer_123', to: '+13122123456' } });
    expect(s.outputFormat()).toEqual({ codec: 'pcma', sampleRate: 8000 });
    const payload = new Uint8Array(160).fill(0xd5);
    expect(s.parseInbound(text({ event: 'media', sequence_number: '4', media: { track: 'inbound', chunk: '2', timestamp: '40', payload: b64(payload) }, stream_id: streamId }), false)).toEqual([{ kind: 'media', payload, seq: 2 }]);
    // Without media.chunk the message's sequence_number orders it.
    expect(s.parseInbound(text({ event: 'media', sequence_number: '9', media: { payload: b64(payload) } }), false)).toEqual([{ kind: 'media', payload, seq: 9 }]);
    expect(s.parseInbound(text({ event: 'dtmf', stream_id: streamId, occurred_at: '2024-01-01T00:00:00Z', sequence_number: '5', dtmf: { digit: '#' } }), false)).toEqual([{ kind: 'dtmf', digit: '#' }]);
    expect(s.parseInbound(text({ event: 'mark', sequence_number: '6', stream_id: streamId, mark: { name: '3:done' } }), false)).toEqual([{ kind: 'mark', name: '3:done' }]);
    expect(kinds(s.parseInbound(text({ event: 'clear', stream_id: streamId }), false))).toEqual(['cleared']);
    expect(s.parseInbound(text({ event: 'error', stream_id: streamId, payload: { code: 100003, title: 'malformed_frame', detail: 'bad' } }), false)).toEqual([{ kind: 'provider_error', reason: '100003 malformed_frame bad' }]);
    expect(kinds(s.parseInbound(text({ event: 'stop', stream_id: streamId, stop: { call_control_id: 'x' } }), false))).toEqual(['stop']);
    expect(JSON.parse(String(s.clear().data))).toEqual({ event: 'clear' });
    expect(JSON.parse(String(s.mark('1:tick').data))).toEqual({ event: 'mark', mark: { name: '1:tick' } });
    expect(JSON.parse(String(s.media(new Uint8Array([255])).data))).toEqual({ event: 'media', media: { payload: '/w==' } });
  });

  it('refuses an encoding it cannot speak', () => {
    const s = new TelnyxSerializer();
    const [fatal] = s.parseInbound(text(start('G729')), false);
    expect(fatal.kind).toBe('fatal');
    expect(s.outputFormat()).toBeNull();
  });
});

describe('Vonage serializer', () => {
  it('parses websocket:connected with custom headers, binary L16 audio, dtmf, notify echoes and cleared', () => {
    const s = new VonageSerializer();
    expect(kinds(s.parseInbound(new Uint8Array(640), true))).toEqual(['ignored']); // audio before connected
    const events = s.parseInbound(text({ event: 'websocket:connected', 'content-type': 'audio/l16;rate=16000', language: 'de', uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' }), false);
    expect(events).toEqual([
      { kind: 'connected' },
      {
        kind: 'start',
        streamId: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee',
        providerCallId: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee',
        format: { codec: 'pcm16', sampleRate: 16000 },
        parameters: { language: 'de', uuid: 'aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee' },
      },
    ]);
    const frame = new Uint8Array(640).fill(1);
    expect(s.parseInbound(frame, true)).toEqual([{ kind: 'media', payload: frame }]);
    expect(kinds(s.parseInbound(new Uint8Array(641), true))).toEqual(['invalid']);
    expect(kinds(s.parseInbound(new Uint8Array(6402), true))).toEqual(['invalid']);
    expect(s.parseInbound(text({ event: 'websocket:dtmf', digit: '5', duration: 260 }), false)).toEqual([{ kind: 'dtmf', digit: '5' }]);
    expect(s.parseInbound(text({ event: 'websocket:notify', payload: { name: '4:seg' } }), false)).toEqual([{ kind: 'mark', name: '4:seg' }]);
    expect(kinds(s.parseInbound(text({ event: 'websocket:cleared' }), false))).toEqual(['cleared']);
    expect(s.media(frame)).toEqual({ data: frame, binary: true });
    expect(JSON.parse(String(s.clear().data))).toEqual({ action: 'clear' });
    expect(JSON.parse(String(s.mark('4:seg').data))).toEqual({ action: 'notify', payload: { name: '4:seg' } });
  });

  it('takes 8 kHz L16 and refuses other content types', () => {
    const s = new VonageSerializer();
    s.parseInbound(text({ event: 'websocket:connected', 'content-type': 'audio/l16;rate=8000' }), false);
    expect(s.outputFormat()).toEqual({ codec: 'pcm16', sampleRate: 8000 });
    expect(kinds(s.parseInbound(new Uint8Array(320), true))).toEqual(['media']);
    const other = new VonageSerializer();
    expect(kinds(other.parseInbound(text({ event: 'websocket:connected', 'content-type': 'audio/mpeg' }), false))).toEqual(['fatal']);
  });
});

describe('reorder buffer', () => {
  it('puts shuffled chunks back in order and conceals a lost one after `depth` chunks', () => {
    const buffer = new ReorderBuffer<number>(3);
    const out: number[] = [];
    const gaps: number[] = [];
    for (const seq of [1, 3, 2, 4, 6, 5, 7]) for (const r of buffer.push(seq, seq).ready) out.push(r.item);
    expect(out).toEqual([1, 2, 3, 4, 5, 6, 7]);
    // 8 never arrives: after 3 more chunks wait, it is given up and reported as missing.
    for (const seq of [9, 10, 11, 12]) for (const r of buffer.push(seq, seq).ready) {
      out.push(r.item);
      gaps.push(r.missingBefore);
    }
    expect(out.slice(7)).toEqual([9, 10, 11, 12]);
    expect(gaps).toEqual([1, 0, 0, 0]);
    expect(buffer.lost).toBe(1);
    // 8 arriving now is too late; 12 again is a duplicate.
    expect(buffer.push(8, 8).dropped).toBe(true);
    expect(buffer.push(12, 12).dropped).toBe(true);
    expect(buffer.late).toBe(2);
  });

  it('never loses, duplicates or reorders chunks that arrive within the window (property)', () => {
    fc.assert(
      fc.property(fc.array(fc.integer({ min: 0, max: 2 }), { minLength: 1, maxLength: 200 }), (swaps) => {
        // Sequence 0..n-1 with non-overlapping swaps of neighbours or next-but-one: no chunk moves more than 2.
        const seqs = swaps.map((_, i) => i);
        for (let i = 0; i + 2 < seqs.length; i++) {
          if (swaps[i] === 0) continue;
          const j = i + swaps[i];
          [seqs[i], seqs[j]] = [seqs[j], seqs[i]];
          i = j;
        }
        const buffer = new ReorderBuffer<number>(3);
        const out: number[] = [];
        for (const seq of seqs) for (const r of buffer.push(seq, seq).ready) out.push(r.item);
        for (const r of buffer.flush().ready) out.push(r.item);
        // The very first chunk fixes the start: a smaller one swapped before it is late by definition.
        const first = seqs[0];
        const expected = seqs.filter((s) => s >= first).sort((a, b) => a - b);
        expect(out).toEqual(expected);
      }),
      { numRuns: 300 },
    );
  });

  it('payload framer cuts uneven chunks into exact payloads and pads the tail', () => {
    const framer = new PayloadFramer(160);
    const sizes = [159, 161, 160, 158, 162, 1];
    const out = sizes.flatMap((n, i) => framer.push(new Uint8Array(n).fill(i + 1)));
    expect(out.every((p) => p.length === 160)).toBe(true);
    expect(out.length).toBe(Math.floor(801 / 160));
    expect(framer.pending).toBe(801 % 160);
    const tail = framer.flush(0xff)!;
    expect(tail.length).toBe(160);
    expect(tail[159]).toBe(0xff);
    expect(framer.flush(0xff)).toBeNull();
  });
});

describe('Twilio request signature', () => {
  const url = 'https://mycompany.com/myapp.php?foo=1&bar=2';
  it("matches Twilio's published examples", () => {
    const params = (n: string) => ({ CallSid: 'CA1234567890ABCDE', Caller: n, Digits: '1234', From: n, To: '+18005551212' });
    expect(computeTwilioSignature('12345', url, params('+14158675309'))).toBe('RSOYDt4T1cUTdK1PDd93/VVr8B8=');
    expect(computeTwilioSignature('12345', url, params('+14158675310'))).toBe('GvWf1cFY/Q7PnoempGyD5oXAezc=');
    expect(verifyTwilioSignature('12345', 'GvWf1cFY/Q7PnoempGyD5oXAezc=', [url], params('+14158675310'))).toBe(true);
    expect(verifyTwilioSignature('12345', 'GvWf1cFY/Q7PnoempGyD5oXAezc=', [url], params('+14158675311'))).toBe(false);
    expect(verifyTwilioSignature('54321', 'GvWf1cFY/Q7PnoempGyD5oXAezc=', [url], params('+14158675310'))).toBe(false);
    expect(verifyTwilioSignature('12345', undefined, [url])).toBe(false);
  });

  it('accepts the URL with or without the default port, as Twilio does', () => {
    const signed = computeTwilioSignature('tok', 'wss://voice.example.com:443/v1/telephony/twilio');
    expect(verifyTwilioSignature('tok', signed, ['wss://voice.example.com/v1/telephony/twilio'])).toBe(true);
    const plain = computeTwilioSignature('tok', 'wss://voice.example.com/v1/telephony/twilio?x=1');
    expect(verifyTwilioSignature('tok', plain, ['wss://voice.example.com:443/v1/telephony/twilio?x=1'])).toBe(true);
    expect(verifyTwilioSignature('tok', plain, ['wss://voice.example.com/v1/telephony/twilio?x=2'])).toBe(false);
  });
});

describe('parsers never throw (fuzz)', () => {
  const makers: (() => MediaStreamSerializer)[] = [() => new TwilioSerializer(), () => new TelnyxSerializer(), () => new VonageSerializer()];
  const started = (make: () => MediaStreamSerializer): MediaStreamSerializer => {
    const s = make();
    s.parseInbound(text({ event: 'start', stream_id: 'S', streamSid: 'S', start: { streamSid: 'S', mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 }, media_format: { encoding: 'PCMU', sample_rate: 8000, channels: 1 } } }), false);
    s.parseInbound(text({ event: 'websocket:connected', 'content-type': 'audio/l16;rate=16000' }), false);
    return s;
  };
  const valid = new Set(['connected', 'start', 'media', 'dtmf', 'mark', 'cleared', 'stop', 'ignored', 'invalid', 'provider_error', 'fatal']);
  // Messages shaped like the real ones, with every field replaced by arbitrary JSON.
  const shaped = fc.record({
    event: fc.oneof(fc.constantFrom('connected', 'start', 'media', 'dtmf', 'mark', 'stop', 'clear', 'error', 'websocket:connected', 'websocket:dtmf', 'websocket:notify'), fc.string()),
    media: fc.oneof(fc.anything(), fc.record({ payload: fc.oneof(fc.base64String(), fc.string()), chunk: fc.oneof(fc.string(), fc.integer()), track: fc.string() })),
    start: fc.anything(),
    dtmf: fc.anything(),
    mark: fc.anything(),
    payload: fc.anything(),
    digit: fc.anything(),
    sequence_number: fc.anything(),
    'content-type': fc.oneof(fc.string(), fc.constant('audio/l16;rate=16000')),
  }, { requiredKeys: ['event'] });

  for (const make of makers) {
    it(`${make().provider}: arbitrary bytes, JSON and protocol-shaped messages`, () => {
      fc.assert(
        fc.property(fc.oneof(fc.uint8Array({ maxLength: 2000 }), fc.json().map((j) => text(j)), shaped.map((m) => text(m))), fc.boolean(), fc.boolean(), (data, isBinary, afterStart) => {
          const s = afterStart ? started(make) : make();
          const events = s.parseInbound(data, isBinary);
          expect(Array.isArray(events)).toBe(true);
          for (const event of events) {
            expect(valid.has(event.kind)).toBe(true);
            if (event.kind === 'media') expect(event.payload.length).toBeGreaterThan(0);
            if (event.kind === 'media') expect(event.payload.length).toBeLessThanOrEqual(6400);
            if (event.kind === 'dtmf') expect(event.digit).toMatch(/^[0-9*#A-D]$/);
          }
        }),
        { numRuns: 400 },
      );
    });
  }

  it('strict base64 decoding agrees with Buffer on valid input and refuses the rest', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 400 }), (bytes) => {
        expect(decodeBase64(b64(bytes))).toEqual(new Uint8Array(bytes));
      }),
      { numRuns: 200 },
    );
    for (const bad of ['a', 'abc', '====', 'ab=c', 'a b c d', 'ÿÿÿÿ']) expect(decodeBase64(bad)).toBeNull();
  });
});
