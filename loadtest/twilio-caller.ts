import { randomBytes } from 'node:crypto';
import WebSocket from 'ws';
import { decodeMulaw, encodeMulaw } from '../src/audio/g711.js';
import { StreamingResampler } from '../src/audio/resample.js';
import { computeTwilioSignature } from '../src/transports/telephony/twilio-signature.js';
import { CallerListeners, closeWebSocket, type AgentEvent, type LoadCaller } from './caller.js';

/**
 * Plays Twilio's side of a bidirectional Media Stream (`<Connect><Stream>`) against `/v1/telephony/twilio`:
 * µ-law 8 kHz caller audio in Twilio's JSON messages, and a playout clock for the agent's audio, so marks
 * are echoed when the audio before them has played and `clear` drops what is still buffered — as Twilio does.
 *
 * The protocol carries no agent events, so this caller derives the few the load test needs from the
 * service's marks (docs/telephony.md): `N:done` echoed → `response.done`, `N:bye` → `call.action`, and a
 * `clear` → `audio.clear`.
 */
export interface TwilioCallerOptions {
  /** Credential sent as `?token=` (Twilio cannot send headers on the stream). */
  credential?: string;
  /** Sign the upgrade with X-Twilio-Signature using this auth token. */
  authToken?: string;
  /** `<Parameter>` values of the TwiML, delivered in start.customParameters. */
  parameters?: Record<string, string>;
}

const sid = (prefix: string) => prefix + randomBytes(16).toString('hex');

export class TwilioCaller extends CallerListeners implements LoadCaller {
  readonly streamSid = sid('MZ');
  readonly callSid = sid('CA');
  /** Every message the service sent, parsed, with its arrival time. */
  readonly received: { atMs: number; message: Record<string, unknown> }[] = [];
  /** Marks echoed back to the service, in order. */
  readonly echoedMarks: string[] = [];
  closeInfo: { code: number; reason: string } | null = null;

  private socket: WebSocket | null = null;
  private up: StreamingResampler | null = null;
  private down: StreamingResampler | null = null;
  private pendingMulaw = new Uint8Array(0);
  private seq = 0;
  private chunk = 0;
  private startedAt = 0;
  /** When the audio already received will have finished playing (performance.now clock). */
  private playheadMs = 0;
  private readonly markTimers = new Map<NodeJS.Timeout, string>();

  constructor(
    private readonly url: string,
    private readonly options: TwilioCallerOptions = {},
  ) {
    super();
  }

  /**
   * What a Twilio webhook puts in the stream URL: a session token minted per call with the API key (the
   * service refuses API keys in URLs). A credential that already is a token is used as it is.
   */
  private async sessionToken(streamUrl: URL, credential: string): Promise<string> {
    if (credential.split('.').length === 3) return credential;
    const base = `${streamUrl.protocol === 'wss:' ? 'https' : 'http'}://${streamUrl.host}`;
    const res = await fetch(`${base}/v1/tokens`, { method: 'POST', headers: { authorization: `Bearer ${credential}`, 'content-type': 'application/json' }, body: '{}' });
    if (!res.ok) throw new Error(`could not mint a session token: HTTP ${res.status}`);
    return ((await res.json()) as { token: string }).token;
  }

  async connect(): Promise<void> {
    [this.down, this.up] = await Promise.all([StreamingResampler.create(16000, 8000), StreamingResampler.create(8000, 16000)]);
    const url = new URL(this.url);
    if (this.options.credential && !url.searchParams.has('token')) url.searchParams.set('token', await this.sessionToken(url, this.options.credential));
    const headers: Record<string, string> = {};
    if (this.options.authToken) headers['x-twilio-signature'] = computeTwilioSignature(this.options.authToken, url.toString());
    const socket = new WebSocket(url, { headers });
    this.socket = socket;
    socket.on('message', (data, isBinary) => this.onMessage(data as Buffer, isBinary));
    socket.on('close', (code, reason) => {
      this.closeInfo = { code, reason: reason.toString() };
      for (const timer of this.markTimers.keys()) clearTimeout(timer);
      this.markTimers.clear();
      this.emit({ type: 'closed', code, reason: reason.toString() });
    });
    await new Promise<void>((resolve, reject) => {
      socket.once('open', () => resolve());
      socket.once('error', reject);
      socket.once('unexpected-response', (_request, response) => reject(new Error(`connection refused: HTTP ${response.statusCode}`)));
    });
    this.startedAt = performance.now();
    this.sendJson({ event: 'connected', protocol: 'Call', version: '1.0.0' });
    this.sendJson({
      event: 'start',
      sequenceNumber: String(++this.seq),
      streamSid: this.streamSid,
      start: {
        accountSid: 'AC' + '0'.repeat(32),
        streamSid: this.streamSid,
        callSid: this.callSid,
        tracks: ['inbound'],
        customParameters: this.options.parameters ?? {},
        mediaFormat: { encoding: 'audio/x-mulaw', sampleRate: 8000, channels: 1 },
      },
    });
  }

