import { CALL_DOOR } from '../../core/call-door.js';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { callerFromParameters } from '../../integration/context.js';
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import type { CodecSpec } from '../../audio/codec.js';
import { FRAME_MS, FRAME_SAMPLES } from '../../audio/format.js';
import { AuthError } from '../../auth/auth.js';
import type { VoiceService } from '../../service.js';
import type { SessionEvent } from '../../session/events.js';
import type { OutboundFrame } from '../../session/output-pacer.js';
import type { Session } from '../../session/session.js';
import { PayloadFramer, ReorderBuffer } from './reorder.js';
import { TelnyxSerializer } from './telnyx.js';
import { TwilioSerializer } from './twilio.js';
import { verifyTwilioSignature } from './twilio-signature.js';
import { CallOutcomes, connectActionRoutes } from './connect-action.js';
import { bytesFor, type InboundEvent, type MediaStreamSerializer, type TelephonyProvider, type WireMessage } from './types.js';
import { VonageSerializer } from './vonage.js';
import { CallEdge, type AudioSink, type CallWire } from '../kit/call-edge.js';
import { EdgeCodecs } from '../kit/codecs.js';
import { notReadyRefusal, refusalOf, reportRefusal, type CallRefusal } from '../kit/refusal.js';
import { serveSocket } from '../kit/socket.js';
import { WsOutbound } from '../ws-outbound.js';

/**
 * Phone calls through providers' media-stream WebSockets: `/v1/telephony/{twilio,telnyx,vonage}`. One
 * connection class is the wire on a call edge (src/transports/kit): reordering and concealment of caller
 * audio, exact 20 ms payloads out, marks that prove what the caller really heard (and that the goodbye
 * played), barge-in `clear`; a small serializer per provider speaks its wire format.
 * docs/telephony.md is the operator's guide.
 */

export interface TelephonyOptions {
  service: VoiceService;
}

/** A mark after this many agent frames inside one segment, so "what was heard" is known to within ~0.5 s. */
const MARK_EVERY_FRAMES = 25;
/** This many malformed messages in a row means the peer is not speaking the protocol: close. */
const MAX_CONSECUTIVE_INVALID = 50;
/** At most this much lost audio is filled with silence for one gap. */
const MAX_CONCEALED_FRAMES = 10;

const SILENCE_BYTE: Record<CodecSpec['codec'], number> = { pcmu: 0xff, pcma: 0xd5, pcm16: 0, opus: 0 };

function createSerializer(provider: TelephonyProvider): MediaStreamSerializer {
  switch (provider) {
    case 'twilio':
      return new TwilioSerializer();
    case 'telnyx':
      return new TelnyxSerializer();
    case 'vonage':
      return new VonageSerializer();
  }
}

interface PendingMark {
  responseId: string | null;
  /** Frames of that reply sent before the mark. */
  framesThrough: number;
  kind: 'seg' | 'tick' | 'done' | 'bye';
}

/** Playout accounting for the reply whose audio is on the wire. */
interface ReplyPlayout {
  responseId: string;
  segment: number;
  framesSent: number;
  framesSinceMark: number;
  firstSentAt: number;
  /** Frames the provider confirmed played (last echoed mark), and when. */
  confirmed: number;
  confirmedAt: number | null;
}

function toBytes(data: RawData): Uint8Array {
  if (Array.isArray(data)) return Buffer.concat(data);
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  return data;
}

const LANGUAGE = /^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/;
const CALL_ID = /^[A-Za-z0-9._:-]{1,128}$/;

/** Closes a stream that is refused: the providers' protocols have no error message, the close reason is all they log. */
function closeWithRefusal(socket: WebSocket, refusal: CallRefusal): void {
  if (socket.readyState === socket.OPEN || socket.readyState === socket.CONNECTING) socket.close(refusal.wsClose, refusal.code);
}

class MediaStreamConnection implements CallWire, AudioSink {
  private readonly edge: CallEdge;
  private readonly codecs: EdgeCodecs;
  private readonly reorder: ReorderBuffer<Uint8Array>;
  private payloads: PayloadFramer | null = null;
  private silenceByte = 0;
  /** Serialises start (async codec setup) against the media and events that follow it. */
  private ready: Promise<void> = Promise.resolve();
  private started = false;
  private startTimer: NodeJS.Timeout | null;
  /** Resolves the edge's wait for the goodbye's mark echo (or its timeout). */
  private byeEchoed: (() => void) | null = null;
  private providerCallId: string | undefined;
  private markCounter = 0;
  private readonly pendingMarks = new Map<string, PendingMark>();
  private playout: ReplyPlayout | null = null;
  private consecutiveInvalid = 0;
  private invalidTotal = 0;
  private ignoredTotal = 0;
  private readonly out: WsOutbound;
  /** The marks prove playout (waitForPlayout); nothing is left to wait for after them. */
  readonly tailMs = 0;

