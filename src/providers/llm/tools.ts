/**
 * Tool registry: the definitions the LLM sees plus their implementations.
 * Execution never throws: every failure becomes an `{"error": ...}` tool message so the model
 * (or the rule agent) can recover with a spoken apology instead of the call dying.
 */
import { randomInt } from 'node:crypto';
import type { ToolCall, ToolDefinition } from './types.js';

export type ToolAction = 'hangup' | 'transfer';

export interface ToolResult {
  /** JSON string for the `tool` message content. */
  content: string;
  /** Side effect the session must perform after the turn (speak first, then act). */
  action?: ToolAction;
}

export interface ToolContext {
  callId: string;
  signal: AbortSignal;
}

/** What an implementation returns; the registry serialises it. */
export interface ToolOutput {
  result: Record<string, unknown>;
  action?: ToolAction;
}

export interface ToolImplementation {
  definition: ToolDefinition;
  /** Overrides the registry-wide timeout. */
  timeoutMs?: number;
  run(args: Record<string, unknown>, ctx: ToolContext): Promise<ToolOutput> | ToolOutput;
}

export interface Booking {
  confirmationId: string;
  callId: string;
  partySize?: number;
  time?: string;
  name?: string;
  createdAt: string;
}

export interface ToolRegistryOptions {
  /** IANA zone for get_current_time when the model gives none (default: $TZ, else the system zone). */
  timezone?: string;
  /** Per tool call (default 5000 ms). */
  timeoutMs?: number;
  /** Register get_current_time, book_appointment, transfer_to_human, end_call (default true). */
  builtins?: boolean;
  /** Clock injection for tests. */
  now?: () => Date;
}

/** Error thrown inside an implementation for bad arguments: reported to the model verbatim. */
export class ToolArgumentError extends Error {
  override readonly name = 'ToolArgumentError';
}

const DEFAULT_TIMEOUT_MS = 5000;

export class ToolRegistry {
  private readonly tools = new Map<string, ToolImplementation>();
  private readonly timeoutMs: number;
  private readonly timezone: string;
  private readonly now: () => Date;
  private readonly bookingStore: Booking[] = [];

  constructor(options: ToolRegistryOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.now = options.now ?? (() => new Date());
    const tz = options.timezone ?? process.env.TZ ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!isValidTimeZone(tz)) throw new Error(`ToolRegistry: invalid IANA timezone "${tz}"`);
    this.timezone = tz;
    if (options.builtins !== false) {
      for (const tool of this.builtinTools()) this.register(tool);
    }
  }

  register(tool: ToolImplementation): void {
    if (this.tools.has(tool.definition.name)) {
      throw new Error(`ToolRegistry: tool "${tool.definition.name}" is already registered`);
    }
    this.tools.set(tool.definition.name, tool);
  }

  has(name: string): boolean {
    return this.tools.has(name);
  }

  definitions(): ToolDefinition[] {
    return [...this.tools.values()].map((t) => t.definition);
  }

  /** Bookings recorded by book_appointment (all calls, or one call). */
  bookings(callId?: string): readonly Booking[] {
    return callId === undefined ? [...this.bookingStore] : this.bookingStore.filter((b) => b.callId === callId);
  }

  async execute(call: ToolCall, ctx: ToolContext): Promise<ToolResult> {
    const tool = this.tools.get(call.name);
    if (!tool) return errorResult(`unknown tool "${call.name}"`);

    let args: Record<string, unknown>;
    try {
      const parsed: unknown = call.arguments.trim() === '' ? {} : JSON.parse(call.arguments);
      if (!isRecord(parsed)) return errorResult('arguments must be a JSON object');
      args = parsed;
    } catch {
      return errorResult(`arguments are not valid JSON: ${snippet(call.arguments)}`);
    }
    if (ctx.signal.aborted) return errorResult('cancelled');

    const timeoutMs = tool.timeoutMs ?? this.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const guard = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ToolTimeoutError(timeoutMs)), timeoutMs);
        onAbort = () => reject(new ToolCancelledError());
        ctx.signal.addEventListener('abort', onAbort, { once: true });
      });
      const output = await Promise.race([Promise.resolve().then(() => tool.run(args, ctx)), guard]);
      return { content: JSON.stringify(output.result), ...(output.action ? { action: output.action } : {}) };
    } catch (err) {
      if (err instanceof ToolTimeoutError) return errorResult(`tool "${call.name}" timed out after ${timeoutMs} ms`);
      if (err instanceof ToolCancelledError) return errorResult('cancelled');
      if (err instanceof ToolArgumentError) return errorResult(err.message);
      return errorResult(`tool "${call.name}" failed: ${err instanceof Error ? err.message : String(err)}`);
    } finally {
      if (timer) clearTimeout(timer);
      if (onAbort) ctx.signal.removeEventListener('abort', onAbort);
    }
  }

  private builtinTools(): ToolImplementation[] {
    return [
      {
        definition: {
          name: 'get_current_time',
          description: 'Get the current local date and time.',
          parameters: {
            type: 'object',
            properties: {
              timezone: { type: 'string', description: 'IANA timezone, e.g. "Europe/Paris". Optional.' },
            },
            required: [],
          },
        },
        run: (args) => {
          const tz = optionalString(args, 'timezone') ?? this.timezone;
          if (!isValidTimeZone(tz)) throw new ToolArgumentError(`unknown timezone "${tz}"`);
          return { result: describeTime(this.now(), tz) };
        },
      },
      {
        definition: {
          name: 'book_appointment',
          description: 'Book a table or an appointment. All fields optional; ask the caller for missing ones if needed.',
          parameters: {
            type: 'object',
            properties: {
              party_size: { type: 'integer', description: 'Number of people.' },
              time: { type: 'string', description: 'Requested time, e.g. "19:30".' },
              name: { type: 'string', description: 'Name for the booking.' },
            },
            required: [],
          },
        },
        run: (args, ctx) => {
          const partySize = optionalInteger(args, 'party_size');
          if (partySize !== undefined && (partySize < 1 || partySize > 100)) {
            throw new ToolArgumentError('party_size must be between 1 and 100');
          }
          const time = optionalString(args, 'time');
          const name = optionalString(args, 'name');
          const booking: Booking = {
            confirmationId: String(randomInt(100000, 1000000)),
            callId: ctx.callId,
            createdAt: this.now().toISOString(),
            ...(partySize !== undefined ? { partySize } : {}),
            ...(time !== undefined ? { time } : {}),
            ...(name !== undefined ? { name } : {}),
          };
          this.bookingStore.push(booking);
          return {
            result: {
              ok: true,
              confirmation_id: booking.confirmationId,
              ...(partySize !== undefined ? { party_size: partySize } : {}),
              ...(time !== undefined ? { time } : {}),
              ...(name !== undefined ? { name } : {}),
            },
          };
        },
      },
      {
        definition: {
          name: 'transfer_to_human',
          description: 'Transfer the caller to a human agent. Say a short sentence first.',
          parameters: { type: 'object', properties: {}, required: [] },
        },
        run: () => ({ result: { ok: true }, action: 'transfer' }),
      },
      {
        definition: {
          name: 'end_call',
          description: 'Hang up after saying goodbye.',
          parameters: { type: 'object', properties: {}, required: [] },
        },
        run: () => ({ result: { ok: true }, action: 'hangup' }),
      },
    ];
  }
}

