/** The `sip` section (native SIP + RTP calls, docs/sip.md): its options, their defaults and their type. */
import type { TransportDescription } from '../kit/describe.js';
import { common, defaultsOf, t, type Resolved } from '../../core/options.js';
import { schemaProblems } from '../../core/validate.js';

const ip = t.string({ format: 'ip' });
const cidrs = t.array(t.string({ format: 'cidr' }));

export const SIP_OPTIONS = t.object(
  {
    enabled: t.default(t.boolean(), true),
    /** Address the SIP UDP and TCP listeners and the RTP sockets bind. */
    host: t.default(ip, '0.0.0.0'),
    /** SIP port, UDP and TCP (0: a free one). */
    port: t.default(t.integer(0, 65535), 5060),
    /** Address written into SDP and Contact when `host` is a wildcard or behind NAT (default: the address the request reached). */
    publicAddress: t.optional(ip),
    /** Source addresses allowed to send SIP (CIDRs); others get 403. Default: loopback only. */
    allowFrom: t.default(cidrs, ['127.0.0.0/8', '::1/128']),
    /** Optional Digest authentication of INVITEs (trunks that require it): realm and user name → password. */
    digest: t.optional(t.object({ realm: t.text(), users: t.record(t.text(), t.text(), { minProperties: 1 }) })),
    /** Even UDP ports for RTP (RTCP on port+1): at least 4 ports within 1024..65535. */
    rtpPortMin: t.default(t.integer(1024, 65535), 10_000),
    rtpPortMax: t.default(t.integer(1024, 65535), 20_000),
    /** A call with no RTP for this long is hung up (BYE). */
    rtpTimeoutMs: t.default(common.ms(1000, 3_600_000), 30_000),
    /** Ringing before the 200 OK (0: answer at once). */
    ringMs: t.default(common.ms(0, 60_000), 0),
    /** Codecs accepted, in the caller's preference order. */
    codecs: t.default(t.array(t.enum(['pcmu', 'pcma', 'opus']), { minItems: 1, uniqueItems: true }), ['pcmu', 'pcma', 'opus']),
    /**
     * Silence suppression with comfort noise (RFC 3389) when the caller offers CN/8000 with G.711: between the
     * agent's replies one CN packet (and one a second, for NAT and RTP timeouts) instead of 50 packets of silence;
     * a caller's own CN is played as silence. false: never in the answer (50 packets a second, always).
     */
    comfortNoise: t.default(t.boolean(), true),
    /** Where `call.action: transfer` sends the caller (SIP REFER), e.g. "sip:desk@pbx.example.com"; unset: no transfer. */
    transferTarget: t.optional(t.string({ pattern: '^[sS][iI][pP][sS]?:[^\\s<>]+$' })),
    /**
     * The call's language by dialled number (the Request-URI user, else the To user), e.g. `{ "+34910000000": "es" }`:
     * such a call is heard and answered in that language only (no per-turn detection, one recogniser lane).
     */
    languageByNumber: t.optional(t.record(common.langTag)),
    /** Concurrent SIP calls; more get 486 Busy Here. */
    maxCalls: t.default(t.integer(1, 100_000), 200),
    /**
     * Receive buffer asked for the SIP UDP socket. Messages come in bursts (a trunk re-sends its INVITEs, every call
     * ends at once); the kernel's default (~208 KiB, about 166 short datagrams) drops the rest of a burst while the event
     * loop is busy, and each drop costs the caller a retransmission (0.5 s, then 1 s, 2 s …). The kernel caps it at
     * `net.core.rmem_max`: the service logs a warning when it got less.
     */
    udpReceiveBufferBytes: t.default(t.integer(65_536, 1 << 30), 4 * 1024 * 1024),
    /** SIP messages above this get 513. */
    maxMessageBytes: t.default(t.integer(1024, 65_535), 16 * 1024),
    /**
     * Where RTP may be sent besides the INVITE's source address (CIDRs), e.g. a trunk's media servers when they
     * differ from its signalling servers. An SDP naming anything else is refused with 488.
     */
    mediaNetworks: t.default(cidrs, []),
  },
);
export type SipConfig = Resolved<typeof SIP_OPTIONS>;
export const SIP_DEFAULTS: SipConfig = defaultsOf(SIP_OPTIONS);

/** What the schema cannot say: relations between keys. */
export function sipProblems(c: SipConfig): string[] {
  return c.rtpPortMax - c.rtpPortMin < 4 ? [`sip.rtpPortMax: must be at least rtpPortMin + 4 (got ${c.rtpPortMin}..${c.rtpPortMax})`] : [];
}

/** Every problem of a `sip` section: its shape first, then the relations between its keys. */
export function sipConfigProblems(c: unknown): string[] {
  const shape = schemaProblems(SIP_OPTIONS, c, 'sip');
  return shape.length > 0 ? shape : sipProblems(c as SipConfig);
}

/** Native SIP: INVITE over UDP and TCP on `sip.port`, RTP with the codecs configured, digits as RFC 4733 or SIP INFO. */
export const describeSip = (sip: SipConfig): TransportDescription => ({
  name: 'sip',
  door: `sip:${sip.publicAddress ?? sip.host}:${sip.port};transport=udp,tcp`,
  enabled: sip.enabled,
  audio: sip.codecs.map((codec) => (codec === 'opus' ? 'opus/48000' : `${codec}/8000`)),
  control: 'SIP (INVITE, re-INVITE, BYE, CANCEL, REFER, INFO), RFC 4733 telephone-events',
});
