import type { CodecSpec } from '../../audio/codec.js';
import { JsonStreamSerializer, type StartRead } from './json-stream.js';
import { objectField, seqField, stringField, stringRecord, type JsonObject } from './types.js';

/**
 * Twilio Media Streams (bidirectional, `<Connect><Stream>`): JSON text messages only. In: connected, start,
 * media (base64 µ-law 8 kHz), dtmf, mark, stop. Out: media, mark, clear, each naming the streamSid.
 */
const MULAW_8K: CodecSpec = { codec: 'pcmu', sampleRate: 8000 };

export class TwilioSerializer extends JsonStreamSerializer {
  readonly provider = 'twilio' as const;
  protected readonly label = 'Twilio';
  protected override readonly fixedFormat = MULAW_8K;
  private streamSid: string | null = null;

  protected readStart(msg: JsonObject): StartRead {
    const start = objectField(msg, 'start');
    const streamSid = stringField(start, 'streamSid') ?? stringField(msg, 'streamSid');
    if (!start || !streamSid) return { kind: 'invalid', reason: 'start without start.streamSid' };
    const format = objectField(start, 'mediaFormat');
    const encoding = stringField(format, 'encoding');
    const rate = format?.sampleRate;
    const channels = format?.channels ?? 1;
    if (encoding !== 'audio/x-mulaw' || rate !== 8000 || channels !== 1) {
      return { kind: 'fatal', reason: `unsupported media format ${JSON.stringify(format ?? null).slice(0, 200)}: expected audio/x-mulaw, 8000 Hz, mono` };
    }
    // A second start is refused by the base class before it counts: keep the first stream's sid.
    this.streamSid ??= streamSid;
    return {
      kind: 'start',
      streamId: streamSid,
      providerCallId: stringField(start, 'callSid') ?? '',
      format: MULAW_8K,
      parameters: stringRecord(objectField(start, 'customParameters')),
    };
  }

  protected sequence(media: JsonObject | undefined): number | undefined {
    return seqField(media, 'chunk');
  }

  protected outboundFields(): Record<string, string | null> {
    return { streamSid: this.streamSid };
  }
}
