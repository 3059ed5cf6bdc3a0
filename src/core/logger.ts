import { pino, type Logger } from 'pino';

export type { Logger };

/** The process logger. Every call gets a child logger carrying its `callId` (see Session). */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  // Credentials never reach the log, whichever object carries them.
  return pino({
    level,
    base: { service: 'voice-agent' },
    redact: { paths: ['apiKey', '*.apiKey', 'token', '*.token', 'authorization', '*.authorization', 'headers.authorization', 'req.headers.authorization'], censor: '[redacted]' },
  });
}

/** A logger that drops everything: for unit tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
