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
 * Telnyx media streaming (bidirectional RTP mode): JSON text messages like Twilio's, with `stream_id`,
 * snake_case fields, PCMU or PCMA at 8 kHz, and media frames that may arrive out of order (each carries
 * `media.chunk` and `sequence_number`; the transport reorders by them).
 */
const FORMATS: Record<string, CodecSpec> = {
  PCMU: { codec: 'pcmu', sampleRate: 8000 },
  PCMA: { codec: 'pcma', sampleRate: 8000 },
};

export class TelnyxSerializer implements MediaStreamSerializer {
  readonly provider = 'telnyx' as const;
  private streamId: string | null = null;
  private format: CodecSpec | null = null;

  parseInbound(data: Uint8Array, isBinary: boolean): InboundEvent[] {
    if (isBinary) return [{ kind: 'invalid', reason: 'Telnyx media streams send text messages only' }];
    const msg = parseJsonObject(data);
    if (typeof msg === 'string') return [{ kind: 'invalid', reason: msg }];
    const event = stringField(msg, 'event');
    switch (event) {
      case 'connected':
        return [{ kind: 'connected' }];
      case 'start': {
        const start = objectField(msg, 'start');
        const streamId = stringField(msg, 'stream_id') ?? stringField(start, 'stream_id');
        if (!start || !streamId) return [{ kind: 'invalid', reason: 'start without stream_id' }];
        if (this.format) return [{ kind: 'invalid', reason: 'second start message on one stream' }];
        const mediaFormat = objectField(start, 'media_format');
        const encoding = stringField(mediaFormat, 'encoding')?.toUpperCase();
        const rate = mediaFormat?.sample_rate ?? 8000;
        const channels = mediaFormat?.channels ?? 1;
        const format = encoding !== undefined ? FORMATS[encoding] : undefined;
        if (!format || rate !== 8000 || channels !== 1) {
          return [{ kind: 'fatal', reason: `unsupported media format ${JSON.stringify(mediaFormat ?? null).slice(0, 200)}: expected PCMU or PCMA, 8000 Hz, mono` }];
        }
        this.streamId = streamId;
        this.format = format;
        return [
          {
            kind: 'start',
            streamId,
            providerCallId: stringField(start, 'call_control_id') ?? stringField(start, 'call_session_id') ?? '',
            format,
            // Telnyx names the dialled number in the start message itself: it can choose the agent (config agents).
            parameters: { ...optional('to', stringField(start, 'to')), ...stringRecord(objectField(start, 'custom_parameters')) },
          },
        ];
      }
      case 'media': {
        if (!this.format) return [{ kind: 'ignored', reason: 'media before start' }];
        const media = objectField(msg, 'media');
        const track = stringField(media, 'track');
        if (track !== undefined && track !== 'inbound') return [{ kind: 'ignored', reason: `media of track ${track.slice(0, 32)}` }];
        const b64 = stringField(media, 'payload');
        if (b64 === undefined) return [{ kind: 'invalid', reason: 'media without media.payload' }];
        const payload = decodeBase64(b64);
        if (!payload) return [{ kind: 'invalid', reason: 'media.payload is not base64' }];
        const bad = checkChunk(this.format, payload);
        if (bad) return [{ kind: 'invalid', reason: bad }];
        // media.chunk counts media frames only; sequence_number also counts other events, so it is the fallback.
        return [{ kind: 'media', payload, seq: seqField(media, 'chunk') ?? seqField(msg, 'sequence_number') }];
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
      case 'clear':
        return [{ kind: 'cleared' }];
      case 'error': {
        const payload = objectField(msg, 'payload');
        const detail = [payload?.code, stringField(payload, 'title'), stringField(payload, 'detail')].filter((v) => v !== undefined).join(' ');
        return [{ kind: 'provider_error', reason: detail.slice(0, 300) || 'unspecified error' }];
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
    return { data: JSON.stringify({ event: 'media', media: { payload: encodeBase64(payload) } }), binary: false };
  }

  mark(name: string): WireMessage {
    return { data: JSON.stringify({ event: 'mark', mark: { name } }), binary: false };
  }

  clear(): WireMessage {
    return { data: JSON.stringify({ event: 'clear' }), binary: false };
  }

  /** Telnyx plays back in the stream's own codec (the call's bidirectional codec). */
  outputFormat(): CodecSpec | null {
    return this.format;
  }
}

function optional(name: string, value: string | undefined): Record<string, string> {
  return value === undefined ? {} : { [name]: value };
}
