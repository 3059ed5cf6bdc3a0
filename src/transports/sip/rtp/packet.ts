/** RTP (RFC 3550) packets: the fixed header in and out. */
export class RtpParseError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'RtpParseError';
  }
}

export interface RtpPacket {
  payloadType: number;
  marker: boolean;
  seq: number;
  timestamp: number;
  ssrc: number;
  payload: Buffer;
}

/** Parse one RTP datagram. Throws RtpParseError for anything that is not RTP version 2. */
export function parseRtp(buf: Buffer): RtpPacket {
  if (buf.length < 12) throw new RtpParseError(`RTP packet of ${buf.length} bytes is shorter than its header`);
  const b0 = buf[0];
  if (b0 >> 6 !== 2) throw new RtpParseError(`RTP version ${b0 >> 6} is not 2`);
  const padding = (b0 & 0x20) !== 0;
  const extension = (b0 & 0x10) !== 0;
  const csrcCount = b0 & 0x0f;
  let offset = 12 + csrcCount * 4;
  if (extension) {
    if (buf.length < offset + 4) throw new RtpParseError('truncated RTP header extension');
    offset += 4 + buf.readUInt16BE(offset + 2) * 4;
  }
  let end = buf.length;
  if (padding) {
    const pad = buf[buf.length - 1];
    if (pad === 0 || pad > end - offset) throw new RtpParseError('invalid RTP padding');
    end -= pad;
  }
  if (offset > end) throw new RtpParseError('RTP header longer than the packet');
  return {
    payloadType: buf[1] & 0x7f,
    marker: (buf[1] & 0x80) !== 0,
    seq: buf.readUInt16BE(2),
    timestamp: buf.readUInt32BE(4),
    ssrc: buf.readUInt32BE(8),
    payload: buf.subarray(offset, end),
  };
}

export function serializeRtp(p: RtpPacket): Buffer {
  const out = Buffer.allocUnsafe(12 + p.payload.length);
  out[0] = 0x80;
  out[1] = (p.marker ? 0x80 : 0) | (p.payloadType & 0x7f);
  out.writeUInt16BE(p.seq & 0xffff, 2);
  out.writeUInt32BE(p.timestamp >>> 0, 4);
  out.writeUInt32BE(p.ssrc >>> 0, 8);
  p.payload.copy(out, 12);
  return out;
}
