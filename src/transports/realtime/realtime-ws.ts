import { CALL_DOOR } from '../../core/call-door.js';
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import type { Logger } from 'pino';
import type { RawData, WebSocket } from 'ws';
import type {
  ConversationItem,
  RealtimeResponse,
  RealtimeServerEvent,
  RealtimeSessionCreateRequest,
} from 'openai/resources/realtime/realtime';
import { FRAME_MS, FRAME_SAMPLES } from '../../audio/format.js';
import { requireCaller } from '../../auth/plugin.js';
import type { ToolCall } from '../../providers/llm/types.js';
import type { SessionEvent } from '../../session/events.js';
import type { OutboundFrame } from '../../session/output-pacer.js';
import type { Session } from '../../session/session.js';
import type { VoiceService } from '../../service.js';
import { callerFromClaims } from '../../integration/context.js';
import { ClientToolExecutor } from './client-tools.js';
import { BoundedSet } from '../../core/bounded.js';
import { CallEdge, type AudioSink, type CallWire } from '../kit/call-edge.js';
import { EdgeCodecs } from '../kit/codecs.js';
import { notReadyRefusal, refusalOf, reportRefusal, type CallRefusal } from '../kit/refusal.js';
import { serveSocket } from '../kit/socket.js';
import { WsOutbound } from '../ws-outbound.js';
import {
  betaFormatName,
  codecFor,
  eventIdOf,
  parseClientEvent,
  RealtimeProtocolError,
  type AudioFormat,
  type ClientEvent,
  type ClientTool,
  type ItemInput,
  type SessionPatch,
  type TurnDetection,
} from './protocol.js';

/**
 * `/v1/realtime`: the OpenAI Realtime WebSocket protocol on top of a Session, so existing Realtime clients
 * (the official `openai` package's OpenAIRealtimeWS, the Agents SDK, …) talk to this service with only their
 * base URL and key changed. docs/realtime.md lists what is supported and how it maps.
 */

export interface RealtimeWsOptions {
  service: VoiceService;
  /** How long the agent waits for a client tool's output before going on without it. */
  toolTimeoutMs?: number;
}

const DEFAULT_TOOL_TIMEOUT_MS = 30_000;
/** After the socket buffer drained: the margin the client has to play its last delta before the hang-up. */
const REALTIME_PLAYOUT_TAIL_MS = 100;
/**
 * Conversation items a call indexes for retrieve/truncate/delete/previous_item_id. Older ones are forgotten
 * (item_not_found), so a long call's index does not grow without end; the agent's context has its own window
 * (`agent.contextWindow`).
 */
export const MAX_REALTIME_ITEMS = 500;
/** Caller audio queued beyond what the pipeline takes (a client uploading faster than real time), in frames. */
const MAX_QUEUED_FRAMES = (60 * 1000) / FRAME_MS;
const MAX_QUEUED_SAMPLES = MAX_QUEUED_FRAMES * FRAME_SAMPLES;
/** Audio faster than real time is fed to the session at up to this many times real time. */
const MAX_SPEEDUP = 10;
/** Burst of frames accepted at once before pacing starts (the session's inbound backlog holds 50). */
const BURST_FRAMES = 25;

type ServerEvent = RealtimeServerEvent;
/** Events without their event_id, which send() stamps. */
type Outgoing = ServerEvent extends infer E ? (E extends { event_id: string } ? Omit<E, 'event_id'> : E) : never;

/** Decoded caller audio (internal rate) waiting for the pump, with the time it arrived. */
interface QueuedPcm {
  pcm: Int16Array;
  arrivalMs: number;
}

interface SessionState {
  instructions: string;
  voice: string;
  speed: number;
  inputFormat: AudioFormat;
  outputFormat: AudioFormat;
  turnDetection: TurnDetection | null;
  tools: ClientTool[];
  toolChoice: string;
  outputModalities: ('audio' | 'text')[];
  language: string | undefined;
}

/** One assistant message of a realtime response: the text and audio of the agent's speech. */
interface MessagePart {
  itemId: string;
  outputIndex: number;
  transcript: string;
}

/** A realtime response: maps one stretch of a session reply (a reply spans two around a client tool call). */
interface RtResponse {
  id: string;
  /** The session reply it shows. */
  replyId: string;
  output: ConversationItem[];
  message: MessagePart | null;
  audioMs: number;
}

function newId(prefix: string): string {
  return `${prefix}_${randomBytes(11).toString('base64url')}`;
}

/** Browsers cannot set headers: the openai browser client sends its key as a subprotocol. */
function keyFromSubprotocol(request: FastifyRequest): string | undefined {
  const header = request.headers['sec-websocket-protocol'];
  if (typeof header !== 'string') return undefined;
  const prefix = 'openai-insecure-api-key.';
  return header
    .split(',')
    .map((p) => p.trim())
    .find((p) => p.startsWith(prefix))
    ?.slice(prefix.length);
}

/** Refuse a realtime socket in the protocol's words: one error event, then the close. */
function closeWithError(socket: WebSocket, code: string, message: string, closeCode: number, type: 'invalid_request_error' | 'server_error'): void {
  if (socket.readyState !== socket.OPEN) return;
  socket.send(JSON.stringify({ type: 'error', event_id: `event_${randomBytes(6).toString('hex')}`, error: { type, code, message, param: null, event_id: null } }));
  socket.close(closeCode, code);
}

