import type { CodecSpec, EdgeSampleRate } from '../../audio/codec.js';
import { DTMF_DIGIT, checkChunk, objectField, parseJsonObject, stringField, stringRecord, type InboundEvent, type MediaStreamSerializer, type WireMessage, unknownEvent } from './types.js';

/**
 * Vonage Voice API WebSocket endpoint: the first text message is `{"event":"websocket:connected",
 * "content-type":"audio/l16;rate=16000", ...custom headers}`; audio then flows as binary 16-bit little-endian
 * PCM, 20 ms per message, both ways. Text events: `websocket:dtmf`, `websocket:notify` (echo of our
 * `notify` action, used as a mark), `websocket:cleared`. `{"action":"clear"}` flushes Vonage's playback buffer.
 */
const RATES: readonly EdgeSampleRate[] = [8000, 16000, 24000];

/** Fields of websocket:connected that are protocol, not the operator's custom headers. */
const PROTOCOL_FIELDS = new Set(['event', 'content-type']);

export class VonageSerializer implements MediaStreamSerializer {
  readonly provider = 'vonage' as const;
  private format: CodecSpec | null = null;

  parseInbound(data: Uint8Array, isBinary: boolean): InboundEvent[] {
    if (isBinary) {
      if (!this.format) return [{ kind: 'ignored', reason: 'audio before websocket:connected' }];
      const bad = checkChunk(this.format, data);
      if (bad) return [{ kind: 'invalid', reason: bad }];
      return [{ kind: 'media', payload: data }];
    }
    const msg = parseJsonObject(data);
    if (typeof msg === 'string') return [{ kind: 'invalid', reason: msg }];
    const event = stringField(msg, 'event');
    switch (event) {
      case 'websocket:connected': {
        if (this.format) return [{ kind: 'invalid', reason: 'second websocket:connected on one stream' }];
        const contentType = stringField(msg, 'content-type') ?? '';
        const match = /^audio\/l16;\s*rate=(\d+)$/i.exec(contentType.trim());
        const rate = match ? Number(match[1]) : NaN;
        const sampleRate = RATES.find((r) => r === rate);
        if (sampleRate === undefined) {
          return [{ kind: 'fatal', reason: `unsupported content-type ${JSON.stringify(contentType.slice(0, 100))}: expected audio/l16;rate=8000, 16000 or 24000` }];
        }
        this.format = { codec: 'pcm16', sampleRate };
        const headers: Record<string, unknown> = {};
        for (const [key, value] of Object.entries(msg)) if (!PROTOCOL_FIELDS.has(key)) headers[key] = value;
        const parameters = stringRecord(headers);
        return [
          { kind: 'connected' },
          {
            kind: 'start',
            streamId: parameters.uuid ?? parameters.conversation_uuid ?? '',
            providerCallId: parameters.uuid ?? parameters.call_uuid ?? '',
            format: this.format,
            parameters,
          },
        ];
      }
      case 'websocket:dtmf': {
        // Documented with the digit at the top level; some accounts nest it under "dtmf".
        const digit = stringField(msg, 'digit') ?? stringField(objectField(msg, 'dtmf'), 'digit');
        if (!digit || !DTMF_DIGIT.test(digit)) return [{ kind: 'invalid', reason: 'websocket:dtmf digit must be one of 0-9 * # A-D' }];
        return [{ kind: 'dtmf', digit }];
      }
      case 'websocket:notify': {
        const name = stringField(objectField(msg, 'payload'), 'name');
        if (name === undefined) return [{ kind: 'ignored', reason: 'websocket:notify without payload.name' }];
        return [{ kind: 'mark', name }];
      }
      case 'websocket:cleared':
        return [{ kind: 'cleared' }];
      case 'websocket:error':
        return [{ kind: 'provider_error', reason: JSON.stringify(msg).slice(0, 300) }];
      default:
        return [unknownEvent(event)];
    }
  }

  media(payload: Uint8Array): WireMessage {
    return { data: payload, binary: true };
  }

  /** Vonage's `notify` action: echoed as `websocket:notify` when the audio sent before it has played. */
  mark(name: string): WireMessage {
    return { data: JSON.stringify({ action: 'notify', payload: { name } }), binary: false };
  }

  clear(): WireMessage {
    return { data: JSON.stringify({ action: 'clear' }), binary: false };
  }

  outputFormat(): CodecSpec | null {
    return this.format;
  }
}
