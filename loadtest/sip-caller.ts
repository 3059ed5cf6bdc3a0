import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import { createInboundDecoder, createOutboundEncoder, type InboundDecoder, type OutboundEncoder } from '../src/audio/codec.js';
import { rmsDbfs } from '../src/audio/format.js';
import { CallerListeners, type AgentEvent, type LoadCaller } from './caller.js';

/**
 * A SIP phone for the load test (`--transport sip --url sip:agent@127.0.0.1:5060`): INVITE over UDP with a
 * PCMU offer, ACK, RTP both ways (20 ms, 160 bytes), BYE on close.
 *
 * SIP carries no agent events, so this caller derives the ones the load test needs from the audio: the agent's
 * first audible packet after silence starts a reply, and 700 ms of silence after it is `response.done`; a BYE
 * from the service is `call.action: hangup`.
 */
const SILENCE_DONE_MS = 700;

export class SipCaller extends CallerListeners implements LoadCaller {
  private readonly sip = dgram.createSocket('udp4');
  private readonly rtp = dgram.createSocket('udp4');
  private readonly callId = `load-${randomBytes(8).toString('hex')}`;
  private readonly tag = randomBytes(4).toString('hex');
  private readonly ssrc = randomBytes(4).readUInt32BE(0);
  private readonly host: string;
  private readonly port: number;
  private readonly uri: string;
  private toHeader = '';
  private remote: { address: string; port: number } | null = null;
  private encoder: OutboundEncoder | null = null;
  private decoder: InboundDecoder | null = null;
  private pending = Buffer.alloc(0);
  private seq = Math.floor(Math.random() * 65536);
  private ts = Math.floor(Math.random() * 2 ** 31);
  private cseq = 1;
  private answered: ((text: string) => void) | null = null;
  private speaking = false;
  private lastSoundMs = 0;
  private silenceTimer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(url: string) {
    super();
    // sip:agent@HOST:PORT, or sip://HOST:PORT (the form the load-test CLI's URL check understands).
    const m = /^sip:(?:\/\/)?(?:[^@/]+@)?([^:;/]+)(?::(\d+))?/.exec(url);
    if (!m) throw new Error(`--url must be a SIP URI such as sip://127.0.0.1:5060, got ${url}`);
    this.host = m[1];
    this.port = m[2] ? Number(m[2]) : 5060;
    this.uri = `sip:agent@${this.host}:${this.port}`;
  }

  async connect(): Promise<void> {
    this.encoder = await createOutboundEncoder({ codec: 'pcmu', sampleRate: 8000 });
    this.decoder = await createInboundDecoder({ codec: 'pcmu', sampleRate: 8000 });
    await new Promise<void>((r) => this.sip.bind(0, () => r()));
    await new Promise<void>((r) => this.rtp.bind(0, () => r()));
    this.sip.on('message', (m) => this.onSip(m.toString('utf8')));
    this.rtp.on('message', (m) => this.onRtp(m));
    const sdp = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${this.rtp.address().port} RTP/AVP 0 101`, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', 'a=ptime:20', ''].join('\r\n');
    const ok = new Promise<string>((resolve, reject) => {
      this.answered = resolve;
      setTimeout(() => reject(new Error('no 200 OK to the INVITE within 15 s')), 15_000).unref();
    });
    this.send('INVITE', sdp);
    const response = await ok;
    this.toHeader = /^To: (.*)$/m.exec(response)?.[1].trim() ?? '';
    const port = Number(/^m=audio (\d+)/m.exec(response)?.[1]);
    const address = /^c=IN IP4 (\S+)/m.exec(response)?.[1];
    if (!address || !port) throw new Error('200 OK without a usable SDP answer');
    this.remote = { address, port };
    this.send('ACK');
    this.emit({ type: 'session.started', callId: this.callId });
  }

  sendFrame(samples: Int16Array): void {
    if (!this.encoder || !this.remote || this.closed) return;
    const bytes = this.encoder.encode(samples);
    this.pending = Buffer.concat([this.pending, bytes]);
    while (this.pending.length >= 160) {
      const packet = Buffer.alloc(172);
      packet[0] = 0x80;
      packet[1] = 0;
      packet.writeUInt16BE(this.seq, 2);
      packet.writeUInt32BE(this.ts >>> 0, 4);
      packet.writeUInt32BE(this.ssrc, 8);
      this.pending.copy(packet, 12, 0, 160);
      this.pending = this.pending.subarray(160);
      this.seq = (this.seq + 1) & 0xffff;
      this.ts = (this.ts + 160) >>> 0;
      this.rtp.send(packet, this.remote.port, this.remote.address);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    if (this.remote) this.send('BYE');
    this.closed = true;
    if (this.silenceTimer) clearTimeout(this.silenceTimer);
    await new Promise((r) => setTimeout(r, 50));
    this.sip.close();
    this.rtp.close();
    this.encoder?.close();
    this.decoder?.close();
  }

  private send(method: string, body = ''): void {
    const cseq = method === 'ACK' ? 1 : this.cseq++;
    const lines = [
      `${method} ${this.uri} SIP/2.0`,
      `Via: SIP/2.0/UDP 127.0.0.1:${this.sip.address().port};branch=z9hG4bK${randomBytes(8).toString('hex')};rport`,
      'Max-Forwards: 70',
      `From: <sip:loadtest@127.0.0.1>;tag=${this.tag}`,
      `To: ${this.toHeader || `<${this.uri}>`}`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${cseq} ${method}`,
      `Contact: <sip:loadtest@127.0.0.1:${this.sip.address().port}>`,
      ...(body ? ['Content-Type: application/sdp'] : []),
      `Content-Length: ${Buffer.byteLength(body)}`,
      '',
      body,
    ];
    this.sip.send(Buffer.from(lines.join('\r\n')), this.port, this.host);
  }

  private onSip(text: string): void {
    const status = Number(/^SIP\/2\.0 (\d{3})/.exec(text)?.[1] ?? 0);
    const method = /^CSeq: \d+ (\w+)/m.exec(text)?.[1];
    if (method === 'INVITE' && status === 200) {
      // Retransmitted 200s need an ACK each.
      if (this.answered) this.answered(text);
      else this.send('ACK');
      this.answered = null;
    } else if (method === 'INVITE' && status >= 300) {
      this.emit({ type: 'error', code: 'sip_refused', message: text.split('\r\n')[0] });
    } else if (text.startsWith('BYE ')) {
      const reply = ['SIP/2.0 200 OK', ...text.split('\r\n').filter((l) => /^(Via|From|To|Call-ID|CSeq):/i.test(l)), 'Content-Length: 0', '', ''].join('\r\n');
      this.sip.send(Buffer.from(reply), this.port, this.host);
      this.emit({ type: 'call.action', action: 'hangup' });
    }
  }

  private onRtp(packet: Buffer): void {
    if (!this.decoder || packet.length <= 12 || (packet[1] & 0x7f) !== 0) return;
    const now = performance.now();
    const pcm = this.decoder.decode(packet.subarray(12));
    this.emitAudio(pcm, now);
    if (rmsDbfs(pcm) > -45) {
      this.lastSoundMs = now;
      if (!this.speaking) {
        this.speaking = true;
        this.emit({ type: 'response.audio.started' });
      }
      if (this.silenceTimer) clearTimeout(this.silenceTimer);
      this.silenceTimer = setTimeout(() => {
        this.speaking = false;
        this.emit({ type: 'response.done', status: 'completed', text: '' });
      }, SILENCE_DONE_MS);
    }
  }

  private emit(event: AgentEvent): void {
    this.emitEvent(event);
  }
}