function closeWithRefusal(socket: WebSocket, refusal: CallRefusal): void {
  // A limit, an unknown agent or a loading node is the request's or the moment's, not a server fault.
  closeWithError(socket, refusal.code, refusal.message, refusal.wsClose, refusal.kind === 'fault' ? 'server_error' : 'invalid_request_error');
}

/** One realtime client: the protocol's events and items on a call edge. */
class RealtimeConnection implements CallWire, AudioSink {
  private readonly edge: CallEdge;
  private readonly codecs: EdgeCodecs;
  /** Built when the session opens, around the service's shared tools. */
  private tools!: ClientToolExecutor;
  private readonly state: SessionState;
  private readonly sessionId = newId('sess');
  private readonly items: { id: string; item: ConversationItem }[] = [];
  private eventSeq = 0;
  private readonly eventPrefix = randomBytes(4).toString('hex');
  /** Serialises format changes against audio so a chunk is never decoded with a half-built codec. */
  private chain: Promise<void> = Promise.resolve();
  /** The agent's audio reaches the client through the socket: after it drains, a short margin to play it. */
  readonly tailMs = REALTIME_PLAYOUT_TAIL_MS;

  // Caller audio, paced into the edge: only whole frames leave the queue, so a clear drops every sample not sent.
  private readonly queue: QueuedPcm[] = [];
  private queuedSamples = 0;
  private tokens = BURST_FRAMES;
  private tokensAt = performance.now();
  private pumpTimer: NodeJS.Timeout | null = null;
  private firstAudioAt: number | null = null;
  /** The user item of the turn being spoken (from speech_started until its transcript). */
  private speakingItemId: string | null = null;
  /** Ordered: what each coming transcript.final belongs to (an audio item, or a text item we already showed). */
  private readonly pendingFinals: ({ kind: 'audio'; itemId: string } | { kind: 'text' })[] = [];
  /** Transcript already sent as deltas, per user audio item. */
  private readonly partials = new Map<string, string>();

  // Agent output.
  private current: RtResponse | null = null;
  /** response.create was accepted and its session reply has not started yet. */
  private responseRequested = false;
  /** Session reply ids whose realtime response was cancelled by the client (their late events are dropped). */
  private readonly cancelledReplies = new BoundedSet<string>(16);
  private readonly out: WsOutbound;

  constructor(
    private readonly socket: WebSocket,
    private readonly service: VoiceService,
    log: Logger,
    private readonly model: string,
    private readonly beta: boolean,
    private readonly toolTimeoutMs: number,
    /** The API key this call counts against (the caller's, or the one that minted its token). */
    private readonly keyId = 'anonymous',
    /** From the session token, for the call record (people's access and erasure requests). */
    private readonly customerId?: string,
    /** The session token's claims as caller context for the service's tools (src/integration/context.ts). */
    private readonly caller?: Readonly<Record<string, string>>,
  ) {
    this.state = {
      instructions: service.config.agent.systemPrompt,
      voice: 'default',
      speed: 1,
      inputFormat: { type: 'audio/pcm', rate: 24000 },
      outputFormat: { type: 'audio/pcm', rate: 24000 },
      turnDetection: { type: 'server_vad', createResponse: true, interruptResponse: true },
      tools: [],
      toolChoice: 'auto',
      outputModalities: ['audio'],
      language: undefined,
    };
    this.edge = new CallEdge(service, 'realtime', this, this, log);
    this.codecs = this.edge.own(new EdgeCodecs());
    this.out = new WsOutbound(socket, {
      transport: 'realtime',
      maxBufferedBytes: service.config.limits.maxBufferedBytes,
      metrics: service.metrics,
      log: () => this.edge.log,
      notice: () => {
        this.service.metrics.error('slow_consumer');
        this.send({ type: 'error', error: { type: 'server_error', code: 'slow_consumer', message: 'client is not reading; agent audio is being dropped', param: null, event_id: null } });
      },
    });
  }

  private get session(): Session | null {
    return this.edge.session;
  }

  private get log(): Logger {
    return this.edge.log;
  }

  /** Events that arrive while this runs wait for it. */
  start(): Promise<void> {
    this.chain = this.open();
    return this.chain;
  }

  private async open(): Promise<void> {
    await this.codecs.use(codecFor(this.state.inputFormat), codecFor(this.state.outputFormat));
    const session = await this.edge.open({
      keyId: this.keyId,
      inputSampleRate: codecFor(this.state.inputFormat).sampleRate,
      subject: { customerId: this.customerId },
      ...(this.caller ? { caller: this.caller } : {}),
      tools: (shared) => {
        this.tools = new ClientToolExecutor(shared, { awaiting: (call) => this.onClientToolAwaited(call) }, this.toolTimeoutMs);
        return this.tools;
      },
    });
    // Null: the client left while the call was being admitted.
    if (!session) return;
    this.applyTurnDetection();
    this.send({ type: 'session.created', session: this.describeSession() });
  }

  /** Refuse the call: the refusal table's code in an error event, and its close code (retry or not). */
  refuse(err: unknown): void {
    const refusal = refusalOf(err);
    reportRefusal(refusal, err, this.log, this.service.metrics);
    closeWithRefusal(this.socket, refusal);
  }