  constructor(
    private readonly socket: WebSocket,
    private readonly service: VoiceService,
    private readonly serializer: MediaStreamSerializer,
    log: Logger,
    private readonly options: { language?: string; keyId: string; networkCall?: boolean; outcomes?: CallOutcomes },
  ) {
    this.edge = new CallEdge(service, serializer.provider, this, this, log.child({ provider: serializer.provider }));
    this.codecs = this.edge.own(new EdgeCodecs());
    this.reorder = new ReorderBuffer(service.config.telephony.reorderDepth);
    // The providers' protocols have no error message to send back: a slow reader is logged and counted only.
    this.out = new WsOutbound(socket, { transport: serializer.provider, maxBufferedBytes: service.config.limits.maxBufferedBytes, metrics: service.metrics, log: () => this.log });
    this.startTimer = setTimeout(() => {
      this.log.warn({ startTimeoutMs: service.config.telephony.startTimeoutMs }, 'no start message: closing the stream');
      this.closeSocket(1008, 'no start message');
    }, service.config.telephony.startTimeoutMs);
  }

  private get session(): Session | null {
    return this.edge.session;
  }

  private get log(): Logger {
    return this.edge.log;
  }

  onMessage(data: RawData, isBinary: boolean): void {
    if (this.edge.closed) return;
    const bytes = toBytes(data);
    const limit = this.service.config.maxMessageBytes;
    if (bytes.length > limit) {
      this.invalid(`message of ${bytes.length} bytes exceeds the limit of ${limit}`);
      return;
    }
    for (const event of this.serializer.parseInbound(bytes, isBinary)) this.handle(event);
  }

  private handle(event: InboundEvent): void {
    if (event.kind === 'invalid') {
      this.invalid(event.reason);
      return;
    }
    this.consecutiveInvalid = 0;
    switch (event.kind) {
      case 'connected':
      case 'cleared':
        this.log.debug({ event: event.kind }, 'provider event');
        break;
      case 'start':
        if (this.started) break;
        this.started = true;
        if (this.startTimer) clearTimeout(this.startTimer);
        this.startTimer = null;
        this.ready = this.ready.then(() => this.open(event)).catch((err: unknown) => this.refuse(err));
        break;
      case 'media': {
        if (!this.started) {
          this.ignored('media before start');
          break;
        }
        const arrival = performance.now();
        this.ready = this.ready.then(() => this.onMedia(event.payload, event.seq, arrival)).catch((err: unknown) => this.log.warn({ err }, 'media chunk dropped'));
        break;
      }
      case 'dtmf':
        this.ready = this.ready.then(() => {
          // Digits may be PINs or card numbers: logged only where transcripts may be.
          if (this.service.config.privacy.logTranscripts) this.log.info({ digit: event.digit }, 'DTMF received');
          else this.log.debug('DTMF digit received');
          this.session?.pushDtmf(event.digit);
        });
        break;
      case 'mark':
        this.onMarkEcho(event.name);
        break;
      case 'stop':
        this.log.info('provider stopped the stream');
        this.closeSocket(1000, 'stream stopped');
        break;
      case 'ignored':
        this.ignored(event.reason);
        break;
      case 'provider_error':
        this.log.warn({ reason: event.reason }, 'provider reported an error');
        break;
      case 'fatal':
        this.log.warn({ reason: event.reason }, 'closing the stream');
        this.closeSocket(1003, event.reason.slice(0, 120));
        break;
    }
  }

  private invalid(reason: string): void {
    this.invalidTotal++;
    this.consecutiveInvalid++;
    this.service.metrics.error('invalid_message');
    // The first few in full, then a sample: a broken peer must not flood the log.
    if (this.invalidTotal <= 5 || this.invalidTotal % 100 === 0) this.log.warn({ reason, total: this.invalidTotal }, 'malformed message ignored');
    if (this.consecutiveInvalid >= MAX_CONSECUTIVE_INVALID) {
      this.log.warn({ consecutive: this.consecutiveInvalid }, 'too many malformed messages: closing the stream');
      this.closeSocket(1007, 'too many malformed messages');
    }
  }

