/**
 * RTP (RFC 3550) for one call leg: packet codec, an adaptive jitter buffer for what comes in, RFC 4733
 * telephone-events, and a 20 ms send clock for what goes out. Symmetric within limits: we answer to where the
 * caller's packets come from (NAT), but only from an address the signalling makes plausible, latched once.
 */
import type dgram from 'node:dgram';
import { randomInt } from 'node:crypto';
import { parseRtp, serializeRtp, type RtpPacket } from './packet.js';
import { DtmfReceiver, parseTelephoneEvent } from './dtmf.js';
import { JitterBuffer } from './jitter-buffer.js';
import { buildSenderReport } from './rtcp.js';
import { MediaClock, type MediaClockMember } from '../../media-clock.js';
import { closeSockets } from './port-pool.js';

/** Every RTP stream of the process sends and plays out on this one clock, one 20 ms packet per tick. */
export const rtpClock = new MediaClock(20);

/** A latched source silent this long may be replaced by another plausible one (a NAT rebinding). */
const RELATCH_AFTER_MS = 2000;
/**
 * With comfort noise, a CN packet goes out at the start of each silence and every 50 packet times (1 s) of it:
 * NAT bindings and carriers' RTP timeouts see a live stream at 1 packet a second instead of 50.
 */
const CN_REFRESH_PACKETS = 50;
/** RFC 3389 noise level, -dBov: the agent's silence is digital silence. */
const CN_SILENCE_LEVEL = Buffer.from([127]);

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
  /**
   * Comfort noise's payload type (RFC 3389) when negotiated: silence is then a CN packet at its start and one a
   * second (no silencePayload packets), and the caller's CN plays as silencePayload until their audio resumes.
   */
  comfortNoise?: number | null;
  onAudio(payload: Buffer | null, arrivalMs: number): void;
  onDtmf(digit: string): void;
  onInvalid(reason: string): void;
  /** The RTP or RTCP socket reported an error (send to an unreachable port, a closed socket): logged by the call. */
  onSocketError?(socket: 'rtp' | 'rtcp', err: Error): void;
  /** A step of the stream threw: it has left the media clock (no more sending or playout); logged by the call. */
  onMediaError(err: unknown): void;
}

/**
 * One RTP session: receives into the jitter buffer and plays it out every 20 ms, and sends queued
 * payloads at exactly one packet per 20 ms with exact sequence numbers and timestamps.
 */
export class RtpStream implements MediaClockMember {
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
  /** Comfort noise's payload type, when negotiated. */
  private comfortNoise: number | null;
  /** Packet times since our last CN packet in the current silence; null: none sent in it yet. */
  private silentSinceCn: number | null = null;
  /** The caller sent CN and no audio since: their silence plays as silence, not as a lost stream. */
  private callerInComfortNoise = false;
  /** The caller is expected to send (not on hold) and has sent audio: a stream that stops plays as silence. */
  private fillGaps = true;
  private heardAudio = false;
  private sending = true;
  private closed = false;
  private sent = { packets: 0, octets: 0 };
  private lastSrAt = 0;
  lastPacketAt = performance.now();

  constructor(private readonly options: RtpStreamOptions) {
    this.comfortNoise = options.comfortNoise ?? null;
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
    rtpClock.add(this);
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
    // A resumed stream's first silence says so at once (a CN packet), not at the old silence's next refresh.
    this.silentSinceCn = null;
    if (!sending) {
      this.outQueue.length = 0;
      this.talking = false;
    }
  }

  /**
   * Whether the caller is expected to send audio now (not on hold): while it is, a stream that stops (silence
   * suppression without CN, a dropout) plays on as silence, so a turn in progress still ends.
   */
  setFillGaps(fill: boolean): void {
    this.fillGaps = fill;
  }

