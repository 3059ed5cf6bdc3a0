/**
 * One answered SIP call's media, as the RTP wire of a call edge: RTP in → jitter buffer → decode →
 * edge (20 ms frames → Session); Session audio → encode → exactly 20 ms payloads → RTP out. Knows nothing of
 * SIP signalling beyond "hang up" and "transfer".
 */
import type { Logger } from 'pino';
import type { CodecSpec } from '../../audio/codec.js';
import { FRAME_SAMPLES } from '../../audio/format.js';
import type { VoiceService } from '../../service.js';
import type { SessionEvent } from '../../session/events.js';
import type { OutboundFrame } from '../../session/output-pacer.js';
import { CallEdge, type AudioSink, type CallWire } from '../kit/call-edge.js';
import { EdgeCodecs } from '../kit/codecs.js';
import { RtpStream } from './rtp/stream.js';
import type { NegotiatedMedia } from './sdp.js';
import type { Handover } from '../../integration/handover.js';
import type dgram from 'node:dgram';

/** G.711 bytes per 20 ms packet at 8 kHz. */
const G711_PACKET = 160;
const SILENCE: Record<'pcmu' | 'pcma', number> = { pcmu: 0xff, pcma: 0xd5 };
/** A phone's jitter buffer after our last packet left. */
const SIP_PLAYOUT_TAIL_MS = 60;

export interface CallMediaOptions {
  /** Our record id for the call (fresh, never the SIP Call-ID). */
  callId: string;
  /** The SIP Call-ID, kept in the call record as the network's id. */
  networkId: string;
  /** Whether media may go to / come from this address (signalling source, sip.mediaNetworks). */
  plausible(address: string): boolean;
  service: VoiceService;
  media: NegotiatedMedia;
  sockets: { rtp: dgram.Socket; rtcp: dgram.Socket };
  keyId: string;
  /** The caller's number (the From URI's user part), kept on the call record. */
  caller?: string;
  /** From, P-Asserted-Identity, Request-URI, X-headers as caller variables (src/integration/context.ts). */
  context?: Readonly<Record<string, string>>;
  /** The call's language when the dialled number fixes it (sip.languageByNumber): not re-detected per turn. */
  language?: string;
  logger: Logger;
  rtpTimeoutMs: number;
  /** The agent (or a dead RTP stream) ends the call: the signalling side sends BYE. */
  onHangup(reason: string): void;
  /** The agent hands the caller to a human (SIP REFER to the queue's target, with the call's context). */
  onTransfer(handover: Handover | null): void;
}

export class CallMedia implements CallWire, AudioSink {
  readonly rtp: RtpStream;
  private readonly edge: CallEdge;
  private readonly codecs: EdgeCodecs;
  readonly tailMs = SIP_PLAYOUT_TAIL_MS;
  /** Encoded G.711 bytes not yet making a whole packet (the resampler's output varies by a sample). */
  private pendingOut: Buffer = Buffer.alloc(0);
  private lastPayload: Buffer | null = null;
  private lostRun = 0;
  private media: NegotiatedMedia;
  private watchdog: NodeJS.Timeout | null = null;
  /** Set as close() begins, before the RTP stream goes (the edge hears of it only after). */
  private closed = false;
  private invalidPackets = 0;
  private socketErrors = 0;
  readonly stats = { dtmf: [] as string[], framesIn: 0, packetsOut: 0, flushes: 0, flushedPackets: 0 };