  // ——— client → server ———

  onMessage(data: RawData, isBinary: boolean): void {
    if (this.edge.closed) return;
    if (isBinary) {
      this.sendError(new RealtimeProtocolError('invalid_value', 'binary frames are not part of the protocol; send JSON events (audio as base64 in input_audio_buffer.append)'), null);
      return;
    }
    const text = toText(data);
    let event: ClientEvent;
    try {
      event = parseClientEvent(text);
    } catch (err) {
      if (!(err instanceof RealtimeProtocolError)) throw err;
      this.sendError(err, eventIdOf(text));
      return;
    }
    this.chain = this.chain
      .then(() => this.handle(event))
      .catch((err: unknown) => {
        if (err instanceof RealtimeProtocolError) this.sendError(err, event.eventId ?? null);
        else {
          this.log.error({ err, event: event.type }, 'realtime event failed');
          this.sendError(new RealtimeProtocolError('internal_error', `could not handle ${event.type}: ${(err as Error).message}`, null, 'server_error'), event.eventId ?? null);
        }
      });
  }

  private async handle(event: ClientEvent): Promise<void> {
    const session = this.session;
    if (!session || this.edge.closed) return;
    switch (event.type) {
      case 'session.update':
        await this.updateSession(event.patch);
        this.send({ type: 'session.updated', session: this.describeSession() });
        break;
      case 'input_audio_buffer.append':
        this.appendAudio(event.audio);
        break;
      case 'input_audio_buffer.commit':
        this.commit(session);
        break;
      case 'input_audio_buffer.clear':
        // Drops audio not yet handed to the pipeline; speech already being recognised stays in its turn.
        this.queue.length = 0;
        this.queuedSamples = 0;
        this.send({ type: 'input_audio_buffer.cleared' });
        break;
      case 'output_audio_buffer.clear':
        // Agent audio is paced in real time, so stopping it means stopping the response.
        if (this.current || this.responseRequested) this.cancelResponse(session, undefined);
        break;
      case 'conversation.item.create':
        this.createItem(session, event.item, event.previousItemId);
        break;
      case 'conversation.item.truncate':
        this.truncateItem(session, event.itemId, event.contentIndex, event.audioEndMs);
        break;
      case 'conversation.item.delete':
        this.deleteItem(session, event.itemId);
        break;
      case 'conversation.item.retrieve': {
        const found = this.items.find((i) => i.id === event.itemId);
        if (!found) throw new RealtimeProtocolError('item_not_found', `no item with id "${event.itemId}"`, 'item_id');
        this.send({ type: 'conversation.item.retrieved', item: found.item });
        break;
      }
      case 'response.create':
        this.createResponse(session);
        break;
      case 'response.cancel':
        this.cancelResponse(session, event.responseId);
        break;
    }
  }

  private async updateSession(patch: SessionPatch): Promise<void> {
    const s = this.state;
    const formatsChanged =
      (patch.inputFormat && patch.inputFormat.type !== s.inputFormat.type) || (patch.outputFormat && patch.outputFormat.type !== s.outputFormat.type);
    // First, all or nothing: a format the codecs cannot be built for leaves the session as it was.
    if (formatsChanged) await this.codecs.use(codecFor(patch.inputFormat ?? s.inputFormat), codecFor(patch.outputFormat ?? s.outputFormat));
    if (patch.instructions !== undefined) {
      s.instructions = patch.instructions;
      this.session?.setInstructions(patch.instructions || this.service.config.agent.systemPrompt);
    }
    if (patch.voice !== undefined) s.voice = patch.voice;
    if (patch.speed !== undefined) s.speed = patch.speed;
    if (patch.inputFormat) s.inputFormat = patch.inputFormat;
    if (patch.outputFormat) s.outputFormat = patch.outputFormat;
    if (patch.turnDetection !== undefined) s.turnDetection = patch.turnDetection;
    if (patch.tools) s.tools = patch.tools;
    if (patch.toolChoice) s.toolChoice = patch.toolChoice;
    if (patch.outputModalities) s.outputModalities = patch.outputModalities;
    if (patch.transcriptionLanguage !== undefined) {
      s.language = patch.transcriptionLanguage;
      this.session?.setLanguage(patch.transcriptionLanguage.split('-')[0]);
    }
    this.tools.setTools(s.tools, s.toolChoice);
    this.applyTurnDetection();
  }

  private applyTurnDetection(): void {
    if (!this.session) return;
    const td = this.state.turnDetection;
    this.session.setTurnDetection({ auto: td !== null, respond: td !== null && td.createResponse });
  }

  private appendAudio(bytes: Buffer): void {
    if (!this.codecs.ready || bytes.length === 0) return;
    if (this.state.inputFormat.type === 'audio/pcm' && bytes.length % 2 !== 0) {
      throw new RealtimeProtocolError('invalid_value', `audio/pcm is 16-bit: got ${bytes.length} bytes, an odd number`, 'audio');
    }
    if (this.queuedSamples >= MAX_QUEUED_SAMPLES) {
      throw new RealtimeProtocolError('input_audio_buffer_overflow', `more than ${MAX_QUEUED_FRAMES * FRAME_MS / 1000} s of audio is waiting; send audio at most ${MAX_SPEEDUP}x faster than real time`, 'audio');
    }
    const pcm = this.codecs.decode(bytes);
    const now = performance.now();
    this.firstAudioAt ??= now;
    if (pcm.length === 0) return;
    this.queue.push({ pcm, arrivalMs: now });
    this.queuedSamples += pcm.length;
    this.pump();
  }

