import type { Logger } from 'pino';
import { INTERNAL_SAMPLE_RATE } from '../../audio/format.js';
import { StreamingResampler } from '../../audio/resample.js';
import type { WebRtcConfig } from './options.js';
import type { VoiceService } from '../../service.js';
import type { ErrorCode, SessionEvent } from '../../session/events.js';
import type { OutboundFrame } from '../../session/output-pacer.js';
import { parseClientMessage, ProtocolError, type ClientMessage } from '../client-messages.js';
import { CallEdge, type AudioSink, type CallWire, type Closable } from '../kit/call-edge.js';
import { setOpusParameters } from './offer-policy.js';
import { OutboundStream, webrtcClock } from './outbound-stream.js';
import { wrtc, type AudioSink as RtcAudioSink, type DataChannel, type PeerConnection, type SinkAudioData } from './wrtc.js';

/** Label of the data channel the client opens for JSON events and control messages. */
export const EVENTS_CHANNEL = 'events';
/** A client message on the data channel may be at most this big. */
const MAX_CONTROL_BYTES = 16 * 1024;
/** Events held while the data channel is not open yet; beyond this the oldest partials would pile up. */
const MAX_PENDING_EVENTS = 500;
/** A peer that never connects (an offer posted by a script, a blocked network) is dropped after this long. */
const CONNECT_TIMEOUT_MS = 20_000;
/** The browser's jitter buffer and decoder after our outbound queue is empty. */
const WEBRTC_PLAYOUT_TAIL_MS = 200;

/** Something wrong with the client's offer: answered with HTTP 400. */
export class OfferError extends Error {
  constructor(
    readonly code: 'invalid_sdp' | 'no_audio',
    message: string,
  ) {
    super(message);
    this.name = 'OfferError';
  }
}

/**
 * Keep only host candidates on the allowed addresses (server-reflexive and relay candidates stay), and make
 * the c= and a=rtcp lines name a kept candidate: libwebrtc writes its default interface there, which would
 * show the host's internal address even when candidates are restricted.
 */
export function filterHostCandidates(sdp: string, allowed: readonly string[]): string {
  if (allowed.length === 0) return sdp;
  const lines = sdp.split('\r\n');
  const kept = lines.filter((line) => {
    if (!line.startsWith('a=candidate:')) return true;
    const parts = line.split(' ');
    const typIndex = parts.indexOf('typ');
    if (typIndex < 0 || parts[typIndex + 1] !== 'host') return true;
    return allowed.includes(parts[4]);
  });
  const firstCandidate = kept.find((l) => l.startsWith('a=candidate:'))?.split(' ')[4];
  const shown = firstCandidate ?? '0.0.0.0';
  const family = shown.includes(':') ? 'IP6' : 'IP4';
  return kept
    .map((line) => {
      const c = /^c=IN IP[46] (\S+)$/.exec(line);
      if (c && c[1] !== shown) return `c=IN ${family} ${shown}`;
      const rtcp = /^(a=rtcp:\d+) IN IP[46] (\S+)$/.exec(line);
      if (rtcp && rtcp[2] !== shown) return `${rtcp[1]} IN ${family} ${shown}`;
      return line;
    })
    .join('\r\n');
}

export interface PeerHooks {
  /** The RTCPeerConnection was created / closed (for the peer gauge). */
  peerCreated(): void;
  peerClosed(): void;
  /** The call ended, for whatever reason; the registry forgets it. */
  ended(peer: WebRtcPeer): void;
}

/**
 * libwebrtc's decoded caller audio (its decoder's rate, which may change mid-call) → 16 kHz. A new rate's
 * resampler is built off the audio path; its audio is dropped meanwhile. Owned by the call's edge.
 */
class InboundResampler implements Closable {
  private current: StreamingResampler | null = null;
  private building = false;
  private closed = false;

  constructor(private readonly log: Logger) {}

  /** `pcm` at `rate` as 16 kHz PCM, or null while the resampler for a new rate is being built. */
  process(pcm: Int16Array, rate: number): Int16Array | null {
    const resampler = this.resamplerFor(rate);
    return resampler ? resampler.process(pcm) : null;
  }

