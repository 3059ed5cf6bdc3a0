import type { TransportDescription } from '../kit/describe.js';
import { CALL_DOOR } from '../../core/call-door.js';
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { WebSocket, RawData } from 'ws';
import { supportedFormats, validateCodecSpec, CodecSpecError, type CodecSpec } from '../../audio/codec.js';
import type { VoiceService } from '../../service.js';
import { requireCaller } from '../../auth/plugin.js';
import type { Principal } from '../../auth/auth.js';
import { callerFromClaims } from '../../integration/context.js';
import { MessageRateLimiter } from '../../limits/limits.js';
import type { ErrorCode, SessionEvent } from '../../session/events.js';
import { parseClientMessage, ProtocolError, type ClientMessage } from '../client-messages.js';
import type { Session } from '../../session/session.js';
import type { OutboundFrame } from '../../session/output-pacer.js';
import { CallEdge, type AudioSink, type CallWire } from '../kit/call-edge.js';
import { EdgeCodecs } from '../kit/codecs.js';
import { notReadyRefusal, refusalOf, reportRefusal } from '../kit/refusal.js';
import { serveSocket } from '../kit/socket.js';
import { WsOutbound } from '../ws-outbound.js';
import type { Logger } from 'pino';

/**
 * The device WebSocket (`/v1/ws`): JSON control messages + binary audio frames. docs/protocol.md is the
 * contract; this module only translates between it and a Session.
 */

export interface DeviceWsOptions {
  service: VoiceService;
}

const DEFAULT_FORMAT: CodecSpec = { codec: 'pcm16', sampleRate: 16000 };
/** A binary message may carry at most this much audio (longer chunks defeat streaming). */
const MAX_CHUNK_MS = 200;
/** Above this the socket is closed (1009) by ws itself: nothing legitimate is this big. */
const HARD_MAX_PAYLOAD = 1024 * 1024;

function specFromQuery(query: Record<string, string | undefined>, prefix: '' | 'out_'): CodecSpec | undefined {
  const codec = query[`${prefix}codec`];
  const rate = query[`${prefix}rate`];
  if (codec === undefined && rate === undefined) return undefined;
  return validateCodecSpec({ codec: codec ?? 'pcm16', sampleRate: rate === undefined ? (codec === 'pcmu' || codec === 'pcma' ? 8000 : 16000) : Number(rate) });
}

/** Bytes of one message of `ms` audio in `spec` (pcm only; opus is one packet per message). */
function pcmBytesFor(spec: CodecSpec, ms: number): number {
  const bytesPerSample = spec.codec === 'pcm16' ? 2 : 1;
  return Math.round((spec.sampleRate * ms) / 1000) * bytesPerSample;
}

/** One connected device: its wire (JSON control + binary audio) on a call edge. */
class DeviceConnection implements CallWire, AudioSink {
  private readonly edge: CallEdge;
  private readonly codecs: EdgeCodecs;
  private input: CodecSpec;
  private output: CodecSpec;
  private readonly language: string | undefined;
  /** 'text': a text client; the agent's replies are not synthesized. */
  private readonly replies: 'audio' | 'text';
  /** Serialises format changes against audio so frames are never decoded with a half-built codec. */
  private ready: Promise<void> = Promise.resolve();
  private readonly rate: MessageRateLimiter;
  private rateErrorSent = 0;
  private readonly out: WsOutbound;
  /** The client plays what it received; after the socket's buffer drains nothing of ours is left to wait for. */
  readonly tailMs = 0;

  constructor(
    private readonly socket: WebSocket,
    private readonly service: VoiceService,
    log: Logger,
    query: Record<string, string | undefined>,
    private readonly keyId: string,
    /** Who opened the call: the session token's customer id (call record) and claims (caller context for tools). */
    private readonly principal?: Principal,
  ) {
    this.rate = new MessageRateLimiter(service.config.limits.maxMessagesPerSecond);
    this.input = specFromQuery(query, '') ?? DEFAULT_FORMAT;
    this.output = specFromQuery(query, 'out_') ?? this.input;
    // It reaches logs, records and the providers: a BCP-47 tag or nothing.
    if (query.language !== undefined && !(query.language.length <= 35 && /^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/.test(query.language))) {
      throw new Error('"language" must be a BCP-47 tag such as "en" or "fr-FR"');
    }
    this.language = query.language;
    if (query.replies !== undefined && query.replies !== 'audio' && query.replies !== 'text') throw new Error('"replies" must be "audio" or "text"');
    this.replies = query.replies ?? 'audio';
    this.edge = new CallEdge(service, 'ws', this, this, log);
    this.codecs = this.edge.own(new EdgeCodecs());
    this.out = new WsOutbound(socket, {
      transport: 'ws',
      maxBufferedBytes: service.config.limits.maxBufferedBytes,
      metrics: service.metrics,
      log: () => this.edge.log,
      notice: () => this.sendError('slow_consumer', 'client is not reading; agent audio is being dropped'),
    });
  }