  /**
   * Hand queued caller audio to the edge, at most MAX_SPEEDUP × real time after a first burst. Whole frames
   * only (each token is one): the edge's framer then never holds a partial frame, and every frame keeps the
   * arrival time of the chunk its first sample came in.
   */
  private pump(): void {
    if (!this.session || this.edge.closed) return;
    const now = performance.now();
    this.tokens = Math.min(BURST_FRAMES, this.tokens + ((now - this.tokensAt) / FRAME_MS) * MAX_SPEEDUP);
    this.tokensAt = now;
    const frames = Math.min(Math.floor(this.tokens), Math.floor(this.queuedSamples / FRAME_SAMPLES));
    let samples = frames * FRAME_SAMPLES;
    this.queuedSamples -= samples;
    while (samples > 0) {
      const head = this.queue[0];
      const take = Math.min(samples, head.pcm.length);
      this.tokens -= this.edge.pushPcm(head.pcm.subarray(0, take), head.arrivalMs);
      samples -= take;
      if (take === head.pcm.length) this.queue.shift();
      else head.pcm = head.pcm.subarray(take);
    }
    if (this.queuedSamples >= FRAME_SAMPLES && !this.pumpTimer) {
      this.pumpTimer = setTimeout(() => {
        this.pumpTimer = null;
        this.pump();
      }, FRAME_MS);
    }
  }

  private commit(session: Session): void {
    if (this.state.turnDetection !== null) {
      // With server VAD the server commits; a client commit ends the turn now (as OpenAI does).
      if (!this.speakingItemId) throw new RealtimeProtocolError('input_audio_buffer_commit_empty', 'no speech in the input audio buffer to commit', null);
    }
    const itemId = this.speakingItemId ?? newId('item');
    if (!session.commitInput()) {
      throw new RealtimeProtocolError('input_audio_buffer_commit_empty', 'no speech was detected in the input audio buffer; nothing to commit', null);
    }
    if (this.state.turnDetection === null) this.userAudioCommitted(itemId);
    // With server VAD the session's speech.stopped event (raised by the commit) announces the item.
  }

  /** A spoken user turn is over: its item enters the conversation; its transcript follows. */
  private userAudioCommitted(itemId: string): void {
    this.speakingItemId = null;
    const previous = this.lastItemId();
    this.send({ type: 'input_audio_buffer.committed', item_id: itemId, previous_item_id: previous });
    // The transcript follows in conversation.item.input_audio_transcription.completed.
    const item: ConversationItem = { id: itemId, type: 'message', role: 'user', object: 'realtime.item', status: 'completed', content: [{ type: 'input_audio' }] };
    this.pendingFinals.push({ kind: 'audio', itemId });
    this.addItem(item, previous);
  }

  private createItem(session: Session, input: ItemInput, previousItemId: string | undefined): void {
    if (previousItemId !== undefined && previousItemId !== 'root' && !this.items.some((i) => i.id === previousItemId)) {
      throw new RealtimeProtocolError('item_not_found', `previous_item_id "${previousItemId}" is not in the conversation`, 'previous_item_id');
    }
    const id = input.id ?? newId('item');
    if (this.items.some((i) => i.id === id)) throw new RealtimeProtocolError('duplicate_item_id', `an item with id "${id}" already exists`, 'item.id');
    let item: ConversationItem;
    switch (input.kind) {
      case 'message':
        if (input.role === 'user') {
          item = { id, type: 'message', role: 'user', object: 'realtime.item', status: 'completed', content: [{ type: 'input_text', text: input.text }] };
          if (input.text.trim()) {
            // The session echoes it as a transcript.final, which is not shown again.
            this.pendingFinals.push({ kind: 'text' });
            session.submitText(input.text, session.language, { respond: false });
          }
        } else if (input.role === 'assistant') {
          item = { id, type: 'message', role: 'assistant', object: 'realtime.item', status: 'completed', content: [{ type: 'output_text', text: input.text }] };
          session.conversation.addHeard(input.text);
        } else {
          item = { id, type: 'message', role: 'system', object: 'realtime.item', status: 'completed', content: [{ type: 'input_text', text: input.text }] };
          session.conversation.addNote(input.text);
        }
        break;
      case 'function_call_output':
        item = { id, type: 'function_call_output', object: 'realtime.item', status: 'completed', call_id: input.callId, output: input.output };
        if (!this.tools.addOutput(input.callId, input.output)) {
          this.log.debug({ callId: input.callId }, 'function_call_output for a call the agent is not waiting for');
        }
        break;
      case 'function_call':
        // Kept for the client's view of the conversation; the agent only acts on calls it made itself.
        item = { id, type: 'function_call', object: 'realtime.item', status: 'completed', call_id: input.callId, name: input.name, arguments: input.arguments };
        break;
    }
    this.addItem(item, this.lastItemId());
  }

