/**
 * Per-API-key admission: how many calls a key may hold at once and how fast it may start new ones.
 * Every transport goes through VoiceService.openSession, so one limiter covers them all.
 */
/** Declared in ./options.ts (the `limits` section). */
export type { LimitsConfig } from './options.js';
import type { LimitsConfig } from './options.js';

export class LimitError extends Error {
  constructor(
    readonly code: 'session_limit' | 'rate_limited',
    message: string,
  ) {
    super(message);
    this.name = 'LimitError';
  }
}

/** The service is loading or draining: a call now is refused, one a moment later may not be. */
export class NotReadyError extends Error {
  override readonly name = 'NotReadyError';
  constructor(readonly state: string) {
    super(`service not ready (${state})`);
  }
}

interface Bucket {
  tokens: number;
  updatedMs: number;
}

/** How often full rate buckets are swept away (a full bucket is the same as none). */
const BUCKET_SWEEP_MS = 60_000;

export class SessionLimiter {
  private readonly active = new Map<string, number>();
  /** Rate buckets of keys that started calls recently; refilled ones are dropped, so this tracks recent keys only. */
  private readonly buckets = new Map<string, Bucket>();
  private total = 0;
  private lastSweepMs: number;

  constructor(
    private readonly config: LimitsConfig,
    private readonly now: () => number = () => performance.now(),
  ) {
    this.lastSweepMs = now();
  }

  /** Keys with a rate bucket (for tests and metrics): bounded by the keys active in the last minute or so. */
  get trackedKeys(): number {
    return this.buckets.size;
  }

  /** Admit a new call for `keyId` or throw LimitError. Pair every admit with one release. */
  admit(keyId: string): void {
    const { maxSessions, maxSessionsPerKey, sessionsPerMinutePerKey } = this.config;
    this.sweepBuckets();
    if (maxSessions > 0 && this.total >= maxSessions) throw new LimitError('session_limit', `the service is at its limit of ${maxSessions} calls`);
    const held = this.active.get(keyId) ?? 0;
    if (maxSessionsPerKey > 0 && held >= maxSessionsPerKey) throw new LimitError('session_limit', `this key already holds ${held} calls (limit ${maxSessionsPerKey})`);
    if (sessionsPerMinutePerKey > 0) {
      const now = this.now();
      const bucket = this.buckets.get(keyId) ?? { tokens: sessionsPerMinutePerKey, updatedMs: now };
      bucket.tokens = Math.min(sessionsPerMinutePerKey, bucket.tokens + ((now - bucket.updatedMs) / 60_000) * sessionsPerMinutePerKey);
      bucket.updatedMs = now;
      if (bucket.tokens < 1) {
        this.buckets.set(keyId, bucket);
        throw new LimitError('rate_limited', `this key starts calls too fast (limit ${sessionsPerMinutePerKey} per minute)`);
      }
      bucket.tokens -= 1;
      this.buckets.set(keyId, bucket);
    }
    this.active.set(keyId, held + 1);
    this.total++;
  }

  /** Drop buckets that have refilled: a key seen once must not be remembered for the life of the process. */
  private sweepBuckets(): void {
    const now = this.now();
    if (now - this.lastSweepMs < BUCKET_SWEEP_MS) return;
    this.lastSweepMs = now;
    const rate = this.config.sessionsPerMinutePerKey;
    for (const [key, bucket] of this.buckets) {
      if (rate <= 0 || bucket.tokens + ((now - bucket.updatedMs) / 60_000) * rate >= rate) this.buckets.delete(key);
    }
  }

  release(keyId: string): void {
    const held = this.active.get(keyId) ?? 0;
    if (held <= 1) this.active.delete(keyId);
    else this.active.set(keyId, held - 1);
    this.total = Math.max(0, this.total - 1);
  }
}

/** Counts messages per one-second window for one socket. */
export class MessageRateLimiter {
  private windowStart = 0;
  private count = 0;

  constructor(private readonly perSecond: number) {}

  /** False when this message is over the limit. */
  allow(nowMs = performance.now()): boolean {
    if (this.perSecond <= 0) return true;
    if (nowMs - this.windowStart >= 1000) {
      this.windowStart = nowMs;
      this.count = 0;
    }
    return ++this.count <= this.perSecond;
  }
}
