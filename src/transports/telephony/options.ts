/** The `telephony` section (providers' media-stream WebSockets, docs/telephony.md): options, defaults and type. */
import type { TransportDescription } from '../kit/describe.js';
import { defaultsOf, t, type Resolved } from '../../core/options.js';

export const TELEPHONY_OPTIONS = t.object({
  /**
   * The public base URL providers connect to (e.g. `wss://voice.example.com`), when a proxy sits in front: Twilio
   * signs the URL it requested, so it is needed to verify X-Twilio-Signature. Default: from the request's Host and
   * X-Forwarded-Proto headers.
   */
  publicUrl: t.optional(t.string({ pattern: '^(wss?|https?)://[^\\s]+$' })),
  /** With `authToken` set, every Twilio upgrade must carry a valid X-Twilio-Signature. */
  twilio: t.default(t.object({ authToken: t.optional(t.text()) }), {}),
  /** A stream that has not sent its start message this long after connecting is closed. */
  startTimeoutMs: t.default(t.integer(100, 600_000), 10_000),
  /** Media frames held back waiting for a missing one (Telnyx may reorder), 20 ms each. */
  reorderDepth: t.default(t.integer(0, 50), 3),
});
export type TelephonyConfig = Resolved<typeof TELEPHONY_OPTIONS>;
export const TELEPHONY_DEFAULTS: TelephonyConfig = defaultsOf(TELEPHONY_OPTIONS);

/** Phone networks' media streams: each provider's own WebSocket protocol, G.711 (Vonage: linear PCM). */
export const describeTelephony = (): TransportDescription[] => [
  { name: 'twilio', door: 'GET /v1/telephony/twilio (WebSocket)', enabled: true, audio: ['pcmu/8000'], control: 'Twilio Media Streams (start, media, mark, clear, dtmf, stop)' },
  { name: 'telnyx', door: 'GET /v1/telephony/telnyx (WebSocket)', enabled: true, audio: ['pcmu/8000', 'pcma/8000'], control: 'Telnyx media streaming (start, media, mark, clear, dtmf, stop)' },
  { name: 'vonage', door: 'GET /v1/telephony/vonage (WebSocket)', enabled: true, audio: ['pcm16/8000', 'pcm16/16000', 'pcm16/24000'], control: 'Vonage WebSocket audio (JSON connect event, binary PCM)' },
];