  private truncateItem(session: Session, itemId: string, contentIndex: number, audioEndMs: number): void {
    const found = this.items.find((i) => i.id === itemId);
    if (!found || found.item.type !== 'message' || found.item.role !== 'assistant') {
      throw new RealtimeProtocolError('item_not_found', `no assistant message with id "${itemId}"`, 'item_id');
    }
    const playing = this.current?.message?.itemId === itemId;
    if (playing && audioEndMs > (this.current?.audioMs ?? 0)) {
      throw new RealtimeProtocolError('invalid_value', `audio_end_ms ${audioEndMs} is past the ${Math.round(this.current?.audioMs ?? 0)} ms of audio sent`, 'audio_end_ms');
    }
    // The client stopped playback there: the session keeps only what was heard (its pacer knows how much).
    if (playing) session.cancelResponse();
    this.send({ type: 'conversation.item.truncated', item_id: itemId, content_index: contentIndex, audio_end_ms: audioEndMs });
  }

  private deleteItem(session: Session, itemId: string): void {
    const index = this.items.findIndex((i) => i.id === itemId);
    if (index < 0) throw new RealtimeProtocolError('item_not_found', `no item with id "${itemId}"`, 'item_id');
    const [{ item }] = this.items.splice(index, 1);
    // Forget it in the agent's context too (matched by content: the session keeps plain messages).
    if (item.type === 'message') {
      const text = item.content.map((c) => ('text' in c && c.text) || ('transcript' in c && c.transcript) || '').join(' ').trim();
      session.conversation.remove(item.role, text);
    }
    this.send({ type: 'conversation.item.deleted', item_id: itemId });
  }

  private createResponse(session: Session): void {
    if (this.tools.awaitingClient) {
      // The client answered our function call(s): the reply goes on in a new response.
      const replyId = this.current?.replyId ?? this.lastReplyId;
      if (replyId) this.openResponse(replyId);
      this.tools.resume();
      return;
    }
    if (this.current || this.responseRequested) {
      throw new RealtimeProtocolError('conversation_already_has_active_response', 'a response is already in progress; cancel it first', null);
    }
    this.responseRequested = true;
    session.respond();
  }

  private cancelResponse(session: Session, responseId: string | undefined): void {
    if (responseId !== undefined && this.current?.id !== responseId) {
      throw new RealtimeProtocolError('response_not_found', `no active response with id "${responseId}"`, 'response_id');
    }
    if (!this.current && !this.responseRequested && !this.tools.awaitingClient) {
      throw new RealtimeProtocolError('response_cancel_not_active', 'there is no active response to cancel', null);
    }
    this.responseRequested = false;
    if (this.current) this.cancelledReplies.add(this.current.replyId);
    // Also drops a reply waiting for client tool results.
    session.cancelResponse();
    if (this.current) this.closeResponse('cancelled', { type: 'cancelled', reason: 'client_cancelled' });
  }

  // ——— CallWire: session → client ———

  private lastReplyId: string | null = null;

  event(event: SessionEvent): void {
    if (this.edge.closed) return;
    const vad = this.state.turnDetection !== null;
    switch (event.type) {
      case 'speech.started':
        if (!vad) break;
        this.speakingItemId ??= newId('item');
        this.send({ type: 'input_audio_buffer.speech_started', audio_start_ms: this.audioMs(event.atMs), item_id: this.speakingItemId });
        break;
      case 'speech.stopped': {
        if (!vad) break;
        const itemId = this.speakingItemId ?? newId('item');
        this.send({ type: 'input_audio_buffer.speech_stopped', audio_end_ms: this.audioMs(event.atMs), item_id: itemId });
        this.userAudioCommitted(itemId);
        break;
      }
      case 'transcript.partial': {
        const pending = this.pendingFinals.find((p) => p.kind === 'audio');
        const itemId = this.speakingItemId ?? (pending?.kind === 'audio' ? pending.itemId : null);
        if (!itemId) break;
        // Partials are whole hypotheses; deltas can only append, so only an extension is sent.
        const previous = this.partials.get(itemId) ?? '';
        if (event.text.startsWith(previous) && event.text.length > previous.length) {
          this.send({ type: 'conversation.item.input_audio_transcription.delta', item_id: itemId, content_index: 0, delta: event.text.slice(previous.length) });
          this.partials.set(itemId, event.text);
        }
        break;
      }
      case 'transcript.final': {
        const pending = this.pendingFinals.shift();
        if (!pending || pending.kind === 'text') break;
        this.partials.delete(pending.itemId);
        const found = this.items.find((i) => i.id === pending.itemId);
        if (found && found.item.type === 'message') found.item.content = [{ type: 'input_audio', transcript: event.text }];
        this.send({
          type: 'conversation.item.input_audio_transcription.completed',
          item_id: pending.itemId,
          content_index: 0,
          transcript: event.text,
          usage: { type: 'duration', seconds: 0 },
        });
        break;
      }
      case 'response.started':
        this.responseRequested = false;
        this.lastReplyId = event.responseId;
        this.openResponse(event.responseId);
        break;
      case 'response.text.delta': {
        const response = this.responseFor(event.responseId);
        if (!response) break;
        const message = this.ensureMessage(response);
        message.transcript += event.text;
        const textOnly = !this.state.outputModalities.includes('audio');
        this.send({
          type: textOnly ? 'response.output_text.delta' : 'response.output_audio_transcript.delta',
          response_id: response.id,
          item_id: message.itemId,
          output_index: message.outputIndex,
          content_index: 0,
          delta: event.text,
        });
        break;
      }
      case 'response.tool_call':
        this.onToolCall(event.responseId, event.name, event.arguments, event.toolCallId);
        break;
      case 'response.done': {
        if (this.current?.replyId !== event.responseId) break;
        if (event.status === 'completed') this.closeResponse('completed');
        else if (event.status === 'failed') this.closeResponse('failed', { type: 'failed', error: { type: 'server_error', code: 'response_failed' } });
        else this.closeResponse('cancelled', { type: 'cancelled', reason: this.cancelledReplies.has(event.responseId) ? 'client_cancelled' : 'turn_detected' });
        break;
      }
      case 'error':
        this.sendError(new RealtimeProtocolError(event.code, event.message, null, 'server_error'), null);
        break;
      case 'call.action':
        // The edge hangs up (agentEnded) once the agent's last words have played.
        if (event.action === 'hangup') this.log.info('agent ended the call');
        else this.log.info({ action: event.action }, 'call action has no realtime equivalent; ignored');
        break;
      default:
        // session.started/updated, audio.clear, response.audio.started, response.interrupted, turn.metrics, dtmf:
        // nothing in the realtime protocol (the client stops playback on speech_started itself).
        break;
    }
  }

