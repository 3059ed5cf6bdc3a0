/**
 * Several server URLs for one remote stage (ASR realtime, LLM, TTS) with health-based failover.
 *
 * One pool per provider. `candidates()` gives the order to try for one request: the URLs that are up (in config
 * order, or rotated per request with 'round-robin'), then those marked down, soonest to recover first, as a last
 * resort, so a stage whose every backend failed still tries rather than failing without a request. A URL that
 * fails (connect error, 5xx, timeout) is marked down for `downMs`, doubled on each consecutive failure up to
 * `maxDownMs`; one success brings it back. Each provider decides what is safe to retry (before any audio or token
 * was produced) and calls `failed()` / `succeeded()`; the pool only keeps the state, the per-backend counts and
 * the logs.
 */
import type { Logger } from 'pino';
import { Gauge, type Registry } from 'prom-client';

export type BackendStrategy = 'ordered' | 'round-robin';

export interface BackendPoolOptions {
  /** What the pool serves, for logs ("asr", "llm", "tts"). */
  stage: string;
  urls: readonly string[];
  /** 'ordered' (default): always the first URL that is up; 'round-robin': spread requests over the URLs that are up. */
  strategy?: BackendStrategy;
  /** First back-off after a failure (default 5000 ms). */
  downMs?: number;
  /** Longest back-off (default 60 000 ms). */
  maxDownMs?: number;
  logger?: Logger;
  /** Injected for tests. */
  now?: () => number;
}

export interface BackendStats {
  url: string;
  up: boolean;
  requests: number;
  failures: number;
  consecutiveFailures: number;
  /** Until when it stays down (ms since the epoch of `now`), when down. */
  downUntil?: number;
  lastError?: string;
}

interface BackendState {
  url: string;
  requests: number;
  failures: number;
  consecutiveFailures: number;
  downUntil: number;
  lastError?: string;
}

export class BackendPool {
  readonly stage: string;
  private readonly backends: BackendState[];
  private readonly strategy: BackendStrategy;
  private readonly downMs: number;
  private readonly maxDownMs: number;
  private readonly log: Logger | undefined;
  private readonly now: () => number;
  private next = 0;

  constructor(options: BackendPoolOptions) {
    if (options.urls.length === 0) throw new Error(`${options.stage}: at least one backend URL is required`);
    this.stage = options.stage;
    this.backends = [...new Set(options.urls)].map((url) => ({ url, requests: 0, failures: 0, consecutiveFailures: 0, downUntil: 0 }));
    this.strategy = options.strategy ?? 'ordered';
    this.downMs = options.downMs ?? 5000;
    this.maxDownMs = Math.max(this.downMs, options.maxDownMs ?? 60_000);
    this.log = options.logger;
    this.now = options.now ?? Date.now;
  }

  get urls(): string[] {
    return this.backends.map((b) => b.url);
  }

  /** The order to try URLs in for one request (every URL once). */
  candidates(): string[] {
    const now = this.now();
    let up = this.backends.filter((b) => b.downUntil <= now);
    if (this.strategy === 'round-robin' && up.length > 1) {
      const start = this.next++ % up.length;
      up = [...up.slice(start), ...up.slice(0, start)];
    }
    const down = this.backends.filter((b) => b.downUntil > now).sort((a, b) => a.downUntil - b.downUntil);
    return [...up, ...down].map((b) => b.url);
  }

  /** True when at least one URL is not marked down now. */
  anyUp(): boolean {
    const now = this.now();
    return this.backends.some((b) => b.downUntil <= now);
  }

  /** True when `url` is not marked down now. */
  isUp(url: string): boolean {
    return (this.find(url)?.downUntil ?? 0) <= this.now();
  }

  /** A request goes to `url`. */
  started(url: string): void {
    const b = this.find(url);
    if (b) b.requests++;
  }

  succeeded(url: string): void {
    const b = this.find(url);
    if (!b) return;
    if (b.consecutiveFailures > 0 && this.backends.length > 1) this.log?.info({ stage: this.stage, backend: url }, 'backend is answering again');
    b.consecutiveFailures = 0;
    b.downUntil = 0;
  }

  /** `url` failed in a way another backend may not (connect error, 5xx, timeout): mark it down for a while. */
  failed(url: string, reason: string): void {
    const b = this.find(url);
    if (!b) return;
    b.failures++;
    b.consecutiveFailures++;
    b.lastError = reason;
    const backoff = Math.min(this.maxDownMs, this.downMs * 2 ** (b.consecutiveFailures - 1));
    b.downUntil = this.now() + backoff;
    this.log?.warn(
      { stage: this.stage, backend: url, err: reason, downMs: backoff, failures: b.failures, others: this.backends.length - 1 },
      'backend failed; marked down',
    );
  }

  stats(): BackendStats[] {
    const now = this.now();
    return this.backends.map((b) => ({
      url: b.url,
      up: b.downUntil <= now,
      requests: b.requests,
      failures: b.failures,
      consecutiveFailures: b.consecutiveFailures,
      ...(b.downUntil > now ? { downUntil: b.downUntil } : {}),
      ...(b.lastError ? { lastError: b.lastError } : {}),
    }));
  }

  private find(url: string): BackendState | undefined {
    return this.backends.find((b) => b.url === url);
  }
}

/** The URLs of a provider config that accepts one URL or several (`url` / `baseUrl` plus `urls` / `baseUrls`). */
export function urlList(one: string | undefined, many: readonly string[] | undefined, what: string): string[] {
  const all = [...(one ? [one] : []), ...(many ?? [])];
  if (all.length === 0) throw new Error(`${what} is required`);
  return all;
}

/** A provider that talks to remote servers through a pool (the remote ASR, LLM and TTS clients). */
export interface HasBackends {
  readonly backends: BackendPool;
}

function hasBackends(value: unknown): value is HasBackends {
  return typeof value === 'object' && value !== null && (value as Partial<HasBackends>).backends instanceof BackendPool;
}

/**
 * Per-backend Prometheus series for the providers that have pools, read from the pools at each scrape:
 * `voice_agent_backend_up`, `voice_agent_backend_requests`, `voice_agent_backend_failures` by stage and backend.
 * Providers without a pool (embedded models) are skipped.
 */
export function registerBackendMetrics(registry: Registry, providers: readonly unknown[]): void {
  const pools = providers.filter(hasBackends).map((p) => p.backends);
  if (pools.length === 0) return;
  const series = (name: string, help: string, value: (s: BackendStats) => number): void => {
    new Gauge({
      name,
      help,
      labelNames: ['stage', 'backend'],
      registers: [registry],
      collect() {
        for (const pool of pools) for (const s of pool.stats()) this.set({ stage: pool.stage, backend: s.url }, value(s));
      },
    });
  };
  series('voice_agent_backend_up', 'Remote backend not marked down (1) or marked down after a failure (0)', (s) => (s.up ? 1 : 0));
  series('voice_agent_backend_requests', 'Requests sent to a remote backend since start', (s) => s.requests);
  series('voice_agent_backend_failures', 'Failures (connect error, 5xx, timeout) of a remote backend since start', (s) => s.failures);
}