  private resamplerFor(rate: number): StreamingResampler | null {
    if (this.closed) return null;
    if (this.current?.fromRate === rate) return this.current;
    if (rate === INTERNAL_SAMPLE_RATE) {
      this.current?.destroy();
      this.current = new StreamingResampler(rate, INTERNAL_SAMPLE_RATE);
      return this.current;
    }
    if (!this.building) {
      this.building = true;
      StreamingResampler.create(rate, INTERNAL_SAMPLE_RATE).then(
        (created) => {
          this.building = false;
          if (this.closed) {
            created.destroy();
            return;
          }
          this.current?.destroy();
          this.current = created;
        },
        (err: unknown) => {
          this.building = false;
          this.log.error({ err, rate }, 'could not create the inbound resampler');
        },
      );
    }
    return null;
  }

  close(): void {
    this.closed = true;
    this.current?.destroy();
    this.current = null;
  }
}

/**
 * One browser call: an RTCPeerConnection whose audio goes through libwebrtc's jitter buffer and Opus
 * decoder into the session, agent audio back through an audio source, and the device protocol's JSON on
 * the "events" data channel. The peer is the call edge's wire (`CallWire`) and its sink (`AudioSink`).
 */
export class WebRtcPeer implements CallWire, AudioSink {
  private pc: PeerConnection | null = null;
  private sink: RtcAudioSink | null = null;
  private outbound: OutboundStream | null = null;
  private channel: DataChannel | null = null;
  private readonly pendingEvents: string[] = [];
  private readonly edge: CallEdge;
  private readonly resampler: InboundResampler;
  /** The outbound queue empty, the browser's jitter buffer and decoder still play this much. */
  readonly tailMs = WEBRTC_PLAYOUT_TAIL_MS;
  private graceTimer: NodeJS.Timeout | null = null;
  private connectTimer: NodeJS.Timeout | null = null;
  private watchdog: NodeJS.Timeout | null = null;
  private closing: Promise<void> | null = null;
  private connected = false;
  private lastState = '';

  constructor(
    readonly id: string,
    private readonly service: VoiceService,
    private readonly config: WebRtcConfig,
    private readonly log: Logger,
    private readonly hooks: PeerHooks,
    private readonly language: string | undefined,
    /** The API key the call counts against (its own, or the one that minted the caller's token). */
    private readonly keyId: string,
    /** Caller context (the session token's claims): src/integration/context.ts. */
    private readonly caller?: Readonly<Record<string, string>>,
  ) {
    this.edge = new CallEdge(service, 'webrtc', this, this, log);
    this.resampler = this.edge.own(new InboundResampler(log));
  }

  get state(): string {
    return this.pc?.connectionState ?? 'closed';
  }

  /**
   * Answer the browser's offer (ICE gathered, no trickle) and start the call. On any failure everything is
   * released before the error is thrown.
   */
  async answer(offerSdp: string): Promise<string> {
    try {
      return await this.negotiate(offerSdp);
    } catch (err) {
      await this.close('negotiation failed');
      throw err;
    }
  }

  private async negotiate(offerSdp: string): Promise<string> {
    const { RTCPeerConnection, nonstandard } = wrtc();
    const pc = new RTCPeerConnection({ iceServers: this.config.iceServers, ...(this.config.portRange ? { portRange: this.config.portRange } : {}) });
    this.pc = pc;
    this.hooks.peerCreated();
    pc.ondatachannel = ({ channel }) => this.attachChannel(channel);
    pc.ontrack = ({ track }) => {
      if (track.kind !== 'audio' || this.sink) return;
      this.sink = new nonstandard.RTCAudioSink(track);
      this.sink.ondata = (data) => this.onAudio(data);
    };
    pc.onconnectionstatechange = () => this.onConnectionState();
    pc.oniceconnectionstatechange = () => this.onConnectionState();
    // libwebrtc does not always fire the state events when a peer vanishes: look at the states too.
    this.watchdog = setInterval(() => this.onConnectionState(), 1000);
    this.watchdog.unref();

    try {
      await pc.setRemoteDescription({ type: 'offer', sdp: offerSdp });
    } catch (err) {
      throw new OfferError('invalid_sdp', `the SDP offer could not be used: ${(err as Error).message}`);
    }
    const transceiver = pc.getTransceivers().find((t) => t.receiver.track.kind === 'audio');
    if (!transceiver) throw new OfferError('no_audio', 'the SDP offer has no audio section: add the microphone track (or an audio transceiver) before creating the offer');
    const source = new nonstandard.RTCAudioSource();
    await transceiver.sender.replaceTrack(source.createTrack());
    transceiver.direction = 'sendrecv';
    this.outbound = new OutboundStream(source, (err) => {
      if (!this.closing) this.log.warn({ err }, 'outbound audio stream failed: the caller hears nothing more from the agent');
    });

    const answer = await pc.createAnswer();
    await pc.setLocalDescription(answer);
    await this.gathered(pc);
    const local = pc.localDescription;
    if (!local) throw new Error('no local description after ICE gathering');
    // The browser sizes its frames by the answer's a=ptime (libwebrtc's answer carries none), and uses DTX if it says usedtx.
    const sdp = setOpusParameters(filterHostCandidates(local.sdp, this.config.candidateAddresses), { frameMs: this.config.opusFrameMs, dtx: this.config.opusDtx });
    if (!sdp.includes('a=candidate:')) throw new Error('no ICE candidate on the configured addresses (webrtc.candidateAddresses / iceServers)');

    const session = await this.edge.open({ callId: this.id, language: this.language ?? this.caller?.language, keyId: this.keyId, inputSampleRate: 48_000, ...(this.caller ? { caller: this.caller } : {}) });
    // Closed (DELETE, timeout) while the call was being admitted: the edge has ended the session again.
    if (!session) throw new Error('the session was closed while the call was being admitted');
    this.sendJson({
      type: 'session.started',
      callId: this.id,
      language: session.language,
      audio: { input: { codec: 'opus', sampleRate: 48000 }, output: { codec: 'opus', sampleRate: 48000 } },
    });
    webrtcClock.add(this.outbound);
    this.connectTimer = setTimeout(() => {
      if (!this.connected) void this.close(`not connected within ${CONNECT_TIMEOUT_MS} ms`);
    }, CONNECT_TIMEOUT_MS);
    this.connectTimer.unref();
    return sdp;
  }