  agentEnded(action: 'hangup' | 'transfer'): void {
    // A realtime client has nowhere to be transferred to: the call stays up.
    if (action === 'hangup' && this.socket.readyState === this.socket.OPEN) this.socket.close(1000, 'agent ended the call');
  }

  // ——— AudioSink: agent audio as response.output_audio.delta events ———

  write(frame: OutboundFrame): void {
    if (this.edge.closed || !this.codecs.ready) return;
    const response = this.responseFor(frame.responseId);
    if (!response || !this.state.outputModalities.includes('audio')) return;
    const message = this.ensureMessage(response);
    const payload = this.codecs.encode(frame.samples);
    const delta: Outgoing = {
      type: 'response.output_audio.delta',
      response_id: response.id,
      item_id: message.itemId,
      output_index: message.outputIndex,
      content_index: 0,
      delta: Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('base64'),
    };
    // Only audio the client was sent counts (truncation is checked against it); a delta is the one event dropped.
    if (this.out.media(this.wire(delta), false)) response.audioMs += FRAME_MS;
  }

  clear(): void {
    // Nothing is held here beyond the socket's buffer; the client stops playback on speech_started itself.
  }

  pending(): number {
    return this.socket.bufferedAmount;
  }

  private onToolCall(replyId: string, name: string, args: string, toolCallId: string): void {
    if (!this.tools.isClientTool(name)) return; // runs on the server, invisible to the client
    const response = this.responseFor(replyId);
    if (!response) return;
    this.finishMessage(response);
    const itemId = newId('item');
    const outputIndex = response.output.length;
    const item: ConversationItem = { id: itemId, type: 'function_call', object: 'realtime.item', status: 'in_progress', call_id: toolCallId, name, arguments: '' };
    response.output.push(item);
    this.send({ type: 'response.output_item.added', response_id: response.id, output_index: outputIndex, item });
    this.addItem(item, this.lastItemId(), false);
    this.send({ type: 'response.function_call_arguments.delta', response_id: response.id, item_id: itemId, output_index: outputIndex, call_id: toolCallId, delta: args });
    this.send({ type: 'response.function_call_arguments.done', response_id: response.id, item_id: itemId, output_index: outputIndex, call_id: toolCallId, name, arguments: args });
    const done: ConversationItem = { ...item, status: 'completed', arguments: args };
    response.output[outputIndex] = done;
    this.replaceItem(done);
    this.send({ type: 'response.output_item.done', response_id: response.id, output_index: outputIndex, item: done });
    if (!this.beta) this.send({ type: 'conversation.item.done', item: done, previous_item_id: this.previousOf(itemId) });
    this.tools.announce(toolCallId);
  }

  /** The agent waits for a client tool: end the response once what it said before the call has played. */
  private async onClientToolAwaited(call: ToolCall): Promise<void> {
    const deadline = performance.now() + 30_000;
    while (this.session?.agentSpeaking && performance.now() < deadline && !this.edge.closed) await sleep(FRAME_MS);
    const current = this.current;
    if (current && current.output.some((i) => i.type === 'function_call' && i.call_id === call.id)) this.closeResponse('completed');
  }

  /** The realtime response showing session reply `replyId`; a new one when the reply goes on after a tool call. */
  private responseFor(replyId: string): RtResponse | null {
    if (this.current?.replyId === replyId) return this.current;
    if (this.cancelledReplies.has(replyId) || replyId !== this.lastReplyId) return null;
    return this.openResponse(replyId);
  }

  private openResponse(replyId: string): RtResponse {
    if (this.current) this.closeResponse('completed');
    const response: RtResponse = { id: newId('resp'), replyId, output: [], message: null, audioMs: 0 };
    this.current = response;
    this.send({ type: 'response.created', response: this.describeResponse(response, 'in_progress') });
    return response;
  }