/** ISO with the zone's offset, plus spoken-friendly 12 h and 24 h strings (the reply picks per language). */
export function describeTime(date: Date, timeZone: string): Record<string, string> {
  const parts = new Intl.DateTimeFormat('en-US', {
    timeZone,
    year: 'numeric',
    month: '2-digit',
    day: '2-digit',
    hour: '2-digit',
    minute: '2-digit',
    second: '2-digit',
    hourCycle: 'h23',
    weekday: 'long',
  }).formatToParts(date);
  const get = (type: Intl.DateTimeFormatPartTypes): string => parts.find((p) => p.type === type)?.value ?? '';
  const [y, mo, d, h, mi, s] = [get('year'), get('month'), get('day'), get('hour'), get('minute'), get('second')];
  const localAsUtc = Date.UTC(Number(y), Number(mo) - 1, Number(d), Number(h), Number(mi), Number(s));
  const offsetMin = Math.round((localAsUtc - Math.floor(date.getTime() / 1000) * 1000) / 60000);
  const sign = offsetMin < 0 ? '-' : '+';
  const abs = Math.abs(offsetMin);
  const offset = `${sign}${pad2(Math.floor(abs / 60))}:${pad2(abs % 60)}`;
  const hour = Number(h);
  const hour12 = hour % 12 === 0 ? 12 : hour % 12;
  return {
    iso: `${y}-${mo}-${d}T${h}:${mi}:${s}${offset}`,
    time: `${hour12}:${mi} ${hour < 12 ? 'AM' : 'PM'}`,
    time_24h: `${h}:${mi}`,
    date: `${y}-${mo}-${d}`,
    weekday: get('weekday'),
    timezone: timeZone,
  };
}

export function isValidTimeZone(tz: string): boolean {
  try {
    new Intl.DateTimeFormat('en-US', { timeZone: tz });
    return true;
  } catch {
    return false;
  }
}

class ToolTimeoutError extends Error {
  constructor(ms: number) {
    super(`timed out after ${ms} ms`);
  }
}
class ToolCancelledError extends Error {}

function errorResult(message: string): ToolResult {
  return { content: JSON.stringify({ error: message }) };
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

function optionalString(args: Record<string, unknown>, key: string): string | undefined {
  const v = args[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ToolArgumentError(`${key} must be a string`);
  return v;
}

function optionalInteger(args: Record<string, unknown>, key: string): number | undefined {
  const v = args[key];
  if (v === undefined || v === null || v === '') return undefined;
  // Models often quote numbers: accept "4".
  const n = typeof v === 'string' ? Number(v) : v;
  if (typeof n !== 'number' || !Number.isInteger(n)) throw new ToolArgumentError(`${key} must be an integer`);
  return n;
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

function snippet(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}
