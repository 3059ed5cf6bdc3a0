/** The `webrtc` section (browser calls, docs/webrtc.md explains each field): options, defaults and type. */
import type { TransportDescription } from '../kit/describe.js';
import { common, defaultsOf, t, type Resolved } from '../../core/options.js';

/** Opus frame lengths a WebRTC call may use here: 10 ms halves the packetisation wait, 20 ms halves the packets. */
export const OPUS_FRAME_CHOICES = [10, 20] as const;
export type OpusFrameMs = (typeof OPUS_FRAME_CHOICES)[number];

export const WEBRTC_OPTIONS = t.object({
  /** STUN/TURN servers for the server's own ICE agent (empty: host candidates only, no traffic to third parties). */
  iceServers: t.default(
    t.array(
      t.object({
        urls: t.anyOf(t.text(), t.array(t.text(), { minItems: 1 })),
        username: t.optional(t.string()),
        credential: t.optional(t.string()),
      }),
    ),
    [],
  ),
  /** Origins allowed to call the signaling routes from a page on another origin ("*" allows any). */
  corsOrigins: t.default(common.texts, []),
  /** Only these local IPs are offered as host candidates (empty: every interface libwebrtc finds). */
  candidateAddresses: t.default(common.texts, []),
  /** UDP ports the server's ICE agent may use (open these in the firewall). */
  portRange: t.optional(t.object({ min: t.integer(1, 65535), max: t.integer(1, 65535) })),
  /** Concurrent browser calls one process accepts; more get 503. */
  maxPeers: t.default(t.integer(0), 200),
  /** Longest wait for ICE gathering before the answer is sent with the candidates found so far. */
  iceGatheringTimeoutMs: t.default(common.ms(), 3000),
  /** A peer whose connection dropped (tab closed, network gone) is hung up after this long. */
  disconnectGraceMs: t.default(common.ms(), 5000),
  /** Offers being negotiated at once; more get 503 with Retry-After (docs/security.md). */
  maxConcurrentOffers: t.default(t.integer(1), 8),
  /** m= sections an offer may hold (several must be BUNDLEd); more get 400. */
  maxOfferMediaSections: t.default(t.integer(1, 16), 4),
  /** Distinct ICE candidates an offer may list; more get 400. */
  maxRemoteCandidates: t.default(t.integer(0, 256), 50),
  /** Non-public networks (CIDRs) a caller's ICE candidates may name; by default only public addresses are probed. */
  remoteCandidateNetworks: t.default(common.texts, []),
  /**
   * Opus frame length both ways, in ms: the `a=ptime` of the offer as libwebrtc reads it and of the answer the browser
   * reads. 10 ms waits half as long to fill a packet and lets the jitter buffers sit lower; 20 ms sends half the
   * packets (BENCHMARKS.md "Opus frames of 10 ms").
   */
  opusFrameMs: t.default(t.enum(OPUS_FRAME_CHOICES), 20),
  /**
   * Opus DTX both ways (`usedtx=1` in the offer libwebrtc reads and in the answer): while a side is silent it sends a
   * packet every 400 ms instead of 50 a second, and the receiver plays comfort noise. A third less CPU per call on the
   * media path, no change in voice-to-voice (BENCHMARKS.md "Opus DTX").
   */
  opusDtx: t.default(t.boolean(), true),
});
export type WebRtcConfig = Resolved<typeof WEBRTC_OPTIONS>;
export const WEBRTC_DEFAULTS: WebRtcConfig = defaultsOf(WEBRTC_OPTIONS);

export function webRtcProblems(c: WebRtcConfig): string[] {
  return c.portRange && c.portRange.min > c.portRange.max ? ['webrtc.portRange: min must not exceed max'] : [];
}

/** The browser widget's door: an SDP offer over HTTPS, Opus both ways, events on a data channel. */
export const describeWebRtc = (webrtc: WebRtcConfig): TransportDescription => ({
  name: 'webrtc',
  door: 'POST /v1/webrtc/offer',
  enabled: webrtc.maxPeers > 0,
  audio: ['opus/48000'],
  control: 'JSON events on the "events" data channel (docs/webrtc.md)',
});