  constructor(private readonly options: CallMediaOptions) {
    this.media = options.media;
    this.edge = new CallEdge(options.service, 'sip', this, this, options.logger);
    this.codecs = this.edge.own(new EdgeCodecs());
    const g711 = options.media.codec !== 'opus';
    this.rtp = new RtpStream({
      rtp: options.sockets.rtp,
      rtcp: options.sockets.rtcp,
      remote: options.plausible(options.media.remoteAddress) && options.media.remotePort > 0 ? { address: options.media.remoteAddress, port: options.media.remotePort } : null,
      plausible: options.plausible,
      payloadType: options.media.payloadType,
      telephoneEvent: options.media.telephoneEvent,
      clockRate: options.media.clockRate,
      samplesPerPacket: (options.media.clockRate * 20) / 1000,
      silencePayload: g711 ? Buffer.alloc(G711_PACKET, SILENCE[options.media.codec as 'pcmu' | 'pcma']) : null,
      // negotiate() gives CN with G.711 only.
      comfortNoise: options.media.comfortNoise,
      onAudio: (payload, arrivalMs) => this.onAudio(payload, arrivalMs),
      onDtmf: (digit) => {
        this.stats.dtmf.push(digit);
        // Digits may be PINs or card numbers: logged only where transcripts may be.
        if (options.service.config.privacy.logTranscripts) options.logger.info({ digit }, 'DTMF received');
        else options.logger.debug('DTMF digit received');
        this.edge.session?.pushDtmf(digit);
      },
      onSocketError: (socket, err) => {
        // At most a few per call: a socket that keeps failing says so once in a while, not per packet.
        if (++this.socketErrors <= 3 || this.socketErrors % 1000 === 0) options.logger.warn({ err, socket, count: this.socketErrors }, 'RTP socket error');
      },
      onMediaError: (err) => {
        // The stream left the media clock: no more sending or playout, so the call cannot go on (and inbound
        // RTP would keep the timeout watchdog from ever ending it).
        if (this.closed) return;
        options.logger.error({ err }, 'RTP media stream failed: hanging up');
        options.onHangup('media_error');
      },
      onInvalid: (reason) => {
        // Logged sparingly: a flood of junk must not flood the log.
        if (++this.invalidPackets <= 5 || this.invalidPackets % 1000 === 0) options.logger.warn({ reason, count: this.invalidPackets }, 'invalid RTP packet dropped');
      },
    });
  }

  /**
   * Build codecs and open the Session. Throws what admission throws (`refusalOf` maps it to a SIP status)
   * before anything is sent; closed meanwhile (CANCEL, shutdown), nothing is left open.
   */
  async open(): Promise<void> {
    const spec: CodecSpec = this.media.codec === 'opus' ? { codec: 'opus', sampleRate: 48000 } : { codec: this.media.codec, sampleRate: 8000 };
    await this.codecs.use(spec, spec);
    await this.edge.open({
      callId: this.options.callId,
      networkId: this.options.networkId,
      keyId: this.options.keyId,
      recordOwner: this.options.service.networkCallsOwner,
      inputSampleRate: spec.sampleRate,
      subject: { caller: this.options.caller },
      ...(this.options.context ? { caller: this.options.context } : {}),
      ...(this.options.language ? { language: this.options.language } : {}),
    });
  }

  /** A keypad digit signalled out of band (SIP INFO). */
  pushDtmf(digit: string): void {
    this.stats.dtmf.push(digit);
    this.edge.session?.pushDtmf(digit);
  }

  /** The caller's ACK: our media may flow from now on (never on an unacknowledged INVITE). */
  acknowledged(): void {
    this.rtp.arm();
  }

  /** Start the 20 ms media clock and the RTP timeout watchdog (at 200 OK; nothing is sent before the ACK). */
  start(): void {
    this.rtp.start();
    this.applyDirection();
    this.watchdog = setInterval(() => this.checkTimeout(), 1000);
  }

  /** A re-INVITE changed the media (hold / resume / new address). */
  update(media: NegotiatedMedia): void {
    this.media = media;
    // An address the signalling does not vouch for is not a target: the latched source stays.
    if (media.remoteAddress !== '0.0.0.0' && media.remotePort > 0 && this.options.plausible(media.remoteAddress)) this.rtp.setRemote({ address: media.remoteAddress, port: media.remotePort });
    this.applyDirection();
    this.rtp.setComfortNoise(media.comfortNoise);
    this.rtp.lastPacketAt = performance.now();
  }

  get direction(): NegotiatedMedia['direction'] {
    return this.media.direction;
  }

