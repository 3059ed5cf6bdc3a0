import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { ServiceConfig } from './config.js';
import { Auth } from './auth/auth.js';
import { ANY_KEY, SqliteCallStore, type CallStore, type CallSubject } from './store/call-store.js';
import { PostgresCallStore } from './store/postgres.js';
import { NotReadyError, SessionLimiter } from './limits/limits.js';
import { SharedKeyLimiter } from './limits/shared.js';
import type { SessionEvent } from './session/events.js';
import { Metrics } from './metrics/metrics.js';
import { createProviders, loadProviders } from './providers/index.js';
import { Session, type SessionOutput, type SessionProviders } from './session/session.js';
import type { ToolExecutor } from './session/reply.js';
import { CallRecorder, sweepRecordings } from './recording/recorder.js';
import { WebhookDispatcher } from './integration/webhooks.js';
import { handoverEvent, observedTools } from './integration/events.js';
import { registerBackendMetrics } from './providers/backends.js';
import { registerVadBatchMetrics, registerVadWorkerMetrics } from './providers/vad/metrics.js';
import { AgentRegistry, type AgentVersion } from './agents/registry.js';

export type ServiceState = 'loading' | 'ready' | 'failed' | 'draining';

/**
 * The service core every transport talks to: it owns the loaded providers and hands out sessions.
 * Transports see only `openSession`, never which models run.
 */
export class VoiceService {
  readonly metrics = new Metrics();
  readonly auth: Auth;
  readonly store: CallStore;
  readonly sessions = new Map<string, Session>();
  private readonly limiter: SessionLimiter;
  /** Per-key limits across the cluster's nodes when the store is shared (PostgreSQL); null: `limiter` counts them. */
  private readonly sharedLimits: SharedKeyLimiter | null;
  /** Per call: the key it counts against and its limit timers. */
  private readonly admissions = new Map<
    string,
    { keyId: string; maxLength: NodeJS.Timeout | null; recorder: CallRecorder | null; startedAt: number; agent: AgentVersion; networkId?: string }
  >();
  /** Signed webhooks to the operator's systems (integration.webhooks.url), or null when off. */
  readonly webhooks: WebhookDispatcher | null;
  private idleWatch: NodeJS.Timeout | null = null;
  state: ServiceState = 'loading';
  loadError: Error | null = null;
  /** Loaded providers; read-only use outside sessions (e.g. /v1/chat/completions serves `llm`). */
  readonly providers: SessionProviders;
  /** The agents calls are given (config `agents`); without `agents.files`, the one agent of `providers`. */
  readonly agents: AgentRegistry;
  private loading: Promise<void> | null = null;

  constructor(
    readonly config: ServiceConfig,
    readonly logger: Logger,
    providers?: SessionProviders,
  ) {
    this.auth = new Auth(config.auth, logger);
    if (config.store.kind === 'postgres') {
      const store = new PostgresCallStore(config.store, logger.child({ component: 'store' }));
      this.store = store;
      this.sharedLimits = new SharedKeyLimiter(store, config.limits, logger.child({ component: 'limits' }));
      // The process-wide cap stays local; the per-key ones are counted in the database.
      this.limiter = new SessionLimiter({ ...config.limits, maxSessionsPerKey: 0, sessionsPerMinutePerKey: 0 });
    } else {
      this.store = new SqliteCallStore(config.store, logger);
      this.sharedLimits = null;
      this.limiter = new SessionLimiter(config.limits);
    }
    if (config.limits.idleTimeoutMs > 0) {
      this.idleWatch = setInterval(() => this.endIdleSessions(), 1000);
      this.idleWatch.unref();
    }
    this.providers = providers ?? createProviders(config, logger);
    // Remote stages with several URLs: each backend's health and counts on /metrics.
    registerBackendMetrics(this.metrics.registry, [this.providers.asr, this.providers.llm, this.providers.tts]);
    // The VAD worker's restarts, deaths and hangs, and whether it fell back to this thread.
    registerVadWorkerMetrics(this.metrics.registry, this.providers.vad);
    registerVadBatchMetrics(this.metrics.registry, this.providers.vad);
    this.agents = new AgentRegistry(config, this.providers, logger.child({ component: 'agents' }));
    this.webhooks = config.integration?.webhooks?.url
      ? new WebhookDispatcher(config.integration.webhooks, logger.child({ component: 'webhooks' }), this.metrics.registry)
      : null;
    if (config.recording.enabled && config.recording.retentionDays > 0) {
      // Files on this node, and the recordings the store holds (PostgreSQL keeps their bytes: any node's).
      const sweep = (): void => {
        sweepRecordings(config.recording.dir, config.recording.retentionDays, logger);
        void this.store.expireRecordings(config.recording.retentionDays).catch((err: unknown) => logger.error({ err }, 'recording retention sweep failed'));
      };
      sweep();
      setInterval(sweep, 24 * 3600 * 1000).unref();
    }
  }