  private get session(): Session | null {
    return this.edge.session;
  }

  /** Audio and control messages that arrive while this runs wait for it. */
  start(): Promise<void> {
    this.ready = this.open();
    return this.ready;
  }

  private async open(): Promise<void> {
    await this.codecs.use(this.input, this.output);
    const session = await this.edge.open({
      language: this.language ?? this.principal?.language,
      keyId: this.keyId,
      inputSampleRate: this.input.sampleRate,
      subject: { customerId: this.principal?.customerId },
      caller: callerFromClaims(this.principal),
      replies: this.replies,
    });
    // Null: the device hung up while the call was being admitted.
    if (!session) return;
    this.sendEvent({
      type: 'session.started',
      callId: session.callId,
      language: session.language,
      audio: { input: this.input, output: this.output },
      replies: this.replies,
    });
  }

  onMessage(data: RawData, isBinary: boolean): void {
    if (this.edge.closed) return;
    if (!this.rate.allow()) {
      // A flood: drop, and say so at most once a second rather than flooding back.
      const now = performance.now();
      if (now - this.rateErrorSent > 1000) {
        this.rateErrorSent = now;
        this.sendError('rate_limited', `more than ${this.service.config.limits.maxMessagesPerSecond} messages per second; dropping`);
      }
      return;
    }
    const bytes = toBytes(data);
    if (bytes.length > this.service.config.maxMessageBytes) {
      this.sendError('message_too_large', `message of ${bytes.length} bytes exceeds the limit of ${this.service.config.maxMessageBytes}`);
      return;
    }
    if (isBinary) {
      this.ready = this.ready
        .then(() => this.onAudio(bytes))
        .catch((err: unknown) => this.sendError('internal_error', (err as Error).message));
      return;
    }
    let message: ClientMessage;
    try {
      message = parseClientMessage(Buffer.from(bytes).toString('utf8'));
    } catch (err) {
      if (err instanceof ProtocolError) this.sendError(err.code, err.message);
      else throw err;
      return;
    }
    this.ready = this.ready.then(() => this.onControl(message)).catch((err: unknown) => {
      if (err instanceof CodecSpecError) this.sendError('unsupported_codec', err.message);
      else this.sendError('internal_error', (err as Error).message);
    });
  }

  private onAudio(bytes: Uint8Array): void {
    if (!this.session || !this.codecs.ready || this.edge.closed) return;
    const spec = this.input;
    if (spec.codec !== 'opus') {
      if (bytes.length === 0 || (spec.codec === 'pcm16' && bytes.length % 2 !== 0) || bytes.length > pcmBytesFor(spec, MAX_CHUNK_MS)) {
        this.sendError(
          'invalid_frame_size',
          `binary ${spec.codec} message of ${bytes.length} bytes: expected whole samples, at most ${MAX_CHUNK_MS} ms (${pcmBytesFor(spec, MAX_CHUNK_MS)} bytes at ${spec.sampleRate} Hz)`,
        );
        return;
      }
    }
    let pcm: Int16Array;
    try {
      pcm = this.codecs.decode(bytes);
    } catch (err) {
      this.sendError('invalid_audio', `could not decode ${spec.codec} audio: ${(err as Error).message}`);
      return;
    }
    this.edge.pushPcm(pcm, performance.now());
  }

