/** RFC 4733 telephone-events: the payload and the digits they carry. */
import { RtpParseError } from './packet.js';

export interface TelephoneEvent {
  event: number;
  end: boolean;
  volume: number;
  duration: number;
}

/** RFC 4733 §2.3 payload. */
export function parseTelephoneEvent(payload: Buffer): TelephoneEvent {
  if (payload.length < 4) throw new RtpParseError(`telephone-event payload of ${payload.length} bytes (need 4)`);
  return { event: payload[0], end: (payload[1] & 0x80) !== 0, volume: payload[1] & 0x3f, duration: payload.readUInt16BE(2) };
}

const DTMF_DIGITS = '0123456789*#ABCD';

/** Event code → keypad digit, or null for non-DTMF events (flash, tones). */
export function dtmfDigit(event: number): string | null {
  return event < DTMF_DIGITS.length ? DTMF_DIGITS[event] : null;
}

/**
 * Turns telephone-event packets into digits: one digit per event, on its end packet. The end packet is
 * sent three times (RFC 4733 §2.5.1.4) and all copies share the event's RTP timestamp: later copies are
 * dropped. An event whose end never arrives is delivered when the next event starts.
 */
export class DtmfReceiver {
  private lastEnded: number | null = null;
  private pending: { timestamp: number; digit: string } | null = null;

  push(timestamp: number, ev: TelephoneEvent): string[] {
    const digit = dtmfDigit(ev.event);
    const out: string[] = [];
    if (this.pending && this.pending.timestamp !== timestamp) {
      out.push(this.pending.digit);
      this.lastEnded = this.pending.timestamp;
      this.pending = null;
    }
    if (digit === null || timestamp === this.lastEnded) return out;
    if (ev.end) {
      out.push(digit);
      this.lastEnded = timestamp;
      this.pending = null;
    } else {
      this.pending = { timestamp, digit };
    }
    return out;
  }
}
