/** RTCP (RFC 3550 §6): the sender reports we send; we do not act on the caller's reports. */

/** NTP timestamp (RFC 3550 §4) of now. */
function ntpNow(): { sec: number; frac: number } {
  const ms = Date.now() + 2_208_988_800_000;
  const sec = Math.floor(ms / 1000);
  return { sec: sec >>> 0, frac: Math.floor(((ms % 1000) / 1000) * 2 ** 32) >>> 0 };
}

/** RTCP sender report (RFC 3550 §6.4.1) with no report blocks. */
export function buildSenderReport(ssrc: number, rtpTimestamp: number, packets: number, octets: number): Buffer {
  const out = Buffer.alloc(28);
  out[0] = 0x80;
  out[1] = 200;
  out.writeUInt16BE(6, 2);
  out.writeUInt32BE(ssrc >>> 0, 4);
  const ntp = ntpNow();
  out.writeUInt32BE(ntp.sec, 8);
  out.writeUInt32BE(ntp.frac, 12);
  out.writeUInt32BE(rtpTimestamp >>> 0, 16);
  out.writeUInt32BE(packets >>> 0, 20);
  out.writeUInt32BE(octets >>> 0, 24);
  return out;
}
