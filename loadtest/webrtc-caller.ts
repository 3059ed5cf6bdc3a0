import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { StreamingResampler } from '../src/audio/resample.js';
import { wrtc, type AudioSink, type AudioSource, type DataChannel, type PeerConnection } from '../src/transports/webrtc/wrtc.js';
import { parseAgentEvent, UrlCaller, type LoadCaller } from './caller.js';

/**
 * A WebRTC caller (libwebrtc through @roamhq/wrtc, as a browser would be): Opus over SRTP both ways, the
 * agent's events on the "events" data channel. `url` is the offer endpoint, e.g.
 * http://127.0.0.1:8080/v1/webrtc/offer.
 */
export class WebRtcCaller extends UrlCaller implements LoadCaller {
  private pc: PeerConnection | null = null;
  private source: AudioSource | null = null;
  private sink: AudioSink | null = null;
  private channel: DataChannel | null = null;
  private resampler: StreamingResampler | null = null;
  private sinkRate = 0;
  private sessionId: string | null = null;

  async connect(): Promise<void> {
    const { RTCPeerConnection, nonstandard } = wrtc();
    const pc = new RTCPeerConnection({ iceServers: [] });
    this.pc = pc;
    this.source = new nonstandard.RTCAudioSource();
    pc.addTrack(this.source.createTrack());
    const channel = pc.createDataChannel('events');
    this.channel = channel;
    pc.ontrack = ({ track }) => {
      if (track.kind !== 'audio') return;
      this.sink = new nonstandard.RTCAudioSink(track);
      this.sink.ondata = (data) => void this.onSinkData(data.samples, data.sampleRate, data.channelCount);
    };
    const started = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no session.started within 15 s')), 15_000);
      channel.onmessage = ({ data }) => {
        if (typeof data !== 'string') return;
        const event = parseAgentEvent(data);
        if (!event) return;
        if (event.type === 'session.started') {
          clearTimeout(timer);
          resolve();
        }
        this.emitEvent(event);
      };
    });
    // If the offer fails first, `connect` throws that error; this keeps the timer's later rejection from being unhandled.
    started.catch(() => undefined);
    const offer = await pc.createOffer();
    await pc.setLocalDescription(offer);
    // Non-trickle: send the offer with every candidate in it.
    for (let i = 0; i < 100 && pc.iceGatheringState !== 'complete'; i++) await new Promise((r) => setTimeout(r, 20));
    const response = await fetch(this.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', ...this.authorization() },
      body: JSON.stringify({ type: 'offer', sdp: pc.localDescription?.sdp ?? offer.sdp }),
      signal: AbortSignal.timeout(15_000),
    });
    if (!response.ok) throw new Error(`offer refused: HTTP ${response.status} ${await response.text()}`);
    const answer = (await response.json()) as { sdp: string; sessionId: string };
    this.sessionId = answer.sessionId;
    await pc.setRemoteDescription({ type: 'answer', sdp: answer.sdp });
    await started;
  }

  /** libwebrtc decodes to 48 kHz (often stereo): down-mix and bring it to 16 kHz like every caller. */
  private async onSinkData(samples: Int16Array, rate: number, channels: number): Promise<void> {
    const arrival = performance.now();
    const mono = channels === 1 ? samples : new Int16Array(samples.length / channels).map((_, i) => {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += samples[i * channels + c];
      return sum / channels;
    });
    if (!this.resampler || this.sinkRate !== rate) {
      this.sinkRate = rate;
      this.resampler?.destroy();
      this.resampler = null;
      this.resampler = await StreamingResampler.create(rate, INTERNAL_SAMPLE_RATE);
    }
    const pcm = this.resampler.process(mono);
    this.emitAudio(pcm, arrival);
  }

  sendFrame(samples: Int16Array): void {
    if (!this.source) return;
    // libwebrtc takes 10 ms per call.
    const half = samples.length / 2;
    for (const chunk of [samples.slice(0, half), samples.slice(half)]) {
      this.source.onData({ samples: chunk, sampleRate: INTERNAL_SAMPLE_RATE, bitsPerSample: 16, channelCount: 1, numberOfFrames: chunk.length });
    }
  }

  /** Inbound audio RTP as libwebrtc sees it: RFC 3550 jitter and losses. */
  async inboundStats(): Promise<{ jitterMs: number; packetsLost: number; packetsReceived: number } | null> {
    if (!this.pc) return null;
    for (const report of (await this.pc.getStats()).values()) {
      if (report.type === 'inbound-rtp' && report.kind === 'audio') {
        return { jitterMs: Number(report.jitter) * 1000, packetsLost: Number(report.packetsLost ?? 0), packetsReceived: Number(report.packetsReceived ?? 0) };
      }
    }
    return null;
  }

  async close(): Promise<void> {
    if (this.sessionId && this.credential) {
      const base = this.url.replace(/\/v1\/webrtc\/offer.*$/, '');
      await fetch(`${base}/v1/webrtc/sessions/${this.sessionId}`, { method: 'DELETE', headers: { authorization: `Bearer ${this.credential}` } }).catch(() => {});
    }
    this.sink?.stop();
    this.channel?.close();
    this.pc?.close();
    this.resampler?.destroy();
    this.pc = null;
  }
}
