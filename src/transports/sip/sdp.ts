/**
 * SDP (RFC 4566) offer/answer (RFC 3264) for one audio stream: PCMU/0, PCMA/8, Opus (dynamic),
 * telephone-event (RFC 4733) and, with G.711, comfort noise (CN, RFC 3389). We only ever answer; we never offer.
 */

export type Direction = 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive';
export type SipCodec = 'pcmu' | 'pcma' | 'opus';

export class SdpError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'SdpError';
  }
}

export interface SdpMedia {
  type: string;
  port: number;
  proto: string;
  formats: number[];
  rtpmap: Map<number, { encoding: string; clockRate: number; channels: number }>;
  fmtp: Map<number, string>;
  direction: Direction;
  connection: string | null;
  ptime: number | null;
}

export interface SdpOffer {
  version: number;
  sessionId: string;
  connection: string | null;
  direction: Direction;
  media: SdpMedia[];
}

const DIRECTIONS = new Set<string>(['sendrecv', 'sendonly', 'recvonly', 'inactive']);

export function parseSdp(text: string): SdpOffer {
  if (text.length > 16_384) throw new SdpError('SDP too large');
  const lines = text.split(/\r?\n/).filter((l) => l.length > 0);
  if (lines[0] !== 'v=0') throw new SdpError('SDP must start with v=0');
  const offer: SdpOffer = { version: 0, sessionId: '', connection: null, direction: 'sendrecv', media: [] };
  let current: SdpMedia | null = null;
  for (const line of lines) {
    if (line.length < 2 || line[1] !== '=') throw new SdpError(`malformed SDP line "${line.slice(0, 40)}"`);
    const type = line[0];
    const value = line.slice(2).trim();
    switch (type) {
      case 'o': {
        const parts = value.split(/\s+/);
        if (parts.length !== 6) throw new SdpError('malformed o= line');
        offer.sessionId = parts[1];
        offer.version = Number(parts[2]) || 0;
        break;
      }
      case 'c': {
        const m = /^IN\s+IP[46]\s+([0-9A-Fa-f:.]+|[A-Za-z0-9.-]+)(\/\d+)*$/.exec(value);
        if (!m) throw new SdpError(`malformed c= line "${value.slice(0, 40)}"`);
        if (current) current.connection = m[1];
        else offer.connection = m[1];
        break;
      }
      case 'm': {
        const m = /^(\w+)\s+(\d{1,5})(?:\/\d+)?\s+(\S+)((?:\s+\S+)*)$/.exec(value);
        if (!m) throw new SdpError(`malformed m= line "${value.slice(0, 40)}"`);
        const port = Number(m[2]);
        if (port > 65535) throw new SdpError('m= port out of range');
        const formats = m[4].trim() ? m[4].trim().split(/\s+/).map(Number) : [];
        current = { type: m[1], port, proto: m[3], formats, rtpmap: new Map(), fmtp: new Map(), direction: offer.direction, connection: null, ptime: null };
        offer.media.push(current);
        break;
      }
      case 'a': {
        const colon = value.indexOf(':');
        const name = colon < 0 ? value : value.slice(0, colon);
        const arg = colon < 0 ? '' : value.slice(colon + 1);
        if (DIRECTIONS.has(name)) {
          if (current) current.direction = name as Direction;
          else offer.direction = name as Direction;
        } else if (current && name === 'rtpmap') {
          const m = /^(\d{1,3})\s+([A-Za-z0-9_.-]+)\/(\d+)(?:\/(\d+))?$/.exec(arg.trim());
          if (m) current.rtpmap.set(Number(m[1]), { encoding: m[2].toLowerCase(), clockRate: Number(m[3]), channels: m[4] ? Number(m[4]) : 1 });
        } else if (current && name === 'fmtp') {
          const m = /^(\d{1,3})\s+(.*)$/.exec(arg.trim());
          if (m) current.fmtp.set(Number(m[1]), m[2]);
        } else if (current && name === 'ptime') {
          const p = Number(arg);
          if (Number.isFinite(p) && p > 0) current.ptime = p;
        }
        break;
      }
      default:
        break;
    }
  }
  return offer;
}

export interface NegotiatedMedia {
  codec: SipCodec;
  payloadType: number;
  /** RTP clock rate of the codec (8000 for G.711, 48000 for Opus). */
  clockRate: number;
  telephoneEvent: number | null;
  /** Clock rate of the telephone-event format as offered. */
  telephoneEventRate: number;
  /**
   * Payload type of comfort noise (RFC 3389, CN/8000), when the caller offered it with a G.711 codec and it is
   * allowed: silence is then sent as a CN packet and no packets (silence suppression), and the caller may do the same.
   */
  comfortNoise: number | null;
  remoteAddress: string;
  remotePort: number;
  /** What we do, seen from our side (the answer's direction attribute). */
  direction: Direction;
  ptime: number;
}

/** Which direction we answer to an offered one (RFC 3264 §6.1). */
export function answerDirection(offered: Direction): Direction {
  switch (offered) {
    case 'sendonly':
      return 'recvonly';
    case 'recvonly':
      return 'sendonly';
    case 'inactive':
      return 'inactive';
    default:
      return 'sendrecv';
  }
}

