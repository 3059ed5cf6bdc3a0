import type { CodecSpec } from '../../audio/codec.js';

/**
 * What a telephony provider's media-stream WebSocket tells us, in one vocabulary for every provider. Each
 * provider module (twilio.ts, telnyx.ts, vonage.ts) turns its wire messages into these and builds its own
 * outbound messages; media-stream.ts does everything else (session, codecs, framing, marks, barge-in).
 */
export type InboundEvent =
  /** The provider's hello; carries nothing we need. */
  | { kind: 'connected' }
  /** The stream starts: identifiers, the caller's audio format, and the operator's custom parameters. */
  | { kind: 'start'; streamId: string; providerCallId: string; format: CodecSpec; parameters: Record<string, string> }
  /** One chunk of caller audio in the stream's format; `seq` orders chunks when the provider may reorder them. */
  | { kind: 'media'; payload: Uint8Array; seq?: number }
  | { kind: 'dtmf'; digit: string }
  /** A mark we sent came back: the audio before it has played (or was cleared). */
  | { kind: 'mark'; name: string }
  /** The provider confirms a clear. */
  | { kind: 'cleared' }
  | { kind: 'stop' }
  /** A well-formed message we do not act on (other tracks, unknown events). */
  | { kind: 'ignored'; reason: string }
  /** A malformed message: logged and dropped. */
  | { kind: 'invalid'; reason: string }
  /** The provider reported an error on its side. */
  | { kind: 'provider_error'; reason: string }
  /** Something that makes the call impossible (an audio format we cannot speak): the stream is closed. */
  | { kind: 'fatal'; reason: string };

/** One message to send on the socket. */
export interface WireMessage {
  data: string | Uint8Array;
  binary: boolean;
}

export type TelephonyProvider = 'twilio' | 'telnyx' | 'vonage';

/** One provider's wire protocol. Stateful: it learns the stream id from the start message. */
export interface MediaStreamSerializer {
  readonly provider: TelephonyProvider;
  /** One WebSocket message → what it means. Never throws: bad input becomes an `invalid` event. */
  parseInbound(data: Uint8Array, isBinary: boolean): InboundEvent[];
  /** One outbound audio payload of exactly one 20 ms frame in `outputFormat()`. */
  media(payload: Uint8Array): WireMessage;
  /** A mark the provider echoes once the audio before it has played. */
  mark(name: string): WireMessage;
  /** Drop the agent audio the provider still has buffered (barge-in). */
  clear(): WireMessage;
  /** The format agent audio must be sent in, once the stream started. */
  outputFormat(): CodecSpec | null;
}

/** Biggest caller audio chunk we accept in one message: longer chunks are not a live stream. */
export const MAX_CHUNK_MS = 200;

const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** Strict base64 (Buffer.from is lenient and would turn garbage into noise). Null when not base64. */
export function decodeBase64(text: string): Uint8Array | null {
  if (!BASE64.test(text)) return null;
  return new Uint8Array(Buffer.from(text, 'base64'));
}

export function encodeBase64(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString('base64');
}

export type JsonObject = Record<string, unknown>;

/** A text message as a JSON object, or the reason it is not one. */
export function parseJsonObject(data: Uint8Array): JsonObject | string {
  let value: unknown;
  try {
    value = JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8'));
  } catch {
    return 'message is not valid JSON';
  }
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'message is not a JSON object';
  return value as JsonObject;
}

export function objectField(obj: JsonObject, key: string): JsonObject | undefined {
  const value = obj[key];
  return typeof value === 'object' && value !== null && !Array.isArray(value) ? (value as JsonObject) : undefined;
}

export function stringField(obj: JsonObject | undefined, key: string): string | undefined {
  const value = obj?.[key];
  return typeof value === 'string' ? value : undefined;
}

/** A sequence number sent as a string or a number ("42" or 42); undefined when absent or not a safe integer. */
export function seqField(obj: JsonObject | undefined, key: string): number | undefined {
  const value = obj?.[key];
  const n = typeof value === 'string' && /^\d{1,15}$/.test(value) ? Number(value) : typeof value === 'number' ? value : NaN;
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

/** String-valued entries of an object (custom parameters), bounded so a hostile peer cannot bloat memory. */
export function stringRecord(obj: JsonObject | undefined, maxEntries = 32, maxLength = 512): Record<string, string> {
  const out: Record<string, string> = {};
  if (!obj) return out;
  let n = 0;
  for (const [key, value] of Object.entries(obj)) {
    if (n >= maxEntries) break;
    if (typeof value !== 'string' && typeof value !== 'number' && typeof value !== 'boolean') continue;
    if (key.length > 128) continue;
    out[key] = String(value).slice(0, maxLength);
    n++;
  }
  return out;
}

export const DTMF_DIGIT = /^[0-9*#A-D]$/;

/** Bytes of `ms` audio in a PCM-like format (µ-law/A-law 1 byte per sample, pcm16 2). */
export function bytesFor(spec: CodecSpec, ms: number): number {
  return Math.round((spec.sampleRate * ms) / 1000) * (spec.codec === 'pcm16' ? 2 : 1);
}

/** Check a media chunk's size against its format; a reason when it is not acceptable. */
export function checkChunk(spec: CodecSpec, payload: Uint8Array): string | null {
  if (payload.length === 0) return 'empty media payload';
  if (spec.codec === 'pcm16' && payload.length % 2 !== 0) return `odd byte count ${payload.length} for 16-bit PCM`;
  const max = bytesFor(spec, MAX_CHUNK_MS);
  if (payload.length > max) return `media payload of ${payload.length} bytes exceeds ${MAX_CHUNK_MS} ms (${max} bytes)`;
  return null;
}

/** An event name a provider's parser does not know (or a message without one). */
export function unknownEvent(event: string | undefined): InboundEvent {
  return event === undefined ? { kind: 'invalid', reason: 'message without a string "event"' } : { kind: 'ignored', reason: `unknown event ${event.slice(0, 64)}` };
}
