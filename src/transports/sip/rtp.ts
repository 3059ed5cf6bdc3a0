/**
 * RTP (RFC 3550) for one call leg: packet codec, an adaptive jitter buffer for what comes in, RFC 4733
 * telephone-events, and a 20 ms send clock for what goes out. Symmetric within limits: we answer to where the
 * caller's packets come from (NAT), but only from an address the signalling makes plausible, latched once.
 */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';

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

export type JitterOutput = { kind: 'audio'; payload: Buffer; arrivalMs: number } | { kind: 'lost' } | { kind: 'empty' };

export interface JitterOptions {
  /** Frames (packets) held before playout starts, at least. */
  minFrames?: number;
  /** Never hold more than this; older packets are dropped to catch up. */
  maxFrames?: number;
  /** Packet duration, ms (for the jitter estimate). */
  frameMs?: number;
}

/**
 * Adaptive jitter buffer over RTP sequence numbers. `push` as packets arrive; `pop` once per frame interval.
 * Reorders, drops late and duplicate packets, reports gaps as `lost` (the caller conceals them), and sizes
 * its target depth from the RFC 3550 interarrival-jitter estimate.
 */
export class JitterBuffer {
  private readonly packets = new Map<number, { payload: Buffer; arrivalMs: number }>();
  /** Sequence numbers used by non-audio packets (RFC 4733 events share the stream's numbering): not gaps. */
  private readonly skips = new Set<number>();
  private readonly minFrames: number;
  private readonly maxFrames: number;
  private readonly frameMs: number;
  /** Extended sequence number of the next packet to play; null until playout starts. */
  private next: number | null = null;
  private highest: number | null = null;
  private emptyPops = 0;
  private popsSinceDrop = 0;
  private jitterMs = 0;
  private lastTransit: number | null = null;
  stats = { received: 0, late: 0, duplicate: 0, lost: 0, concealed: 0, dropped: 0, played: 0 };

  constructor(options: JitterOptions = {}) {
    this.minFrames = options.minFrames ?? 1;
    this.maxFrames = options.maxFrames ?? 25;
    this.frameMs = options.frameMs ?? 20;
  }

  /** RFC 3550 interarrival jitter estimate, ms. */
  get jitter(): number {
    return this.jitterMs;
  }

  /** True when the packet due next is here (playout has started and it arrived). */
  get nextReady(): boolean {
    return this.next !== null && this.packets.has(this.next);
  }

  /** Frames currently waiting. */
  get depth(): number {
    return this.packets.size;
  }

  /** Depth the buffer fills to before playing: enough to absorb about twice the measured jitter. */
  get targetFrames(): number {
    const wanted = Math.ceil((2 * this.jitterMs) / this.frameMs) + this.minFrames;
    return Math.min(this.maxFrames, Math.max(this.minFrames, wanted));
  }

  /** `timestampMs` is the RTP timestamp converted to ms (for jitter); `arrivalMs` when it came. */
  push(seq: number, timestampMs: number, payload: Buffer, arrivalMs: number): void {
    this.stats.received++;
    const ext = this.extend(seq);
    const transit = arrivalMs - timestampMs;
    if (this.lastTransit !== null) {
      const d = Math.abs(transit - this.lastTransit);
      // A jump of seconds is a new talkspurt or a sender restart, not network jitter.
      if (d < 1000) this.jitterMs += (d - this.jitterMs) / 16;
    }
    this.lastTransit = transit;
    if (this.next !== null && ext < this.next) {
      this.stats.late++;
      return;
    }
    if (this.packets.has(ext)) {
      this.stats.duplicate++;
      return;
    }
    this.packets.set(ext, { payload, arrivalMs });
    if (this.highest === null || ext > this.highest) this.highest = ext;
    // Too much queued (a burst, or the sender's clock runs fast): drop the oldest to hold latency down.
    while (this.packets.size > this.maxFrames) {
      const oldest = Math.min(...this.packets.keys());
      this.packets.delete(oldest);
      this.stats.dropped++;
      if (this.next !== null && oldest >= this.next) this.next = oldest + 1;
    }
  }