const STATIC: Record<number, { encoding: string; clockRate: number }> = {
  0: { encoding: 'pcmu', clockRate: 8000 },
  8: { encoding: 'pcma', clockRate: 8000 },
  13: { encoding: 'cn', clockRate: 8000 },
};

export interface NegotiateOptions {
  /** Answer CN/8000 when the caller offers it with G.711 (sip.comfortNoise). */
  comfortNoise?: boolean;
}

/**
 * Pick the first audio format in the offer's order that we support (and `allowed` permits). Returns null when
 * nothing fits (→ 488).
 */
export function negotiate(offer: SdpOffer, allowed: readonly SipCodec[], options: NegotiateOptions = {}): NegotiatedMedia | null {
  const audio = offer.media.find((m) => m.type === 'audio' && m.port !== 0 && /^RTP\/AVP$|^RTP\/AVPF$/i.test(m.proto));
  if (!audio) return null;
  const address = audio.connection ?? offer.connection;
  if (!address) return null;
  let chosen: { codec: SipCodec; pt: number; clockRate: number } | null = null;
  for (const pt of audio.formats) {
    const map = audio.rtpmap.get(pt) ?? STATIC[pt];
    if (!map) continue;
    const encoding = map.encoding.toLowerCase();
    const codec: SipCodec | null =
      encoding === 'pcmu' && map.clockRate === 8000 ? 'pcmu' : encoding === 'pcma' && map.clockRate === 8000 ? 'pcma' : encoding === 'opus' && map.clockRate === 48000 ? 'opus' : null;
    if (codec && allowed.includes(codec)) {
      chosen = { codec, pt, clockRate: map.clockRate };
      break;
    }
  }
  if (!chosen) return null;
  // telephone-event at the codec's clock rate (RFC 4733 §2.1), else at any rate: some phones offer
  // telephone-event/8000 beside opus/48000, and digits only need the event timestamps to tell events apart.
  let telephoneEvent: number | null = null;
  let telephoneEventRate = chosen.clockRate;
  for (const pt of audio.formats) {
    const map = audio.rtpmap.get(pt);
    if (!map || map.encoding !== 'telephone-event') continue;
    if (telephoneEvent === null || map.clockRate === chosen.clockRate) {
      telephoneEvent = pt;
      telephoneEventRate = map.clockRate;
    }
    if (map.clockRate === chosen.clockRate) break;
  }
  // Comfort noise at 8 kHz goes with G.711 only (Opus has its own DTX). Encodings are lower case (parseSdp, STATIC).
  const isCn = (pt: number): boolean => {
    const map = audio.rtpmap.get(pt) ?? STATIC[pt];
    return map?.encoding === 'cn' && map.clockRate === 8000;
  };
  const comfortNoise = options.comfortNoise && chosen.codec !== 'opus' ? (audio.formats.find(isCn) ?? null) : null;
  // c=0.0.0.0 is RFC 2543 hold: nothing is to be sent to the caller.
  const direction = address === '0.0.0.0' ? (audio.direction === 'sendonly' || audio.direction === 'sendrecv' ? 'recvonly' : 'inactive') : answerDirection(audio.direction);
  return {
    codec: chosen.codec,
    payloadType: chosen.pt,
    clockRate: chosen.clockRate,
    telephoneEvent,
    telephoneEventRate,
    comfortNoise,
    remoteAddress: address,
    remotePort: audio.port,
    direction,
    ptime: 20,
  };
}

export interface AnswerOptions {
  sessionId: string;
  version: number;
  address: string;
  port: number;
  media: NegotiatedMedia;
}

/** Our SDP answer: one audio stream with the chosen codec (+ telephone-event, + CN), 20 ms packets. */
export function buildAnswer(options: AnswerOptions): string {
  const { media } = options;
  const ipv = options.address.includes(':') ? 'IP6' : 'IP4';
  const formats = [media.payloadType, ...(media.telephoneEvent !== null ? [media.telephoneEvent] : []), ...(media.comfortNoise !== null ? [media.comfortNoise] : [])];
  const lines = [
    'v=0',
    `o=- ${options.sessionId} ${options.version} IN ${ipv} ${options.address}`,
    's=voice-agent',
    `c=IN ${ipv} ${options.address}`,
    't=0 0',
    `m=audio ${options.port} RTP/AVP ${formats.join(' ')}`,
  ];
  if (media.codec === 'pcmu') lines.push(`a=rtpmap:${media.payloadType} PCMU/8000`);
  if (media.codec === 'pcma') lines.push(`a=rtpmap:${media.payloadType} PCMA/8000`);
  if (media.codec === 'opus') {
    lines.push(`a=rtpmap:${media.payloadType} opus/48000/2`);
    lines.push(`a=fmtp:${media.payloadType} useinbandfec=1;maxplaybackrate=16000`);
  }
  if (media.telephoneEvent !== null) {
    lines.push(`a=rtpmap:${media.telephoneEvent} telephone-event/${media.telephoneEventRate}`);
    lines.push(`a=fmtp:${media.telephoneEvent} 0-15`);
  }
  if (media.comfortNoise !== null) lines.push(`a=rtpmap:${media.comfortNoise} CN/8000`);
  lines.push('a=ptime:20', `a=${media.direction}`);
  return lines.join('\r\n') + '\r\n';
}