  private ignored(reason: string): void {
    this.ignoredTotal++;
    if (this.ignoredTotal <= 5 || this.ignoredTotal % 500 === 0) this.log.debug({ reason, total: this.ignoredTotal }, 'message ignored');
  }

  private async open(start: Extract<InboundEvent, { kind: 'start' }>): Promise<void> {
    const output = this.serializer.outputFormat() ?? start.format;
    await this.codecs.use(start.format, output);
    this.payloads = new PayloadFramer(bytesFor(output, FRAME_MS));
    this.silenceByte = SILENCE_BYTE[output.codec];
    const requested = this.options.language ?? start.parameters.language;
    const language = requested && LANGUAGE.test(requested) ? requested : undefined;
    // The provider's call id is recorded beside ours (logs and records line up with the provider's console),
    // never as ours: a reused or forged CallSid must not reach another call's record.
    const networkId = CALL_ID.test(start.providerCallId) ? start.providerCallId : undefined;
    this.providerCallId = networkId;
    const session = await this.edge.open({
      language,
      networkId,
      keyId: this.options.keyId,
      inputSampleRate: start.format.sampleRate,
      ...(this.options.networkCall ? { recordOwner: this.service.networkCallsOwner } : {}),
      // The caller's number when the operator passes it as a stream parameter (docs/compliance.md).
      subject: { caller: callerParameter(start.parameters) },
      caller: callerFromParameters(start.parameters),
    });
    // Null: the stream ended while the call was being admitted.
    if (!session) return;
    this.log.info({ streamId: start.streamId, providerCallId: start.providerCallId, input: start.format, output, language: session.language }, 'media stream started');
  }

  /** Refuse the call in the refusal table's words: the close code and the refusal's code as the reason. */
  private refuse(err: unknown): void {
    const refusal = refusalOf(err);
    reportRefusal(refusal, err, this.log, this.service.metrics);
    closeWithRefusal(this.socket, refusal);
  }

  private onMedia(payload: Uint8Array, seq: number | undefined, arrival: number): void {
    if (!this.session || !this.codecs.ready) return;
    if (seq === undefined) {
      this.edge.pushPcm(this.codecs.decode(payload), arrival);
      return;
    }
    const out = this.reorder.push(seq, payload);
    if (out.dropped) this.log.debug({ seq }, 'late or duplicate media chunk dropped');
    for (const { item, missingBefore } of out.ready) {
      // Conceal lost chunks with silence so the VAD's clock (and endpointing) keeps real time.
      if (missingBefore > 0) this.edge.pushPcm(new Int16Array(Math.min(missingBefore, MAX_CONCEALED_FRAMES) * FRAME_SAMPLES), arrival);
      this.edge.pushPcm(this.codecs.decode(item), arrival);
    }
  }

  // ——— AudioSink: agent audio as exact 20 ms payloads, with marks ———

  write(frame: OutboundFrame): void {
    if (!this.codecs.ready || !this.payloads || this.edge.closed) return;
    let playout = this.playout;
    if (!playout || playout.responseId !== frame.responseId) {
      this.flushPayload();
      playout = this.playout = { responseId: frame.responseId, segment: frame.segment, framesSent: 0, framesSinceMark: 0, firstSentAt: performance.now(), confirmed: 0, confirmedAt: null };
    } else if (frame.segment !== playout.segment) {
      // The end of an utterance segment: its mark echo says the caller heard it whole.
      this.sendMark('seg');
      playout.segment = frame.segment;
    }
    let dropped = false;
    for (const payload of this.payloads.push(this.codecs.encode(frame.samples))) dropped = !this.sendMedia(payload) || dropped;
    // A frame dropped for a peer that is not reading was never heard: marks and playedFrames must not count it.
    if (dropped) return;
    playout.framesSent++;
    if (++playout.framesSinceMark >= MARK_EVERY_FRAMES) this.sendMark('tick');
  }

  /** The partial payload left at the end of a reply goes out padded with silence. */
  private flushPayload(): void {
    const rest = this.payloads?.flush(this.silenceByte);
    if (rest) this.sendMedia(rest);
  }

  private sendMedia(payload: Uint8Array): boolean {
    const message = this.serializer.media(payload);
    return this.out.media(message.data, message.binary);
  }