  private ensureMessage(response: RtResponse): MessagePart {
    if (response.message) return response.message;
    const itemId = newId('item');
    const outputIndex = response.output.length;
    const audio = this.state.outputModalities.includes('audio');
    const item: ConversationItem = { id: itemId, type: 'message', role: 'assistant', object: 'realtime.item', status: 'in_progress', content: [] };
    response.output.push(item);
    response.message = { itemId, outputIndex, transcript: '' };
    this.send({ type: 'response.output_item.added', response_id: response.id, output_index: outputIndex, item });
    this.addItem(item, this.lastItemId(), false);
    this.send({
      type: 'response.content_part.added',
      response_id: response.id,
      item_id: itemId,
      output_index: outputIndex,
      content_index: 0,
      part: audio ? { type: 'audio', transcript: '' } : { type: 'text', text: '' },
    });
    return response.message;
  }

  /** Close the response's assistant message: its audio and transcript are complete. */
  private finishMessage(response: RtResponse): void {
    const message = response.message;
    if (!message) return;
    response.message = null;
    const base = { response_id: response.id, item_id: message.itemId, output_index: message.outputIndex, content_index: 0 };
    const audio = this.state.outputModalities.includes('audio');
    if (audio) {
      this.send({ type: 'response.output_audio.done', ...base });
      this.send({ type: 'response.output_audio_transcript.done', ...base, transcript: message.transcript });
    } else {
      this.send({ type: 'response.output_text.done', ...base, text: message.transcript });
    }
    const part = audio ? { type: 'audio' as const, transcript: message.transcript } : { type: 'text' as const, text: message.transcript };
    this.send({ type: 'response.content_part.done', ...base, part });
    const item: ConversationItem = {
      id: message.itemId,
      type: 'message',
      role: 'assistant',
      object: 'realtime.item',
      status: 'completed',
      content: [audio ? { type: 'output_audio', transcript: message.transcript } : { type: 'output_text', text: message.transcript }],
    };
    response.output[message.outputIndex] = item;
    this.replaceItem(item);
    this.send({ type: 'response.output_item.done', response_id: response.id, output_index: message.outputIndex, item });
    if (!this.beta) this.send({ type: 'conversation.item.done', item, previous_item_id: this.previousOf(message.itemId) });
  }

  private closeResponse(status: 'completed' | 'cancelled' | 'failed', details?: RealtimeResponse['status_details']): void {
    const response = this.current;
    if (!response) return;
    this.finishMessage(response);
    this.current = null;
    if (status !== 'completed') {
      for (const item of response.output) if ('status' in item && item.status === 'in_progress') item.status = 'incomplete';
    }
    this.send({ type: 'response.done', response: this.describeResponse(response, status, details) });
  }

  private describeResponse(response: RtResponse, status: NonNullable<RealtimeResponse['status']>, details?: RealtimeResponse['status_details']): RealtimeResponse {
    return {
      id: response.id,
      object: 'realtime.response',
      conversation_id: `conv_${this.sessionId.slice(5)}`,
      status,
      status_details: details ?? (status === 'in_progress' ? undefined : { type: status }),
      output: response.output,
      output_modalities: this.state.outputModalities,
      max_output_tokens: 'inf',
      audio: { output: { format: this.formatOut(this.state.outputFormat), voice: this.state.voice } },
      // Token counts are meaningless for the embedded models; the fields exist so clients that read them work.
      usage: { total_tokens: 0, input_tokens: 0, output_tokens: 0, input_token_details: { text_tokens: 0, audio_tokens: 0, cached_tokens: 0 }, output_token_details: { text_tokens: 0, audio_tokens: 0 } },
      metadata: null,
    };
  }

  // ——— conversation items ———

  private addItem(item: ConversationItem, previous: string | null, done = true): void {
    this.items.push({ id: item.id!, item });
    if (this.items.length > MAX_REALTIME_ITEMS) this.items.splice(0, this.items.length - MAX_REALTIME_ITEMS);
    if (this.beta) {
      this.send({ type: 'conversation.item.created', item, previous_item_id: previous });
      return;
    }
    this.send({ type: 'conversation.item.added', item, previous_item_id: previous });
    if (done) this.send({ type: 'conversation.item.done', item, previous_item_id: previous });
  }

  private replaceItem(item: ConversationItem): void {
    const found = this.items.find((i) => i.id === item.id);
    if (found) found.item = item;
  }

  private lastItemId(): string | null {
    return this.items.at(-1)?.id ?? null;
  }

  private previousOf(itemId: string): string | null {
    const index = this.items.findIndex((i) => i.id === itemId);
    return index > 0 ? this.items[index - 1].id : null;
  }

  // ——— wire ———

  private audioMs(atMs: number): number {
    return Math.max(0, Math.round(atMs - (this.firstAudioAt ?? atMs)));
  }

  private formatOut(format: AudioFormat): { type: AudioFormat['type']; rate?: 24000 } {
    return format.type === 'audio/pcm' ? { type: 'audio/pcm', rate: 24000 } : { type: format.type };
  }

