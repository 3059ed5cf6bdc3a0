/**
 * Twilio's JSON media-stream protocol, which Telnyx also speaks with its own field names: text messages only;
 * in: connected, start, media (base64), dtmf, mark, stop; out: media, mark, clear. A provider supplies how its
 * start message reads, how its media chunks are ordered, what every outbound message must name, and any
 * event of its own.
 */
import type { CodecSpec } from '../../audio/codec.js';
import {
  DTMF_DIGIT,
  checkChunk,
  decodeBase64,
  encodeBase64,
  objectField,
  parseJsonObject,
  stringField,
  unknownEvent,
  type InboundEvent,
  type JsonObject,
  type MediaStreamSerializer,
  type TelephonyProvider,
  type WireMessage,
} from './types.js';

/** A start message read: the stream's id, format and parameters, or why it cannot start (`invalid` / `fatal`). */
export type StartRead = Extract<InboundEvent, { kind: 'start' | 'invalid' | 'fatal' }>;

export abstract class JsonStreamSerializer implements MediaStreamSerializer {
  abstract readonly provider: TelephonyProvider;
  /** The provider's name in error reasons. */
  protected abstract readonly label: string;
  /** The caller's audio format, from the start message. */
  protected format: CodecSpec | null = null;
  /** A provider with one fixed format checks media against it even before the start message (Twilio: µ-law). */
  protected readonly fixedFormat: CodecSpec | null = null;

  /** The `start` message → the stream's start. */
  protected abstract readStart(msg: JsonObject): StartRead;
  /** Fields every outbound message names (Twilio's streamSid). */
  protected abstract outboundFields(): Record<string, string | null>;
  /** A media chunk's order when the provider may reorder chunks. */
  protected abstract sequence(media: JsonObject | undefined, msg: JsonObject): number | undefined;

  /** Events only this provider sends (unknown ones are ignored). */
  protected otherEvent(event: string | undefined, _msg: JsonObject): InboundEvent {
    return unknownEvent(event);
  }

  parseInbound(data: Uint8Array, isBinary: boolean): InboundEvent[] {
    if (isBinary) return [{ kind: 'invalid', reason: `${this.label} media streams send text messages only` }];
    const msg = parseJsonObject(data);
    if (typeof msg === 'string') return [{ kind: 'invalid', reason: msg }];
    const event = stringField(msg, 'event');
    switch (event) {
      case 'connected':
        return [{ kind: 'connected' }];
      case 'start': {
        const start = this.readStart(msg);
        if (start.kind !== 'start') return [start];
        if (this.format) return [{ kind: 'invalid', reason: 'second start message on one stream' }];
        this.format = start.format;
        return [start];
      }
      case 'media':
        return [this.readMedia(msg)];
      case 'dtmf': {
        const digit = stringField(objectField(msg, 'dtmf'), 'digit');
        return [digit && DTMF_DIGIT.test(digit) ? { kind: 'dtmf', digit } : { kind: 'invalid', reason: 'dtmf.digit must be one of 0-9 * # A-D' }];
      }
      case 'mark': {
        const name = stringField(objectField(msg, 'mark'), 'name');
        return [name === undefined ? { kind: 'invalid', reason: 'mark without mark.name' } : { kind: 'mark', name }];
      }
      case 'stop':
        return [{ kind: 'stop' }];
      default:
        return [this.otherEvent(event, msg)];
    }
  }

  /** Caller audio of the inbound track (other tracks are ignored), checked against the stream's format. */
  private readMedia(msg: JsonObject): InboundEvent {
    const format = this.format ?? this.fixedFormat;
    if (!format) return { kind: 'ignored', reason: 'media before start' };
    const media = objectField(msg, 'media');
    const track = stringField(media, 'track');
    if (track !== undefined && track !== 'inbound') return { kind: 'ignored', reason: `media of track ${track.slice(0, 32)}` };
    const b64 = stringField(media, 'payload');
    if (b64 === undefined) return { kind: 'invalid', reason: 'media without media.payload' };
    const payload = decodeBase64(b64);
    if (!payload) return { kind: 'invalid', reason: 'media.payload is not base64' };
    const bad = checkChunk(format, payload);
    if (bad) return { kind: 'invalid', reason: bad };
    return { kind: 'media', payload, seq: this.sequence(media, msg) };
  }

  media(payload: Uint8Array): WireMessage {
    return this.message({ event: 'media', ...this.outboundFields(), media: { payload: encodeBase64(payload) } });
  }

  mark(name: string): WireMessage {
    return this.message({ event: 'mark', ...this.outboundFields(), mark: { name } });
  }

  clear(): WireMessage {
    return this.message({ event: 'clear', ...this.outboundFields() });
  }

  /** Agent audio goes back in the stream's own format. */
  outputFormat(): CodecSpec | null {
    return this.format;
  }

  private message(value: object): WireMessage {
    return { data: JSON.stringify(value), binary: false };
  }
}