  private gathered(pc: PeerConnection): Promise<void> {
    if (pc.iceGatheringState === 'complete') return Promise.resolve();
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ timeoutMs: this.config.iceGatheringTimeoutMs }, 'ICE gathering not complete in time: answering with the candidates found so far');
        resolve();
      }, this.config.iceGatheringTimeoutMs);
      pc.onicegatheringstatechange = () => {
        if (pc.iceGatheringState !== 'complete') return;
        clearTimeout(timer);
        resolve();
      };
    });
  }

  private onConnectionState(): void {
    const pc = this.pc;
    if (!pc || this.closing) return;
    const ice = pc.iceConnectionState;
    // Either view of the transport saying it is gone counts.
    const state: string = ice === 'disconnected' || ice === 'failed' || ice === 'closed' ? ice : pc.connectionState;
    if (state === this.lastState) return;
    this.lastState = state;
    this.log.debug({ state }, 'peer connection state');
    if (state === 'connected') {
      if (!this.connected) this.log.info('peer connected');
      this.connected = true;
      if (this.graceTimer) {
        clearTimeout(this.graceTimer);
        this.graceTimer = null;
        this.log.info('peer reconnected');
      }
    } else if (state === 'disconnected') {
      // ICE may recover (a Wi-Fi hiccup); a closed tab never does.
      this.graceTimer ??= setTimeout(() => void this.close('peer vanished (ICE disconnected)'), this.config.disconnectGraceMs);
    } else if (state === 'failed' || state === 'closed') {
      void this.close(`peer connection ${state}`);
    }
  }

  private attachChannel(channel: DataChannel): void {
    if (channel.label !== EVENTS_CHANNEL || this.channel) {
      this.log.warn({ label: channel.label }, 'ignoring unexpected data channel');
      return;
    }
    this.channel = channel;
    channel.onopen = () => {
      for (const text of this.pendingEvents.splice(0)) channel.send(text);
    };
    channel.onmessage = ({ data }) => this.onControl(data);
    // The page hung up or went away: no need to wait for ICE to notice.
    channel.onclose = () => void this.close('events channel closed by the client');
    channel.onerror = (event) => this.log.debug({ event: String(event) }, 'events channel error');
    if (channel.readyState === 'open') channel.onopen();
  }

  private onControl(data: string | ArrayBuffer): void {
    if (typeof data !== 'string') {
      this.sendError('invalid_message', 'the events channel carries JSON text; audio goes on the media track');
      return;
    }
    if (data.length > MAX_CONTROL_BYTES) {
      this.sendError('message_too_large', `message of ${data.length} characters exceeds the limit of ${MAX_CONTROL_BYTES}`);
      return;
    }
    let message: ClientMessage;
    try {
      message = parseClientMessage(data);
    } catch (err) {
      if (err instanceof ProtocolError) this.sendError(err.code, err.message);
      else this.log.error({ err }, 'control message handling failed');
      return;
    }
    const session = this.edge.session;
    switch (message.type) {
      case 'input.commit':
        session?.commitInput();
        break;
      case 'input.text':
        session?.submitText(message.text);
        break;
      case 'input.dtmf':
        session?.pushDtmf(message.digit);
        break;
      case 'response.cancel':
        session?.cancelResponse();
        break;
      case 'session.end':
        void this.close('client ended the session');
        break;
      case 'ping':
        this.sendJson({ type: 'pong', id: message.id });
        break;
      case 'session.update':
        // The codec is negotiated in SDP; only the language may change here.
        if (message.audio) this.sendError('invalid_message', 'audio formats are negotiated in SDP on WebRTC; only "language" can be updated');
        else if (message.language && session) session.setLanguage(message.language);
        break;
    }
  }

  /** Decoded caller audio, 10 ms at a time → 16 kHz mono → the edge (exact 20 ms frames → session). */
  private onAudio(data: SinkAudioData): void {
    if (!this.edge.session || this.closing) return;
    if (data.bitsPerSample !== 16 || data.channelCount < 1) return;
    let mono = data.samples;
    if (data.channelCount > 1) {
      mono = new Int16Array(data.numberOfFrames);
      for (let i = 0; i < data.numberOfFrames; i++) {
        let sum = 0;
        for (let c = 0; c < data.channelCount; c++) sum += data.samples[i * data.channelCount + c];
        mono[i] = Math.round(sum / data.channelCount);
      }
    }
    const pcm = this.resampler.process(mono, data.sampleRate);
    if (pcm) this.edge.pushPcm(pcm, performance.now());
  }

  // ——— CallWire: the session's events as JSON on the events channel (docs/protocol.md) ———

  event(event: SessionEvent): void {
    this.sendJson(event);
  }

  agentEnded(action: 'hangup' | 'transfer'): void {
    // A browser has nowhere to be transferred to: the call.action event told it, and the call stays up.
    if (action === 'hangup') void this.close('agent ended the call');
  }

  // ——— AudioSink: agent audio into the outbound stream, 10 ms per tick of the WebRTC clock ———

  write(frame: OutboundFrame): void {
    this.outbound?.push(frame.samples);
  }

  /** Barge-in: agent audio still waiting for its 10 ms slot must not play. */
  clear(): void {
    this.outbound?.clear();
  }

  pending(): number {
    return this.outbound?.queuedMs ?? 0;
  }

  private sendError(code: ErrorCode, message: string): void {
    this.service.metrics.error(code);
    this.sendJson({ type: 'error', code, message });
  }

  private sendJson(value: object): void {
    const text = JSON.stringify(value);
    const channel = this.channel;
    if (channel && channel.readyState === 'open') {
      try {
        channel.send(text);
      } catch (err) {
        this.log.debug({ err }, 'events channel send failed');
      }
      return;
    }
    if (this.closing) return;
    this.pendingEvents.push(text);
    if (this.pendingEvents.length > MAX_PENDING_EVENTS) this.pendingEvents.shift();
  }

  /** Hang up: release the session, the media objects and the peer connection. Idempotent. */
  close(reason: string): Promise<void> {
    this.closing ??= this.shutdown(reason);
    return this.closing;
  }

  private async shutdown(reason: string): Promise<void> {
    this.log.info({ reason }, 'webrtc call ending');
    if (this.graceTimer) clearTimeout(this.graceTimer);
    if (this.connectTimer) clearTimeout(this.connectTimer);
    if (this.watchdog) clearInterval(this.watchdog);
    if (this.outbound) webrtcClock.delete(this.outbound);
    this.sink?.stop();
    this.sink = null;
    const channel = this.channel;
    if (channel) {
      channel.onclose = null;
      channel.onmessage = null;
      try {
        channel.close();
      } catch {
        /* already closed */
      }
    }
    const pc = this.pc;
    this.pc = null;
    if (pc) {
      pc.onconnectionstatechange = null;
      pc.oniceconnectionstatechange = null;
      pc.ontrack = null;
      pc.ondatachannel = null;
      pc.onicegatheringstatechange = null;
      pc.close();
      this.hooks.peerClosed();
    }
    try {
      // The session (record, slot), then the resampler.
      await this.edge.close('hangup');
    } finally {
      this.hooks.ended(this);
    }
  }
}