  /** A re-INVITE may offer comfort noise or stop offering it. */
  setComfortNoise(payloadType: number | null): void {
    this.comfortNoise = payloadType;
    this.silentSinceCn = null;
    if (payloadType === null) this.callerInComfortNoise = false;
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
    rtpClock.delete(this);
    // The port pool may have closed the pair first (a call released on an error path).
    closeSockets([this.options.rtp, this.options.rtcp]);
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
    if (pt !== this.options.payloadType && pt !== this.options.telephoneEvent && pt !== this.comfortNoise) {
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
    if (pt === this.comfortNoise) {
      // The caller's silence (RFC 3389): its sequence number is no loss, and silence plays until audio resumes.
      this.jitter.skip(packet.seq);
      this.callerInComfortNoise = true;
      return;
    }
    if (packet.payload.length === 0) return;
    this.callerInComfortNoise = false;
    this.heardAudio = true;
    this.jitter.push(packet.seq, (packet.timestamp * 1000) / this.options.clockRate, Buffer.from(packet.payload), now);
  }

  /**
   * One 20 ms tick (`due` > 1 after an event-loop stall): send; the playout runs after I/O (afterIo).
   * Outbound sends at most a few catch-up packets and skips the timestamps of the rest rather than bursting
   * seconds of audio at the caller.
   */
  tick(due: number, now: number): void {
    if (this.closed || !this.armed || !this.remote) return;
    const sends = Math.min(due, 3);
    for (let i = 0; i < sends; i++) this.sendOne();
    if (due > sends) this.timestamp = (this.timestamp + (due - sends) * this.options.samplesPerPacket) >>> 0;
    if (now - this.lastSrAt > 5000 && this.sent.packets > 0) this.sendReport(now);
  }

  /** Inbound half of a tick: all missed frames play (late audio is not lost audio). */
  afterIo(due: number): void {
    if (this.closed) return;
    this.playout(false);
    for (let i = 1; i < Math.min(due, 50); i++) if (!this.playout(true)) break;
  }

  onError(err: unknown): void {
    this.options.onMediaError(err);
  }

  /** Play one frame; with `onlyIfReady`, only when the next packet is already here. Returns whether it played. */
  private playout(onlyIfReady: boolean): boolean {
    if (onlyIfReady && !this.jitter.nextReady) return false;
    const out = this.jitter.pop();
    if (out.kind === 'audio') this.options.onAudio(out.payload, out.arrivalMs);
    else if (!onlyIfReady && (this.callerInComfortNoise || (out.kind === 'empty' && this.fillGaps && this.heardAudio))) {
      // The caller suppresses its silence (CN, Opus DTX), or its stream stopped (past the jitter buffer's
      // concealment): the call still hears 20 ms of silence per tick, since endpointing counts on it (a null payload
      // is silence for Opus). The RTP timeout still applies.
      this.options.onAudio(this.options.silencePayload, performance.now());
      return true;
    } else if (out.kind === 'lost') this.options.onAudio(null, performance.now());
    return out.kind !== 'empty';
  }

  private sendOne(): void {
    if (!this.sending) {
      this.timestamp = (this.timestamp + this.options.samplesPerPacket) >>> 0;
      return;
    }
    let payload = this.outQueue.shift();
    let payloadType = this.options.payloadType;
    let marker = false;
    if (payload) {
      // The first packet of a talkspurt carries the marker bit (RFC 3551 §4.1), after CN too.
      marker = !this.talking;
      this.talking = true;
      this.silentSinceCn = null;
    } else {
      this.talking = false;
      if (this.comfortNoise === null) payload = this.options.silencePayload ?? undefined;
      else if (this.silentSinceCn === null || ++this.silentSinceCn >= CN_REFRESH_PACKETS) {
        payload = CN_SILENCE_LEVEL;
        payloadType = this.comfortNoise;
        this.silentSinceCn = 0;
      }
    }
    if (payload) {
      const packet = serializeRtp({ payloadType, marker, seq: this.seq, timestamp: this.timestamp, ssrc: this.ssrc, payload });
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