  /** A packet of this stream that carries no audio (a telephone-event): its number is not a loss. */
  skip(seq: number): void {
    const ext = this.extend(seq);
    if (this.next !== null && ext < this.next) return;
    this.skips.add(ext);
    if (this.highest === null || ext > this.highest) this.highest = ext;
    if (this.skips.size > 256) for (const s of [...this.skips].sort((a, b) => a - b).slice(0, 128)) this.skips.delete(s);
  }

  pop(): JitterOutput {
    while (this.next !== null && this.skips.delete(this.next)) this.next++;
    if (this.next === null) {
      if (this.packets.size < this.targetFrames) return { kind: 'empty' };
      this.next = Math.min(...this.packets.keys());
    }
    // Sustained excess over the target (a burst that never drained): skip the oldest frame now and then to
    // cut the latency back gradually (one frame in ten, so speech is not chopped).
    this.popsSinceDrop++;
    if (this.packets.size > 2 * this.targetFrames + 4 && this.popsSinceDrop >= 10) {
      this.popsSinceDrop = 0;
      const oldest = Math.min(...this.packets.keys());
      this.packets.delete(oldest);
      this.stats.dropped++;
      this.next = Math.min(...(this.packets.size > 0 ? this.packets.keys() : [oldest + 1]));
    }
    const entry = this.packets.get(this.next);
    if (entry) {
      this.packets.delete(this.next);
      this.next++;
      this.emptyPops = 0;
      this.stats.played++;
      return { kind: 'audio', payload: entry.payload, arrivalMs: entry.arrivalMs };
    }
    if (this.packets.size > 0) {
      // A gap with later packets waiting: that one is lost (or later than we can wait for).
      this.next++;
      this.stats.lost++;
      return { kind: 'lost' };
    }
    // Nothing at all: the packet is late or the sender paused (hold, DTX). Conceal without giving up on it
    // (if it comes, it plays, and the excess rule above trims the added delay); after a while, re-buffer.
    if (++this.emptyPops > 3) {
      this.next = null;
      return { kind: 'empty' };
    }
    this.stats.concealed++;
    return { kind: 'lost' };
  }

  /** Map a 16-bit sequence number onto a 32-bit+ counter near the highest seen (handles wrap-around). */
  private extend(seq: number): number {
    const ref = this.highest ?? this.next;
    if (ref === null) return seq + 65536; // leave room below for reordered early packets
    const base = ref - (ref & 0xffff);
    let ext = base + seq;
    if (ext - ref > 32768) ext -= 65536;
    else if (ref - ext > 32768) ext += 65536;
    return ext;
  }
}

/** Allocates even RTP ports (RTCP on port+1) from the configured range. */
export class RtpPortPool {
  private readonly inUse = new Set<number>();
  private cursor: number;

  constructor(
    readonly min: number,
    readonly max: number,
  ) {
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1024 || max > 65535 || max - min < 4) {
      throw new RangeError(`sip.rtpPortMin/rtpPortMax must be a range of at least 4 ports within 1024..65535, got ${min}..${max}`);
    }
    this.cursor = min + (min % 2) + 2 * randomInt(0, Math.max(1, Math.floor((max - min) / 2)));
  }

  /** Bind an RTP/RTCP socket pair on `host`; tries successive ports until one pair binds. */
  async bind(host: string): Promise<{ rtp: dgram.Socket; rtcp: dgram.Socket; port: number }> {
    const even = this.min + (this.min % 2);
    const slots = Math.floor((this.max - even) / 2);
    for (let attempt = 0; attempt < Math.min(slots, 64); attempt++) {
      this.cursor += 2;
      if (this.cursor + 1 > this.max) this.cursor = even;
      const port = this.cursor;
      if (this.inUse.has(port)) continue;
      const type = host.includes(':') ? 'udp6' : 'udp4';
      const rtp = dgram.createSocket(type);
      const rtcp = dgram.createSocket(type);
      try {
        await bindSocket(rtp, port, host);
        await bindSocket(rtcp, port + 1, host);
        this.inUse.add(port);
        return { rtp, rtcp, port };
      } catch {
        rtp.close();
        rtcp.close();
      }
    }
    throw new Error(`no free RTP port pair in ${this.min}..${this.max}`);
  }

  release(port: number): void {
    this.inUse.delete(port);
  }

  get used(): number {
    return this.inUse.size;
  }
}