  /** Loads every provider's models; /healthz turns 200 when this resolves. */
  load(): Promise<void> {
    // Agent files compile (grammars included) beside the models: their recogniser work waits for the ASR's load itself.
    // The agent of providers.llm gets its grammars only when calls can reach it (not once agents.default names a file).
    const grammarsFor = this.agents.usesImplicit ? this.config : undefined;
    this.loading ??= Promise.all([loadProviders(this.providers, this.logger, grammarsFor), this.agents.load(), this.store.open()]).then(
      () => {
        this.state = 'ready';
      },
      (err: unknown) => {
        this.state = 'failed';
        this.loadError = err instanceof Error ? err : new Error(String(err));
        this.logger.error({ err }, 'model loading failed');
        throw this.loadError;
      },
    );
    return this.loading;
  }

  /** Record owner of calls placed without an API key (SIP trunks, signed provider streams). */
  get networkCallsOwner(): string {
    return this.config.store.networkCallsOwner ?? ANY_KEY;
  }

  get ready(): boolean {
    return this.state === 'ready';
  }

  /**
   * Graceful drain: refuse new calls (/healthz says "draining" so load balancers move on), let calls in
   * progress finish until the deadline, then end the rest with a short spoken notice.
   */
  async drain(deadlineMs = this.config.drain.deadlineMs): Promise<void> {
    if (this.state === 'draining') return;
    this.state = 'draining';
    this.logger.info({ sessions: this.sessions.size, deadlineMs }, 'draining: refusing new calls');
    const deadline = performance.now() + deadlineMs;
    while (this.sessions.size > 0 && performance.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    const remaining = [...this.sessions.values()];
    if (remaining.length > 0) {
      this.logger.info({ sessions: remaining.length }, 'drain deadline reached: ending calls with a notice');
      await Promise.allSettled(
        remaining.map((session) => session.endWithNotice(this.config.drain.notice[session.language] ?? this.config.drain.notice.en ?? 'Goodbye.')),
      );
      // Transports close on the hang-up; give them a moment to do it cleanly.
      const closeBy = performance.now() + 2000;
      while (this.sessions.size > 0 && performance.now() < closeBy) await new Promise((r) => setTimeout(r, 50));
    }
  }

  /**
   * Start a call. Rejects when models are not loaded yet, with LimitError when a limit refuses it. Async because
   * a cluster's per-key limits and the call's record live in a shared database (one round trip each, before
   * any audio flows). `tools` lets a transport give the call its own tool executor around the service's
   * (a realtime client runs the tools it declares itself).
   */
  async openSession(
    transport: string,
    output: SessionOutput,
    options: {
      language?: string;
      callId?: string;
      networkId?: string;
      keyId?: string;
      /** Whose record this is when not the key's: calls from phone networks (see `networkCallsOwner`). */
      recordOwner?: string;
      /** The caller's audio rate on the wire (8000 for a phone line), before resampling to the internal rate. */
      inputSampleRate?: number;
      /** Who the call is with (caller number, customer id), when known: for people's access and erasure requests. */
      subject?: CallSubject;
      tools?: (shared: ToolExecutor) => ToolExecutor;
      /** Caller context (token claims, SIP headers; src/integration/context.ts): the call's tools may send it on. */
      caller?: Readonly<Record<string, string>>;
      /** 'text': the agent's replies go out as text events only (a text client); audio by default. */
      replies?: 'audio' | 'text';
    } = {},
  ): Promise<Session> {
    if (!this.ready) throw new NotReadyError(this.state);
    const keyId = options.keyId ?? 'unkeyed';
    // Our ids only: a transport's own fresh id (WebRTC) is checked (the store refuses an id it has), network
    // ids go in `networkId`.
    const callId = options.callId ?? randomUUID();
    if (this.sessions.has(callId)) throw new Error(`call id ${callId} is already in use`);
    // Throws AgentSelectionError (an agent or number this deployment does not have): refused before any record.
    // Held from here: a reload while the database answers must not retire the version this call got.
    const agent = this.agents.select(options.keyId, options.caller);
    this.agents.acquire(agent);
    // Throws LimitError (session_limit / rate_limited): transports report its code to the client.
    try {
      this.limiter.admit(keyId);
    } catch (err) {
      this.agents.release(agent);
      throw err;
    }
    try {
      await this.sharedLimits?.admit(keyId, callId);
    } catch (err) {
      this.limiter.release(keyId);
      this.agents.release(agent);
      throw err;
    }
    try {
      await this.store.callStarted(callId, transport, options.recordOwner ?? keyId, options.networkId, options.subject, { name: agent.name, version: agent.version });
    } catch (err) {
      this.releaseSlot(keyId, callId, agent);
      throw err;
    }
    // Drained while the database answered: refused like a call that came a moment later.
    if (!this.ready) {
      this.releaseSlot(keyId, callId, agent);
      this.store.callEnded(callId, 'failed');
      throw new NotReadyError(this.state);
    }
    const log = this.logger.child({ callId, transport, agent: agent.name, agentVersion: agent.version });
    try {
      return this.startSession(callId, keyId, transport, output, options, log, agent);
    } catch (err) {
      // A provider that fails to give this call its streams: the slot and the record must not stay taken.
      this.releaseSlot(keyId, callId, agent);
      this.store.callEnded(callId, 'failed');
      throw err;
    }
  }

  /** Give back what a call held: its local and cluster-wide limit slots and its agent version. */
  private releaseSlot(keyId: string, callId: string, agent: AgentVersion): void {
    this.limiter.release(keyId);
    this.sharedLimits?.release(callId);
    this.agents.release(agent);
  }

  private startSession(
    callId: string,
    keyId: string,
    transport: string,
    output: SessionOutput,
    options: Parameters<VoiceService['openSession']>[2] & {},
    log: Logger,
    agent: AgentVersion,
  ): Session {
    const recorder = this.config.recording.enabled ? new CallRecorder(callId, this.config.recording, log, this.store.recordingSealer(callId)) : null;
    const callTools = options.tools ? options.tools(agent.tools) : agent.tools;
    const webhooks = this.webhooks;
    const session = new Session({
      recording: recorder ?? undefined,
      callId,
      transport,
      // Tool calls and transfers become events for the operator's systems (never waited on).
      // The call's agent version (its rules, tools and grammars) on the shared engines, for the whole call.
      providers: {
        ...this.providers,
        llm: agent.llm,
        asr: agent.asr,
        handover: agent.handover,
        voices: agent.voices,
        tools: webhooks ? observedTools(callTools, (type, data) => webhooks.emit(callId, type, data)) : callTools,
      },
      agent: { name: agent.name, version: agent.version },
      config: this.config,
      logger: log,
      metrics: this.metrics,
      output,
      language: options.language,
      ...(options.inputSampleRate ? { inputSampleRate: options.inputSampleRate } : {}),
      observer: (event) => this.record(callId, event, log),
      caller: { transport, ...(options.caller ?? {}) },
      ...(options.replies ? { replies: options.replies } : {}),
    });
    this.sessions.set(callId, session);
    const { maxSessionMs } = this.config.limits;
    const maxLength =
      maxSessionMs > 0
        ? setTimeout(() => {
            log.info({ maxSessionMs }, 'maximum call length reached');
            void session.endWithNotice(this.config.maxLengthNotice[session.language] ?? this.config.maxLengthNotice.en ?? 'Goodbye.');
          }, maxSessionMs)
        : null;
    maxLength?.unref();
    this.admissions.set(callId, { keyId, maxLength, recorder, startedAt: Date.now(), agent, ...(options.networkId ? { networkId: options.networkId } : {}) });
    this.metrics.sessionOpened(transport);
    webhooks?.emit(callId, 'call.started', { transport, language: session.language, caller: session.caller, agent: agent.name, agent_version: agent.version });
    log.info('session opened');
    return session;
  }

  async closeSession(session: Session, transport: string, reason = 'hangup'): Promise<void> {
    if (!this.sessions.delete(session.callId)) return;
    const admission = this.admissions.get(session.callId);
    if (admission) {
      this.admissions.delete(session.callId);
      if (admission.maxLength) clearTimeout(admission.maxLength);
      this.releaseSlot(admission.keyId, session.callId, admission.agent);
    }
    this.metrics.sessionClosed(transport);
    await session.close();
    this.store.callEnded(session.callId, reason);
    this.callEndedEvent(session, reason, admission?.startedAt);
    if (admission?.recorder) await this.keepRecording(session.callId, admission.recorder);
  }

  private callEndedEvent(session: Session, reason: string, startedAt: number | undefined): void {
    this.webhooks?.emit(session.callId, 'call.ended', {
      reason,
      duration_s: startedAt === undefined ? null : Math.round((Date.now() - startedAt) / 100) / 10,
      turns: session.transcript.filter((t) => t.role === 'caller').length,
      language: session.language,
    });
  }

  /** The finished recording, linked from the call record (unless the caller refused it). */
  private async keepRecording(callId: string, recorder: CallRecorder): Promise<void> {
    try {
      const saved = await recorder.close();
      if (saved) this.store.recordingSaved(callId, saved.file, 'ogg/opus', saved.bytes);
    } catch (err) {
      this.logger.error({ err, callId }, 'recording could not be saved');
    }
  }

  /** A call whose caller sent nothing for idleTimeoutMs (a dead link) is hung up. */
  private endIdleSessions(): void {
    const now = performance.now();
    for (const session of this.sessions.values()) {
      if (now - session.lastInputMs > this.config.limits.idleTimeoutMs && !session.agentSpeaking) {
        this.logger.child({ callId: session.callId }).info({ idleTimeoutMs: this.config.limits.idleTimeoutMs }, 'call idle: hanging up');
        session.lastInputMs = now; // once
        session.hangUp('idle_timeout');
      }
    }
  }

  /** Durable call record: what was said and how fast, queued off the audio path (src/store/call-store.ts). */
  private record(callId: string, event: SessionEvent, log: Logger): void {
    try {
      if (event.type === 'transcript.final' && (event.text || event.understood === false)) {
        // A turn the agent answered without understanding it is on the record too (empty text, status says why).
        const status = event.understood === false ? 'not_understood' : undefined;
        this.store.utterance(callId, { role: 'caller', turn: event.turn, text: event.text, language: event.language, ...(status ? { status } : {}) });
      } else if (event.type === 'response.done' && event.text) {
        // A completed reply has played out: its line (and the turn's queued writes) go to disk before the
        // client hears the reply ended. Interrupted ones happen while the caller talks: they wait for the batch.
        this.store.utterance(
          callId,
          { role: 'agent', turn: event.turn, text: event.text, language: this.sessions.get(callId)?.language ?? '', status: event.status },
          event.status === 'completed',
        );
        this.turnEvent(callId, event.turn, event.text, event.status);
      } else if (event.type === 'turn.metrics') {
        this.store.turnMetrics(callId, event.metrics);
      } else if (event.type === 'call.action' && event.action === 'transfer') {
        this.transferred(callId, log);
      }
    } catch (err) {
      log.error({ err, event: event.type }, 'call record write failed');
    }
  }

  /**
   * `call.turn` (opt-in, integration.webhooks.events): a finished turn, the caller's words and the agent's as the
   * call record has them (masked where it masks them), for a CRM that follows the conversation live.
   */
  private turnEvent(callId: string, turn: number, agentText: string, status: string): void {
    const session = this.sessions.get(callId);
    if (!this.webhooks || !session) return;
    const said = session.transcript.findLast((t) => t.role === 'caller' && t.turn === turn);
    this.webhooks.emit(callId, 'call.turn', {
      turn,
      caller_text: said?.text ?? null,
      caller_language: said?.language ?? null,
      agent_text: agentText,
      status,
      language: session.language,
    });
  }

  /** The agent handed the caller to a person: the record notes where and why, the operator gets the context. */
  private transferred(callId: string, log: Logger): void {
    const handover = this.sessions.get(callId)?.handover;
    if (!handover) return;
    log.info({ queue: handover.queue, reason: handover.reason, target: handover.target ?? null }, 'call handed over');
    this.store.callTransferred(callId, { queue: handover.queue, reason: handover.reason ?? null, target: handover.target ?? null });
    // The provider's id (CallSid, call_control_id, Vonage uuid, SIP Call-ID) lets the operator's own call
    // control find the call it must route.
    this.webhooks?.emit(callId, 'call.transfer', { ...handoverEvent(handover), network_id: this.admissions.get(callId)?.networkId ?? null });
  }

  async close(): Promise<void> {
    if (this.idleWatch) clearInterval(this.idleWatch);
    await Promise.allSettled([...this.sessions.values()].map(async (s) => {
      await s.close();
      this.store.callEnded(s.callId, 'shutdown');
      this.callEndedEvent(s, 'shutdown', this.admissions.get(s.callId)?.startedAt);
      const recorder = this.admissions.get(s.callId)?.recorder;
      if (recorder) await this.keepRecording(s.callId, recorder);
    }));
    this.sessions.clear();
    await this.agents.close();
    // The last events (call.ended of these calls) get a short grace to go out.
    await this.webhooks?.close();
    await this.store.close();
    const { vad, asr, llm, tts } = this.providers;
    await Promise.allSettled([vad.close?.(), asr.close?.(), llm.close?.(), tts.close?.()]);
  }
}