  private describeSession(): RealtimeSessionCreateRequest & { id: string; object: 'realtime.session' } {
    const s = this.state;
    const turn = this.service.config.turn;
    const turnDetection =
      s.turnDetection === null
        ? null
        : {
            type: s.turnDetection.type,
            // The service's own endpointing settings (per-call tuning of them is not supported).
            threshold: turn.speechThreshold,
            prefix_padding_ms: turn.preRollMs,
            silence_duration_ms: turn.endpointSilenceMs,
            create_response: s.turnDetection.createResponse,
            interrupt_response: s.turnDetection.interruptResponse,
            idle_timeout_ms: null,
          };
    const tools = s.tools.map((t) => ({ type: 'function' as const, name: t.name, description: t.description, parameters: t.parameters }));
    if (this.beta) {
      // Beta clients read the flat session shape.
      return {
        id: this.sessionId,
        object: 'realtime.session',
        model: this.model,
        modalities: s.outputModalities,
        instructions: s.instructions,
        voice: s.voice,
        input_audio_format: betaFormatName(s.inputFormat),
        output_audio_format: betaFormatName(s.outputFormat),
        input_audio_transcription: { model: 'embedded', ...(s.language ? { language: s.language } : {}) },
        turn_detection: turnDetection,
        tools,
        tool_choice: s.toolChoice,
        temperature: 0.8,
        max_response_output_tokens: 'inf',
      } as unknown as RealtimeSessionCreateRequest & { id: string; object: 'realtime.session' };
    }
    return {
      type: 'realtime',
      id: this.sessionId,
      object: 'realtime.session',
      model: this.model,
      output_modalities: s.outputModalities,
      instructions: s.instructions,
      audio: {
        input: {
          format: this.formatOut(s.inputFormat),
          transcription: { model: 'embedded', ...(s.language ? { language: s.language } : {}) },
          turn_detection: turnDetection,
        },
        output: { format: this.formatOut(s.outputFormat), voice: s.voice, speed: s.speed },
      },
      tools,
      tool_choice: s.toolChoice as 'auto',
      max_output_tokens: 'inf',
      tracing: null,
      prompt: null,
      truncation: 'disabled',
    };
  }

  /** Every event but audio deltas: never dropped (response.done, transcripts and errors are the protocol). */
  private send(event: Outgoing): void {
    if (this.out.open) this.out.control(this.wire(event));
  }

  private wire(event: Outgoing): string {
    const type = this.beta ? betaEventName(event.type) : event.type;
    return JSON.stringify({ ...event, type, event_id: `event_${this.eventPrefix}${(++this.eventSeq).toString(36)}` });
  }

  private sendError(err: RealtimeProtocolError, clientEventId: string | null): void {
    this.service.metrics.error(err.errorType === 'server_error' ? 'internal_error' : 'invalid_message');
    this.send({
      type: 'error',
      error: { type: err.errorType, code: err.code, message: err.message, param: err.param, event_id: clientEventId },
    });
  }

  close(): Promise<void> {
    if (this.pumpTimer) clearTimeout(this.pumpTimer);
    this.pumpTimer = null;
    // Replies waiting for the client's tool results give up first, so the session's close does not wait on them.
    this.tools?.close();
    return this.edge.close('hangup');
  }
}

/** GA event names → the beta protocol's (OpenAI-Beta: realtime=v1). */
function betaEventName(type: string): string {
  if (type.startsWith('response.output_audio_transcript.')) return type.replace('response.output_audio_transcript.', 'response.audio_transcript.');
  if (type.startsWith('response.output_audio.')) return type.replace('response.output_audio.', 'response.audio.');
  if (type.startsWith('response.output_text.')) return type.replace('response.output_text.', 'response.text.');
  return type;
}

function toText(data: RawData): string {
  if (Array.isArray(data)) return Buffer.concat(data).toString('utf8');
  if (data instanceof ArrayBuffer) return Buffer.from(data).toString('utf8');
  return data.toString('utf8');
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export const realtimeWebSocket: FastifyPluginAsync<RealtimeWsOptions> = async (app: FastifyInstance, { service, toolTimeoutMs }) => {
  const authenticate = requireCaller(service.auth);
  const preValidation = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const key = request.headers.authorization ? undefined : keyFromSubprotocol(request);
    if (key) request.headers.authorization = `Bearer ${key}`;
    await authenticate(request, reply);
  };

  app.get('/v1/realtime', { websocket: true, config: CALL_DOOR, preValidation }, (socket, request) => {
    const query = request.query as Record<string, string | undefined>;
    const log = request.log;
    const model = (query.model ?? 'voice-agent').slice(0, 128);
    const betaHeader = request.headers['openai-beta'];
    const beta = (Array.isArray(betaHeader) ? betaHeader.join(',') : betaHeader ?? '').includes('realtime=v1');
    if (!service.ready) {
      closeWithRefusal(socket, notReadyRefusal(service.state));
      return;
    }
    if (query.call_id !== undefined) {
      closeWithError(socket, 'unsupported', 'attaching to a call by call_id is not supported; connect with ?model=', 1008, 'invalid_request_error');
      return;
    }
    const connection = new RealtimeConnection(socket, service, service.logger.child({ transport: 'realtime' }), model, beta, toolTimeoutMs ?? DEFAULT_TOOL_TIMEOUT_MS, request.principal?.keyId ?? 'anonymous', request.principal?.customerId, callerFromClaims(request.principal));
    serveSocket(socket, connection, log, 'realtime');
    connection.start().catch((err: unknown) => connection.refuse(err));
  });
};