  private async onControl(message: ClientMessage): Promise<void> {
    switch (message.type) {
      case 'session.update': {
        const input = message.audio?.input !== undefined ? validateCodecSpec(message.audio.input) : this.input;
        const output = message.audio?.output !== undefined ? validateCodecSpec(message.audio.output) : this.output;
        const changed = input.codec !== this.input.codec || input.sampleRate !== this.input.sampleRate || output.codec !== this.output.codec || output.sampleRate !== this.output.sampleRate;
        if (changed) await this.codecs.use(input, output);
        this.input = input;
        this.output = output;
        if (message.language && this.session) this.session.setLanguage(message.language);
        this.sendEvent({ type: 'session.updated', audio: { input, output }, language: this.session?.language ?? message.language ?? '' });
        break;
      }
      case 'input.commit':
        this.session?.commitInput();
        break;
      case 'input.text':
        this.session?.submitText(message.text);
        break;
      case 'input.dtmf':
        this.session?.pushDtmf(message.digit);
        break;
      case 'response.cancel':
        this.session?.cancelResponse();
        break;
      case 'session.end':
        this.socket.close(1000, 'session ended');
        break;
      case 'ping':
        this.sendJson({ type: 'pong', id: message.id });
        break;
    }
  }

  // ——— CallWire: the session's events in the protocol's words (docs/protocol.md) ———

  event(event: SessionEvent): void {
    this.sendEvent(event);
  }

  agentEnded(action: 'hangup' | 'transfer'): void {
    // A device has nowhere to be transferred to: the call.action event told it, and the call stays up.
    if (action === 'hangup' && this.socket.readyState === this.socket.OPEN) this.socket.close(1000, 'agent ended the call');
  }

  // ——— AudioSink: agent audio into the socket ———

  write(frame: OutboundFrame): void {
    // A client that does not read: agent audio is dropped (slow_consumer once per episode), never buffered without bound.
    if (this.codecs.ready && this.out.open) this.out.media(this.codecs.encode(frame.samples), true);
  }

  clear(): void {
    // Nothing is held here beyond the socket's buffer; the client flushes its own on `audio.clear`.
  }

  pending(): number {
    return this.socket.bufferedAmount;
  }

  private sendEvent(event: SessionEvent): void {
    this.sendJson(event);
  }

  private sendError(code: ErrorCode, message: string): void {
    this.service.metrics.error(code);
    this.sendJson({ type: 'error', code, message });
  }

  private sendJson(value: object): void {
    this.out.control(JSON.stringify(value));
  }

  close(): Promise<void> {
    return this.edge.close('hangup');
  }

  /** Refuse the call in the protocol's words: an error event, then the close code that says whether to retry. */
  refuse(err: unknown): void {
    const refusal = refusalOf(err);
    reportRefusal(refusal, err, this.edge.log, this.service.metrics);
    this.sendJson({ type: 'error', code: refusal.code, message: refusal.message });
    this.socket.close(refusal.wsClose, refusal.code);
  }
}

function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

export const deviceWebSocket: FastifyPluginAsync<DeviceWsOptions> = async (app: FastifyInstance, { service }) => {
  app.get('/v1/ws', { websocket: true, config: CALL_DOOR, preValidation: requireCaller(service.auth) }, (socket, request) => {
    const query = request.query as Record<string, string | undefined>;
    const log = request.log;
    if (!service.ready) {
      const refusal = notReadyRefusal(service.state);
      socket.send(JSON.stringify({ type: 'error', code: refusal.code, message: refusal.message }));
      socket.close(refusal.wsClose, refusal.code);
      return;
    }
    let connection: DeviceConnection;
    try {
      connection = new DeviceConnection(socket, service, log as Logger, query, request.principal?.keyId ?? 'anonymous', request.principal);
    } catch (err) {
      const code: ErrorCode = err instanceof CodecSpecError ? 'unsupported_codec' : 'invalid_message';
      socket.send(JSON.stringify({ type: 'error', code, message: (err as Error).message }));
      socket.close(1008, code);
      return;
    }
    serveSocket(socket, connection, log, 'device');
    connection.start().catch((err: unknown) => connection.refuse(err));
  });
};

export { HARD_MAX_PAYLOAD };

/** Devices: JSON control messages and binary audio in any edge format, chosen per call (docs/protocol.md). */
export const describeDeviceWs = (): TransportDescription => ({
  name: 'ws',
  door: 'GET /v1/ws (WebSocket)',
  enabled: true,
  audio: supportedFormats(),
  control: 'JSON messages (docs/protocol.md)',
});
