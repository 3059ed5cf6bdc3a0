import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import type { ServiceConfig } from './config.js';
import { Auth } from './auth/auth.js';
import { Metrics } from './metrics/metrics.js';
import { createProviders, loadProviders } from './providers/index.js';
import { Session, type SessionOutput, type SessionProviders } from './session/session.js';

export type ServiceState = 'loading' | 'ready' | 'failed' | 'draining';

/**
 * The service core every transport talks to: it owns the loaded providers and hands out sessions.
 * Transports see only `openSession`, never which models run.
 */
export class VoiceService {
  readonly metrics = new Metrics();
  readonly auth: Auth;
  readonly sessions = new Map<string, Session>();
  state: ServiceState = 'loading';
  loadError: Error | null = null;
  private readonly providers: SessionProviders;
  private loading: Promise<void> | null = null;

  constructor(
    readonly config: ServiceConfig,
    readonly logger: Logger,
    providers?: SessionProviders,
  ) {
    this.auth = new Auth(config.auth, logger);
    this.providers = providers ?? createProviders(config, logger);
  }

  /** Loads every provider's models; /healthz turns 200 when this resolves. */
  load(): Promise<void> {
    this.loading ??= loadProviders(this.providers, this.logger).then(
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

  get ready(): boolean {
    return this.state === 'ready';
  }

  /** Start a call. Throws when models are not loaded yet. */
  openSession(transport: string, output: SessionOutput, options: { language?: string; callId?: string } = {}): Session {
    if (!this.ready) throw new Error(`service not ready (${this.state})`);
    const callId = options.callId ?? randomUUID();
    const log = this.logger.child({ callId, transport });
    const session = new Session({
      callId,
      transport,
      providers: this.providers,
      config: this.config,
      logger: log,
      metrics: this.metrics,
      output,
      language: options.language,
    });
    this.sessions.set(callId, session);
    this.metrics.sessionOpened(transport);
    log.info('session opened');
    return session;
  }

  async closeSession(session: Session, transport: string): Promise<void> {
    if (!this.sessions.delete(session.callId)) return;
    this.metrics.sessionClosed(transport);
    await session.close();
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.sessions.values()].map((s) => s.close()));
    this.sessions.clear();
    const { asr, llm, tts } = this.providers;
    await Promise.allSettled([asr.close?.(), llm.close?.(), tts.close?.()]);
  }
}
