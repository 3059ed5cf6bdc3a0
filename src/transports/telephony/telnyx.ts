import type { CodecSpec } from '../../audio/codec.js';
import { JsonStreamSerializer, type StartRead } from './json-stream.js';
import { objectField, seqField, stringField, stringRecord, type InboundEvent, type JsonObject } from './types.js';

/**
 * Telnyx media streaming (bidirectional RTP mode): JSON text messages like Twilio's, with `stream_id`,
 * snake_case fields, PCMU or PCMA at 8 kHz, and media frames that may arrive out of order (each carries
 * `media.chunk` and `sequence_number`; the transport reorders by them).
 */
const FORMATS: Record<string, CodecSpec> = {
  PCMU: { codec: 'pcmu', sampleRate: 8000 },
  PCMA: { codec: 'pcma', sampleRate: 8000 },
};

export class TelnyxSerializer extends JsonStreamSerializer {
  readonly provider = 'telnyx' as const;
  protected readonly label = 'Telnyx';

  protected readStart(msg: JsonObject): StartRead {
    const start = objectField(msg, 'start');
    const streamId = stringField(msg, 'stream_id') ?? stringField(start, 'stream_id');
    if (!start || !streamId) return { kind: 'invalid', reason: 'start without stream_id' };
    const mediaFormat = objectField(start, 'media_format');
    const encoding = stringField(mediaFormat, 'encoding')?.toUpperCase();
    const rate = mediaFormat?.sample_rate ?? 8000;
    const channels = mediaFormat?.channels ?? 1;
    const format = encoding !== undefined ? FORMATS[encoding] : undefined;
    if (!format || rate !== 8000 || channels !== 1) {
      return { kind: 'fatal', reason: `unsupported media format ${JSON.stringify(mediaFormat ?? null).slice(0, 200)}: expected PCMU or PCMA, 8000 Hz, mono` };
    }
    return {
      kind: 'start',
      streamId,
      providerCallId: stringField(start, 'call_control_id') ?? stringField(start, 'call_session_id') ?? '',
      format,
      // Telnyx names the dialled number in the start message itself: it can choose the agent (config agents).
      parameters: { ...optional('to', stringField(start, 'to')), ...stringRecord(objectField(start, 'custom_parameters')) },
    };
  }

  /** media.chunk counts media frames only; sequence_number also counts other events, so it is the fallback. */
  protected sequence(media: JsonObject | undefined, msg: JsonObject): number | undefined {
    return seqField(media, 'chunk') ?? seqField(msg, 'sequence_number');
  }

  /** Telnyx's messages name no stream: the socket is the stream. */
  protected outboundFields(): Record<string, string | null> {
    return {};
  }

  protected override otherEvent(event: string | undefined, msg: JsonObject): InboundEvent {
    if (event === 'clear') return { kind: 'cleared' };
    if (event === 'error') {
      const payload = objectField(msg, 'payload');
      const detail = [payload?.code, stringField(payload, 'title'), stringField(payload, 'detail')].filter((v) => v !== undefined).join(' ');
      return { kind: 'provider_error', reason: detail.slice(0, 300) || 'unspecified error' };
    }
    return super.otherEvent(event, msg);
  }
}

function optional(name: string, value: string | undefined): Record<string, string> {
  return value === undefined ? {} : { [name]: value };
}