  private sendMark(kind: PendingMark['kind']): void {
    const name = `${++this.markCounter}:${kind}`;
    const playout = this.playout;
    this.pendingMarks.set(name, { responseId: playout?.responseId ?? null, framesThrough: playout?.framesSent ?? 0, kind });
    if (playout) playout.framesSinceMark = 0;
    this.send(this.serializer.mark(name));
  }

  private onMarkEcho(name: string): void {
    const mark = this.pendingMarks.get(name);
    if (!mark) {
      // Marks echoed after a clear (or unknown names): they say nothing about what was played.
      this.log.debug({ name }, 'mark echo ignored');
      return;
    }
    // Echoes come in order: every mark sent before this one has played too.
    for (const key of this.pendingMarks.keys()) {
      this.pendingMarks.delete(key);
      if (key === name) break;
    }
    const playout = this.playout;
    if (playout && mark.responseId === playout.responseId && mark.framesThrough >= playout.confirmed) {
      playout.confirmed = mark.framesThrough;
      playout.confirmedAt = performance.now();
    }
    if (mark.kind === 'bye') this.byeEchoed?.();
  }

  /**
   * Frames of the reply the caller has heard: what the last echoed mark confirmed, plus the time since then
   * (audio after a mark starts playing when the mark is reached), never more than was sent.
   */
  playedFrames(responseId: string): number | undefined {
    const playout = this.playout;
    if (!playout || playout.responseId !== responseId) return undefined;
    const since = playout.confirmedAt ?? playout.firstSentAt;
    const estimate = playout.confirmed + Math.floor((performance.now() - since) / FRAME_MS);
    return Math.min(playout.framesSent, estimate);
  }

  /** Barge-in: the provider drops what it still buffers; marks still out describe audio never played. */
  clear(): void {
    this.payloads?.clear();
    this.pendingMarks.clear();
    this.send(this.serializer.clear());
    this.log.debug('clear sent');
  }

  pending(): number {
    return this.socket.bufferedAmount;
  }

  /**
   * The goodbye has played when the provider echoes a mark sent after it. The edge asks once the session's
   * pacer has sent it all, so only the provider's own buffer is left; a provider that never echoes is hung up
   * on after `maxMs` anyway.
   */
  waitForPlayout(maxMs: number): Promise<void> {
    this.flushPayload();
    return new Promise<void>((resolve) => {
      const done = () => {
        clearTimeout(timer);
        this.byeEchoed = null;
        resolve();
      };
      const timer = setTimeout(done, maxMs);
      this.byeEchoed?.();
      this.byeEchoed = done;
      this.sendMark('bye');
    });
  }

  // ——— CallWire ———

  event(event: SessionEvent): void {
    switch (event.type) {
      case 'response.done':
        if (event.status === 'completed' && this.playout?.responseId === event.responseId) {
          this.flushPayload();
          this.sendMark('done');
        }
        break;
      case 'call.action':
        this.log.info({ action: event.action }, 'agent ends the stream after its last words play');
        // Twilio's <Connect action> request comes once the stream has ended: the decision must be there first.
        if (this.providerCallId) this.options.outcomes?.record(this.providerCallId, event.action === 'transfer' ? (this.session?.handover ?? null) : null);
        break;
      case 'error':
        this.log.warn({ code: event.code, message: event.message }, 'session error');
        break;
      case 'transcript.final':
        this.log.debug({ turn: event.turn, text: event.text }, 'caller turn');
        break;
      default:
        break;
    }
  }

  agentEnded(action: 'hangup' | 'transfer'): void {
    this.closeSocket(1000, action === 'hangup' ? 'agent ended the call' : 'agent transferred the call');
  }

  /** Marks and clears: never dropped (playout accounting, barge-in and the hang-up wait on them). */
  private send(message: WireMessage): void {
    this.out.control(message.data, message.binary);
  }

  private closeSocket(code: number, reason: string): void {
    if (this.socket.readyState === this.socket.OPEN || this.socket.readyState === this.socket.CONNECTING) this.socket.close(code, reason);
  }

  close(): Promise<void> {
    if (!this.edge.closed) {
      if (this.startTimer) clearTimeout(this.startTimer);
      this.byeEchoed?.();
      if (this.session) this.log.info({ invalidMessages: this.invalidTotal, lostChunks: this.reorder.lost, lateChunks: this.reorder.late, droppedAudioFrames: this.out.dropped }, 'media stream ended');
    }
    return this.edge.close('hangup');
  }
}

