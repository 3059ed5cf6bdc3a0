import { pino, type Logger } from 'pino';

export type { Logger };

/** The process logger. Every call gets a child logger carrying its `callId` (see Session). */
export function createLogger(level: string = process.env.LOG_LEVEL ?? 'info'): Logger {
  return pino({ level, base: { service: 'voice-agent' } });
}

/** A logger that drops everything: for unit tests that do not look at logs. */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
