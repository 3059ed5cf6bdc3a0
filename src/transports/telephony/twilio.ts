import type { CodecSpec } from '../../audio/codec.js';
import {
  DTMF_DIGIT,
  checkChunk,
  decodeBase64,
  encodeBase64,
  objectField,
  parseJsonObject,
  seqField,
  stringField,
  stringRecord,
  type InboundEvent,
  type MediaStreamSerializer,
  type WireMessage,
} from './types.js';

/**
 * Twilio Media Streams (bidirectional, `<Connect><Stream>`): JSON text messages only. In: connected, start,
 * media (base64 µ-law 8 kHz), dtmf, mark, stop. Out: media, mark, clear, each naming the streamSid.
 */
const MULAW_8K: CodecSpec = { codec: 'pcmu', sampleRate: 8000 };

export class TwilioSerializer implements MediaStreamSerializer {
  readonly provider = 'twilio' as const;
  private streamSid: string | null = null;

  parseInbound(data: Uint8Array, isBinary: boolean): InboundEvent[] {
    if (isBinary) return [{ kind: 'invalid', reason: 'Twilio media streams send text messages only' }];
    const msg = parseJsonObject(data);
    if (typeof msg === 'string') return [{ kind: 'invalid', reason: msg }];
    const event = stringField(msg, 'event');
    switch (event) {
      case 'connected':
        return [{ kind: 'connected' }];
      case 'start': {
        const start = objectField(msg, 'start');
        const streamSid = stringField(start, 'streamSid') ?? stringField(msg, 'streamSid');
        if (!start || !streamSid) return [{ kind: 'invalid', reason: 'start without start.streamSid' }];
        if (this.streamSid) return [{ kind: 'invalid', reason: 'second start message on one stream' }];
        const format = objectField(start, 'mediaFormat');
        const encoding = stringField(format, 'encoding');
        const rate = format?.sampleRate;
        const channels = format?.channels ?? 1;
        if (encoding !== 'audio/x-mulaw' || rate !== 8000 || channels !== 1) {
          return [{ kind: 'fatal', reason: `unsupported media format ${JSON.stringify(format ?? null).slice(0, 200)}: expected audio/x-mulaw, 8000 Hz, mono` }];
        }
        this.streamSid = streamSid;
        return [
          {
            kind: 'start',
            streamId: streamSid,
            providerCallId: stringField(start, 'callSid') ?? '',
            format: MULAW_8K,
            parameters: stringRecord(objectField(start, 'customParameters')),
          },
        ];
      }
      case 'media': {
        const media = objectField(msg, 'media');
        const track = stringField(media, 'track');
        if (track !== undefined && track !== 'inbound') return [{ kind: 'ignored', reason: `media of track ${track.slice(0, 32)}` }];
        const b64 = stringField(media, 'payload');
        if (b64 === undefined) return [{ kind: 'invalid', reason: 'media without media.payload' }];
        const payload = decodeBase64(b64);
        if (!payload) return [{ kind: 'invalid', reason: 'media.payload is not base64' }];
        const bad = checkChunk(MULAW_8K, payload);
        if (bad) return [{ kind: 'invalid', reason: bad }];
        return [{ kind: 'media', payload, seq: seqField(media, 'chunk') }];
      }
      case 'dtmf': {
        const digit = stringField(objectField(msg, 'dtmf'), 'digit');
        if (!digit || !DTMF_DIGIT.test(digit)) return [{ kind: 'invalid', reason: 'dtmf.digit must be one of 0-9 * # A-D' }];
        return [{ kind: 'dtmf', digit }];
      }
      case 'mark': {
        const name = stringField(objectField(msg, 'mark'), 'name');
        if (name === undefined) return [{ kind: 'invalid', reason: 'mark without mark.name' }];
        return [{ kind: 'mark', name }];
      }
      case 'stop':
        return [{ kind: 'stop' }];
      case undefined:
        return [{ kind: 'invalid', reason: 'message without a string "event"' }];
      default:
        return [{ kind: 'ignored', reason: `unknown event ${event.slice(0, 64)}` }];
    }
  }

  media(payload: Uint8Array): WireMessage {
    return { data: JSON.stringify({ event: 'media', streamSid: this.streamSid, media: { payload: encodeBase64(payload) } }), binary: false };
  }

  mark(name: string): WireMessage {
    return { data: JSON.stringify({ event: 'mark', streamSid: this.streamSid, mark: { name } }), binary: false };
  }

  clear(): WireMessage {
    return { data: JSON.stringify({ event: 'clear', streamSid: this.streamSid }), binary: false };
  }

  outputFormat(): CodecSpec | null {
    return this.streamSid ? MULAW_8K : null;
  }
}