function bindSocket(socket: dgram.Socket, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.bind(port, host, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}

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

/**
 * One 20 ms clock for every call in the process: one timer wake-up per tick however many calls there are,
 * drift-corrected against performance.now(). After a stall, `due` tells each stream how many ticks passed.
 */
class MediaClock {
  private readonly streams = new Set<RtpStream>();
  private timer: NodeJS.Timeout | null = null;
  private nextAt = 0;
  /** Lateness of recent ticks, ms (ring buffer, for metrics and the media benchmark). */
  readonly lateness = new Float64Array(4096);
  ticks = 0;

  add(stream: RtpStream): void {
    this.streams.add(stream);
    if (!this.timer) {
      this.nextAt = performance.now() + 20;
      this.schedule();
    }
  }

  delete(stream: RtpStream): void {
    this.streams.delete(stream);
    if (this.streams.size === 0 && this.timer) {
      clearTimeout(this.timer);
      this.timer = null;
    }
  }

  private schedule(): void {
    this.timer = setTimeout(() => this.tick(), Math.max(0, this.nextAt - performance.now()));
  }

  private tick(): void {
    const now = performance.now();
    const due = Math.max(1, Math.floor((now - this.nextAt) / 20) + 1);
    this.lateness[this.ticks++ % this.lateness.length] = now - this.nextAt;
    this.nextAt += due * 20;
    const streams = [...this.streams];
    // One call's failure must not stop the clock for the others.
    for (const s of streams) guard(() => s.step(due, now));
    // Play out after this loop turn's I/O: packets that queued in the sockets during a stall are read first.
    setImmediate(() => {
      for (const s of streams) guard(() => s.playoutStep(due));
    });
    if (this.streams.size > 0) this.schedule();
    else this.timer = null;
  }
}

export const mediaClock = new MediaClock();

function guard(fn: () => void): void {
  try {
    fn();
  } catch (err) {
    process.emitWarning(`RTP media step failed: ${(err as Error).message}`);
  }
}

/** A latched source silent this long may be replaced by another plausible one (a NAT rebinding). */
const RELATCH_AFTER_MS = 2000;

export interface RtpStreamOptions {
  rtp: dgram.Socket;
  rtcp: dgram.Socket;
  /** Where the SDP says to send, when that is consistent with the signalling; null: wait for the caller's RTP. */
  remote: { address: string; port: number } | null;
  /** Whether packets from this address may be the caller's (the signalling source, configured media networks). */
  plausible(address: string): boolean;
  payloadType: number;
  telephoneEvent: number | null;
  clockRate: number;
  /** RTP timestamp ticks per 20 ms packet. */
  samplesPerPacket: number;
  /** Payload sent when there is nothing to say (keeps NAT bindings and far-end buffers alive). */
  silencePayload: Buffer | null;
  onAudio(payload: Buffer | null, arrivalMs: number): void;
  onDtmf(digit: string): void;
  onInvalid(reason: string): void;
  /** The RTP or RTCP socket reported an error (send to an unreachable port, a closed socket): logged by the call. */
  onSocketError?(socket: 'rtp' | 'rtcp', err: Error): void;
}

/**
 * One RTP session: receives into the jitter buffer and plays it out every 20 ms, and sends queued
 * payloads at exactly one packet per 20 ms with exact sequence numbers and timestamps.
 */
export class RtpStream {
  readonly jitter = new JitterBuffer();
  private readonly dtmf = new DtmfReceiver();
  private remote: { address: string; port: number } | null;
  private remoteRtcp: { address: string; port: number } | null;
  private latched = false;
  private latchedAt = 0;
  /** Nothing is sent before the caller acknowledged our answer (ACK): an INVITE alone never makes us stream. */
  private armed = false;
  private readonly ssrc = randomInt(1, 2 ** 31);
  private seq = randomInt(0, 65536);
  private timestamp = randomInt(0, 2 ** 31);
  private readonly outQueue: Buffer[] = [];
  private talking = false;
  private sending = true;
  private closed = false;
  private sent = { packets: 0, octets: 0 };
  private lastSrAt = 0;
  lastPacketAt = performance.now();

  constructor(private readonly options: RtpStreamOptions) {
    this.remote = options.remote;
    this.remoteRtcp = options.remote ? { address: options.remote.address, port: options.remote.port + 1 } : null;
    options.rtp.on('message', (msg, rinfo) => this.onPacket(msg, rinfo));
    options.rtp.on('error', (err) => (options.onSocketError ? options.onSocketError('rtp', err) : options.onInvalid(`rtp socket: ${err.message}`)));
    options.rtcp.on('message', (_msg, rinfo) => {
      // We do not act on RTCP reports; only learn where to send ours (symmetric RTCP), from the caller's side.
      if (options.plausible(rinfo.address)) this.remoteRtcp = { address: rinfo.address, port: rinfo.port };
    });
    // RTCP is best effort, but its errors are logged, not swallowed (an error event without a listener would throw).
    options.rtcp.on('error', (err) => options.onSocketError?.('rtcp', err));
  }

  start(): void {
    this.lastPacketAt = performance.now();
    mediaClock.add(this);
  }

  /** Queue one packet's payload for sending. */
  enqueue(payload: Buffer): void {
    if (this.closed || !this.sending) return;
    this.outQueue.push(payload);
    // Bound the queue: the session paces in real time, so growth means we are behind.
    if (this.outQueue.length > 50) this.outQueue.shift();
  }

  /** Barge-in: whatever agent audio is queued is dropped at once. */
  flush(): number {
    const n = this.outQueue.length;
    this.outQueue.length = 0;
    return n;
  }

  get queued(): number {
    return this.outQueue.length;
  }

  /** RTP packets sent so far (audio and comfort silence). */
  get packetsSent(): number {
    return this.sent.packets;
  }

  /** Hold (sendonly/inactive answers) stops our media; resuming restarts it with a marker bit. */
  setSending(sending: boolean): void {
    this.sending = sending;
    if (!sending) {
      this.outQueue.length = 0;
      this.talking = false;
    }
  }

  /** A re-INVITE may move the caller's media (the caller checks the address is plausible). */
  setRemote(remote: { address: string; port: number }): void {
    if (remote.address === this.remote?.address && remote.port === this.remote.port) return;
    this.remote = remote;
    this.remoteRtcp = { address: remote.address, port: remote.port + 1 };
    this.latched = false;
  }

  /** The caller's ACK arrived: media may flow to it from now on. */
  arm(): void {
    this.armed = true;
  }

  get remoteAddress(): { address: string; port: number } | null {
    return this.remote;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    mediaClock.delete(this);
    this.options.rtp.close();
    this.options.rtcp.close();
  }

  private onPacket(msg: Buffer, rinfo: dgram.RemoteInfo): void {
    if (this.closed) return;
    let packet: RtpPacket;
    try {
      packet = parseRtp(msg);
    } catch (err) {
      this.options.onInvalid((err as Error).message);
      return;
    }
    const pt = packet.payloadType;
    if (pt !== this.options.payloadType && pt !== this.options.telephoneEvent) {
      // RTCP multiplexed on the RTP port (RFC 5761) lands here as PT 72-76: not audio.
      if (pt < 72 || pt > 76) this.options.onInvalid(`unexpected RTP payload type ${pt}`);
      return;
    }
    if (!this.options.plausible(rinfo.address)) {
      // Anyone can send to our port: only the caller's side may feed the call or steer where it is sent.
      this.options.onInvalid(`RTP from ${rinfo.address}, which the signalling does not make plausible`);
      return;
    }
    const now = performance.now();
    const fromRemote = rinfo.address === this.remote?.address && rinfo.port === this.remote.port;
    if (!fromRemote || !this.latched) {
      // Symmetric RTP: latch once to where the caller's media really comes from (NAT). Once latched, another
      // source is ignored while the latched one is alive; only a silent one may be replaced (NAT rebinding).
      if (this.latched && now - this.latchedAt < RELATCH_AFTER_MS) return;
      this.remote = { address: rinfo.address, port: rinfo.port };
      this.latched = true;
    }
    this.latchedAt = now;
    this.lastPacketAt = now;
    if (pt === this.options.telephoneEvent) {
      this.jitter.skip(packet.seq);
      try {
        for (const digit of this.dtmf.push(packet.timestamp, parseTelephoneEvent(packet.payload))) this.options.onDtmf(digit);
      } catch (err) {
        this.options.onInvalid((err as Error).message);
      }
      return;
    }
    if (packet.payload.length === 0) return;
    this.jitter.push(packet.seq, (packet.timestamp * 1000) / this.options.clockRate, Buffer.from(packet.payload), now);
  }

  /**
   * One 20 ms step (`due` > 1 after an event-loop stall): send, and return the playout to run after I/O.
   * Outbound sends at most a few catch-up packets and skips the timestamps of the rest rather than bursting
   * seconds of audio at the caller.
   */
  step(due: number, now: number): void {
    if (this.closed || !this.armed || !this.remote) return;
    const sends = Math.min(due, 3);
    for (let i = 0; i < sends; i++) this.sendOne();
    if (due > sends) this.timestamp = (this.timestamp + (due - sends) * this.options.samplesPerPacket) >>> 0;
    if (now - this.lastSrAt > 5000 && this.sent.packets > 0) this.sendReport(now);
  }

  /** Inbound half of a step: all missed frames play (late audio is not lost audio). */
  playoutStep(due: number): void {
    if (this.closed) return;
    this.playout(false);
    for (let i = 1; i < Math.min(due, 50); i++) if (!this.playout(true)) break;
  }

  /** Play one frame; with `onlyIfReady`, only when the next packet is already here. Returns whether it played. */
  private playout(onlyIfReady: boolean): boolean {
    if (onlyIfReady && !this.jitter.nextReady) return false;
    const out = this.jitter.pop();
    if (out.kind === 'audio') this.options.onAudio(out.payload, out.arrivalMs);
    else if (out.kind === 'lost') this.options.onAudio(null, performance.now());
    return out.kind !== 'empty';
  }

  private sendOne(): void {
    if (!this.sending) {
      this.timestamp = (this.timestamp + this.options.samplesPerPacket) >>> 0;
      return;
    }
    let payload = this.outQueue.shift();
    let marker = false;
    if (payload) {
      marker = !this.talking;
      this.talking = true;
    } else {
      this.talking = false;
      payload = this.options.silencePayload ?? undefined;
    }
    if (payload) {
      const packet = serializeRtp({ payloadType: this.options.payloadType, marker, seq: this.seq, timestamp: this.timestamp, ssrc: this.ssrc, payload });
      this.seq = (this.seq + 1) & 0xffff;
      this.sent.packets++;
      this.sent.octets += payload.length;
      if (this.remote) this.options.rtp.send(packet, this.remote.port, this.remote.address);
    }
    this.timestamp = (this.timestamp + this.options.samplesPerPacket) >>> 0;
  }

  private sendReport(now: number): void {
    this.lastSrAt = now;
    if (!this.remoteRtcp) return;
    const sr = buildSenderReport(this.ssrc, this.timestamp, this.sent.packets, this.sent.octets);
    this.options.rtcp.send(sr, this.remoteRtcp.port, this.remoteRtcp.address);
  }
}