  /** 20 ms of 16 kHz caller audio → µ-law 8 kHz, sent in exact 160-byte chunks as Twilio does. */
  sendFrame(samples: Int16Array): void {
    if (!this.down) return;
    const mulaw = encodeMulaw(this.down.process(samples));
    const joined = new Uint8Array(this.pendingMulaw.length + mulaw.length);
    joined.set(this.pendingMulaw);
    joined.set(mulaw, this.pendingMulaw.length);
    let offset = 0;
    for (; joined.length - offset >= 160; offset += 160) this.sendMulaw(joined.subarray(offset, offset + 160));
    this.pendingMulaw = joined.slice(offset);
  }

  /** One µ-law chunk as a Twilio media message. */
  sendMulaw(payload: Uint8Array): void {
    this.chunk++;
    this.sendJson({
      event: 'media',
      sequenceNumber: String(++this.seq),
      streamSid: this.streamSid,
      media: { track: 'inbound', chunk: String(this.chunk), timestamp: String(Math.round(performance.now() - this.startedAt)), payload: Buffer.from(payload).toString('base64') },
    });
  }

  sendDtmf(digit: string): void {
    this.sendJson({ event: 'dtmf', sequenceNumber: String(++this.seq), streamSid: this.streamSid, dtmf: { track: 'inbound_track', digit } });
  }

  /** Twilio's stop: the caller hung up. */
  stop(): void {
    this.sendJson({ event: 'stop', sequenceNumber: String(++this.seq), streamSid: this.streamSid, stop: { accountSid: 'AC' + '0'.repeat(32), callSid: this.callSid } });
  }

  /** Anything, as is (for malformed-input tests). */
  sendRaw(data: string | Buffer): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(data);
  }

  async close(): Promise<void> {
    this.up?.destroy();
    this.down?.destroy();
    this.up = this.down = null;
    await closeWebSocket(this.socket, () => this.stop());
  }

  private onMessage(data: Buffer, isBinary: boolean): void {
    const arrival = performance.now();
    if (isBinary) return;
    let message: Record<string, unknown>;
    try {
      message = JSON.parse(data.toString('utf8')) as Record<string, unknown>;
    } catch {
      return;
    }
    this.received.push({ atMs: arrival, message });
    switch (message.event) {
      case 'media': {
        const payload = (message.media as { payload?: string } | undefined)?.payload ?? '';
        const mulaw = new Uint8Array(Buffer.from(payload, 'base64'));
        // Twilio plays what it receives in order, in real time.
        this.playheadMs = Math.max(this.playheadMs, arrival) + (mulaw.length / 8000) * 1000;
        const pcm = this.up ? this.up.process(decodeMulaw(mulaw)) : new Int16Array(0);
        this.emitAudio(pcm, arrival);
        break;
      }
      case 'mark': {
        const name = String((message.mark as { name?: unknown } | undefined)?.name ?? '');
        const timer = setTimeout(() => {
          this.markTimers.delete(timer);
          this.echoMark(name);
        }, Math.max(0, this.playheadMs - arrival));
        this.markTimers.set(timer, name);
        break;
      }
      case 'clear': {
        // Buffered audio is dropped; Twilio returns the marks still waiting at once.
        this.playheadMs = arrival;
        const waiting = [...this.markTimers.entries()];
        this.markTimers.clear();
        for (const [timer, name] of waiting) {
          clearTimeout(timer);
          this.echoMark(name, false);
        }
        this.emit({ type: 'audio.clear' });
        break;
      }
    }
  }

  private echoMark(name: string, played = true): void {
    this.echoedMarks.push(name);
    this.sendJson({ event: 'mark', sequenceNumber: String(++this.seq), streamSid: this.streamSid, mark: { name } });
    if (!played) return;
    if (name.endsWith(':done')) this.emit({ type: 'response.done', status: 'completed', text: '' });
    if (name.endsWith(':bye')) this.emit({ type: 'call.action', action: 'hangup' });
  }

  private emit(event: AgentEvent): void {
    this.emitEvent(event);
  }

  private sendJson(value: object): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(value));
  }
}