  private applyDirection(): void {
    const sending = this.media.direction === 'sendrecv' || this.media.direction === 'sendonly';
    this.rtp.setSending(sending);
    // On hold the caller sends nothing on purpose: no silence is made up for it.
    this.rtp.setFillGaps(this.media.direction === 'sendrecv' || this.media.direction === 'recvonly');
    if (!sending) this.pendingOut = Buffer.alloc(0);
  }

  private checkTimeout(): void {
    // On hold the caller may legitimately send nothing.
    const expectsMedia = this.media.direction === 'sendrecv' || this.media.direction === 'recvonly';
    if (!expectsMedia || this.closed) return;
    const silentMs = performance.now() - this.rtp.lastPacketAt;
    if (silentMs > this.options.rtpTimeoutMs) {
      this.options.logger.warn({ silentMs: Math.round(silentMs) }, 'RTP timeout: hanging up');
      this.options.onHangup('rtp_timeout');
    }
  }

  private onAudio(payload: Buffer | null, arrivalMs: number): void {
    if (!this.edge.session || !this.codecs.ready) return;
    let pcm: Int16Array;
    try {
      if (payload) {
        this.lostRun = 0;
        this.lastPayload = payload;
        pcm = this.codecs.decode(payload);
      } else if (this.media.codec === 'opus') {
        pcm = new Int16Array(FRAME_SAMPLES);
      } else {
        // Conceal a lost G.711 packet: repeat the last one once, then silence.
        const conceal = ++this.lostRun === 1 && this.lastPayload ? this.lastPayload : Buffer.alloc(G711_PACKET, SILENCE[this.media.codec]);
        pcm = this.codecs.decode(conceal);
      }
    } catch (err) {
      this.options.logger.warn({ err }, 'undecodable RTP payload dropped');
      return;
    }
    this.stats.framesIn += this.edge.pushPcm(pcm, arrivalMs);
  }

  // ——— AudioSink: agent audio into the RTP queue ———

  write(frame: OutboundFrame): void {
    if (!this.codecs.ready || this.closed) return;
    const encoded = this.codecs.encode(frame.samples);
    if (this.media.codec === 'opus') {
      this.rtp.enqueue(Buffer.from(encoded));
      return;
    }
    // Re-frame to exactly 160 bytes: RTP timestamps advance by 160 per packet, so sizes must be exact.
    this.pendingOut = this.pendingOut.length === 0 ? Buffer.from(encoded) : Buffer.concat([this.pendingOut, encoded]);
    while (this.pendingOut.length >= G711_PACKET) {
      this.rtp.enqueue(this.pendingOut.subarray(0, G711_PACKET));
      this.stats.packetsOut++;
      this.pendingOut = this.pendingOut.subarray(G711_PACKET);
    }
  }

  clear(): void {
    const dropped = this.rtp.flush();
    this.pendingOut = Buffer.alloc(0);
    this.stats.flushes++;
    this.stats.flushedPackets += dropped;
    this.options.logger.debug({ dropped }, 'barge-in: queued RTP flushed');
  }

  /** Packets still queued; the edge hangs up once they are out and the phone's jitter buffer (tailMs) played them. */
  pending(): number {
    return this.rtp.queued;
  }

  // ——— CallWire: a phone line says nothing of the session's events but its end ———

  event(event: SessionEvent): void {
    if (event.type === 'error') this.options.logger.warn({ code: event.code, message: event.message }, 'session error');
  }

  agentEnded(action: 'hangup' | 'transfer', handover: Handover | null): void {
    if (action === 'hangup') this.options.onHangup('agent_hangup');
    else this.options.onTransfer(handover);
  }

  async close(reason: string): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.watchdog) clearInterval(this.watchdog);
    // Each step runs whatever the one before it threw: a stream that fails to close must not keep the session.
    try {
      this.rtp.close();
      this.options.logger.info({ reason, rtpIn: this.rtp.jitter.stats, jitterMs: Math.round(this.rtp.jitter.jitter * 10) / 10, rtpOut: this.rtp.packetsSent, dtmfDigits: this.stats.dtmf.length }, 'SIP call media closed');
    } finally {
      // The session (record, slot), then the codecs.
      await this.edge.close(reason);
    }
  }
}
