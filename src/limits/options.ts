/** The `limits` section (per-key and per-process call limits, src/limits): its options, defaults and type. */
import { common, defaultsOf, t, type Resolved } from '../core/options.js';

export const LIMITS_OPTIONS = t.object({
  /** Calls one key may hold at once (0 = no limit). */
  maxSessionsPerKey: t.default(t.integer(0), 100),
  /** New calls one key may start per minute (token bucket; 0 = no limit). */
  sessionsPerMinutePerKey: t.default(t.integer(0), 600),
  /** Calls the whole process accepts at once (0 = no limit). */
  maxSessions: t.default(t.integer(0), 0),
  /** Longest call; the agent then says goodbye and hangs up (0 = no limit). */
  maxSessionMs: t.default(common.ms(), 60 * 60_000),
  /** A call with no caller audio or input for this long is ended (0 = never). */
  idleTimeoutMs: t.default(common.ms(), 60_000),
  /** Inbound messages per second one socket may send before they are dropped with `rate_limited`. */
  maxMessagesPerSecond: t.default(t.integer(0), 200),
  /** Bytes queued to a slow client beyond which agent audio is dropped rather than buffered. */
  maxBufferedBytes: t.default(t.integer(0), 512 * 1024),
});
export type LimitsConfig = Resolved<typeof LIMITS_OPTIONS>;
export const LIMITS_DEFAULTS: LimitsConfig = defaultsOf(LIMITS_OPTIONS);