/** The URLs a provider may have requested, as seen from outside any proxy. */
function publicUrls(request: FastifyRequest, publicUrl: string | undefined): string[] {
  const path = request.url;
  if (publicUrl) return [publicUrl.replace(/\/+$/, '') + path];
  const first = (value: string | string[] | undefined) => (Array.isArray(value) ? value[0] : value)?.split(',')[0]?.trim();
  const host = first(request.headers['x-forwarded-host']) ?? request.headers.host ?? '';
  const proto = first(request.headers['x-forwarded-proto']) ?? request.protocol;
  const secure = proto === 'https' || proto === 'wss';
  // Twilio signs the wss:// URL it connected to; its https:// spelling is accepted too (same secret either way).
  return secure ? [`wss://${host}${path}`, `https://${host}${path}`] : [`ws://${host}${path}`, `http://${host}${path}`];
}

/**
 * Who may open a phone stream: with `telephony.twilio.authToken` set, Twilio's signature is checked first (a
 * valid one admits the stream: Twilio vouches for it, and Twilio cannot send custom headers). Otherwise an
 * API key or session token, as `Authorization: Bearer`, `?token=`, or Telnyx's `x-telnyx-streaming-auth-token`.
 */
function telephonyAuth(service: VoiceService, provider: TelephonyProvider) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const { telephony } = service.config;
    const query = request.query as Record<string, string | undefined> | undefined;
    if (provider === 'twilio' && telephony.twilio.authToken) {
      const header = request.headers['x-twilio-signature'];
      const signature = Array.isArray(header) ? header[0] : header;
      if (!verifyTwilioSignature(telephony.twilio.authToken, signature, publicUrls(request, telephony.publicUrl))) {
        request.log.warn({ url: request.url.split('?')[0], ip: request.ip, signed: Boolean(signature) }, 'twilio stream refused: bad signature');
        await reply.code(403).send({ error: 'invalid_signature', message: 'X-Twilio-Signature does not match this URL and the configured auth token' });
        return;
      }
      if (!request.headers.authorization && !query?.token) {
        request.principal = { kind: 'anonymous', keyId: 'twilio' };
        return;
      }
    }
    // Telnyx's stream auth token travels in a header, not the URL: it may be an API key or a session token.
    const telnyxToken = request.headers['x-telnyx-streaming-auth-token'];
    const authorization = request.headers.authorization ?? (!query?.token && typeof telnyxToken === 'string' ? `Bearer ${telnyxToken}` : undefined);
    try {
      request.principal = await service.auth.authenticate({ authorization, token: query?.token });
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      request.log.warn({ code: err.code, url: request.url.split('?')[0], ip: request.ip }, 'request refused');
      await reply.code(err.statusCode).send({ error: err.code, message: err.message });
    }
  };
}

export const telephonyWebSockets: FastifyPluginAsync<TelephonyOptions> = async (app: FastifyInstance, { service }) => {
  const outcomes = new CallOutcomes();
  connectActionRoutes(app, service, outcomes, (request) => publicUrls(request, service.config.telephony.publicUrl));
  for (const provider of ['twilio', 'telnyx', 'vonage'] as const) {
    app.get(`/v1/telephony/${provider}`, { websocket: true, config: CALL_DOOR, preValidation: telephonyAuth(service, provider) }, (socket, request) => {
      const log = request.log as Logger;
      if (!service.ready) {
        closeWithRefusal(socket, notReadyRefusal(service.state));
        return;
      }
      const query = request.query as Record<string, string | undefined>;
      const connection = new MediaStreamConnection(socket, service, createSerializer(provider), log, {
        language: query.language,
        keyId: request.principal?.keyId ?? 'anonymous',
        // Admitted by the provider's signature, not a key: the record belongs to the configured owner.
        networkCall: request.principal?.kind === 'anonymous' && service.auth.required,
        // The agent's decision waits for Twilio's <Connect action> request, keyed by the stream's CallSid:
        // with an auth token set only a Twilio-signed stream may leave one (no key holder can pose as a call).
        outcomes: provider === 'twilio' && (!service.config.telephony.twilio.authToken || request.principal?.keyId === 'twilio') ? outcomes : undefined,
      });
      serveSocket(socket, connection, log, 'telephony');
    });
  }
};

/** A caller number the operator passed as a custom parameter (`from`, `caller`): digits, '+', spaces and dashes only. */
function callerParameter(parameters: Record<string, string>): string | undefined {
  const value = parameters.from ?? parameters.caller;
  return value !== undefined && /^\+?[0-9 ()-]{3,32}$/.test(value) ? value : undefined;
}
