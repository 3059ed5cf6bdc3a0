/**
 * Tool registry: the definitions the LLM sees plus their implementations.
 * Execution never throws: every failure becomes an `{"error": ...}` tool message so the model
 * (or the rule agent) can recover with a spoken apology instead of the call dying.
 */
import { isRecord } from '../../core/guards.js';
import { randomInt } from 'node:crypto';
import { checkConfirmation, type ConfirmationPolicy } from './confirm-gate.js';
import type { ChatMessage, ToolCall, ToolDefinition } from './types.js';
import { queueNames, type HandoverConfig } from '../../integration/handover.js';

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
  /** The conversation so far (the confirmation gate reads the caller's last answer from it). */
  messages?: readonly ChatMessage[];
  /** What the operator's systems told us about the caller (token claims, SIP headers): src/integration/context.ts. */
  caller?: Readonly<Record<string, string>>;
  /** The id of the tool call being run (set by the registry): HTTP tools derive their idempotency key from it. */
  toolCallId?: string;
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
  /**
   * A tool that changes something runs only after the caller's explicit yes ('always': bookings,
   * blocking a card), or after it when recognition was unsure ('when-unsure': hang up, transfer).
   */
  confirmation?: ConfirmationPolicy;
  /** Arguments masked wherever the call is recorded (events, the conversation, logs); only run() sees them. */
  sensitive?: string[];
  run(args: Record<string, unknown>, ctx: ToolContext): Promise<ToolOutput> | ToolOutput;
}

export interface Booking {
  confirmationId: string;
  callId: string;
  partySize?: number;
  date?: string;
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
  /**
   * Register the demo bank's verify_customer and block_card (a stand-in for a bank's own systems), with
   * this customer table or the built-in DEMO_CUSTOMERS.
   */
  bank?: { customers?: BankCustomer[] };
  /** Below this recognition confidence a hang-up or transfer needs a confirmation (default 0.5). */
  minConfidence?: number;
  /** The agent file's queues: transfer_to_human offers them to the model and refuses others. */
  handover?: HandoverConfig;
}

/** One customer of the demo bank that stands in for a bank's own systems (declared in ./tools-options.ts). */
export type { BankCustomer } from './tools-options.js';
import type { BankCustomer } from './tools-options.js';

export const DEMO_CUSTOMERS: readonly BankCustomer[] = [
  { customerNumber: '12345678', pin: '4321', name: 'Anna Smith', cards: [{ last4: '4111' }, { last4: '5522' }] },
  { customerNumber: '87654321', pin: '1234', name: 'Carlos García', cards: [{ last4: '9876' }] },
];

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
  private readonly customers: BankCustomer[];
  /** callId → the customer verified on that call. */
  private readonly verified = new Map<string, BankCustomer>();
  private readonly minConfidence: number | undefined;
  private readonly queues: string[];

  constructor(options: ToolRegistryOptions = {}) {
    this.queues = queueNames(options.handover);
    this.timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
    this.now = options.now ?? (() => new Date());
    const tz = options.timezone ?? process.env.TZ ?? Intl.DateTimeFormat().resolvedOptions().timeZone;
    if (!isValidTimeZone(tz)) throw new Error(`ToolRegistry: invalid IANA timezone "${tz}"`);
    this.timezone = tz;
    this.customers = (options.bank?.customers ?? DEMO_CUSTOMERS).map((c) => ({ ...c, cards: c.cards.map((k) => ({ ...k })) }));
    this.minConfidence = options.minConfidence;
    if (options.builtins !== false) {
      for (const tool of this.builtinTools()) this.register(tool);
    }
    if (options.bank) for (const tool of this.bankTools()) this.register(tool);
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

  /** Every registered tool runs here, in the service: a long one may be covered by the session's hold line. */
  mayHold(call: ToolCall): boolean {
    return this.tools.has(call.name);
  }

  definitions(): ToolDefinition[] {
    return [...this.tools.values()].map((t) => t.definition);
  }

  /** Bookings recorded by book_appointment (all calls, or one call). */
  bookings(callId?: string): readonly Booking[] {
    return callId === undefined ? [...this.bookingStore] : this.bookingStore.filter((b) => b.callId === callId);
  }

  /** The demo bank's cards as they stand (blocked or not). */
  bankCustomers(): readonly BankCustomer[] {
    return this.customers;
  }

  /** The call's arguments with the tool's sensitive ones masked: what events, logs and the conversation keep. */
  maskArguments(call: ToolCall): string {
    const sensitive = this.tools.get(call.name)?.sensitive;
    if (!sensitive || sensitive.length === 0) return call.arguments;
    try {
      const parsed: unknown = JSON.parse(call.arguments);
      if (!isRecord(parsed)) return call.arguments;
      const out: Record<string, unknown> = { ...parsed };
      for (const key of sensitive) if (out[key] !== undefined) out[key] = maskValue(String(out[key]));
      return JSON.stringify(out);
    } catch {
      return call.arguments;
    }
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
    // Where tools execute, whoever proposed the call: see confirm-gate.ts.
    if (tool.confirmation) {
      const decision = checkConfirmation(call, this.maskArguments(call), tool.confirmation, ctx.messages ?? [], { minConfidence: this.minConfidence });
      if (!decision.allow) return { content: JSON.stringify({ error: decision.error, message: decision.message }) };
    }

    const timeoutMs = tool.timeoutMs ?? this.timeoutMs;
    let timer: NodeJS.Timeout | undefined;
    let onAbort: (() => void) | undefined;
    try {
      const guard = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new ToolTimeoutError(timeoutMs)), timeoutMs);
        onAbort = () => reject(new ToolCancelledError());
        ctx.signal.addEventListener('abort', onAbort, { once: true });
      });
      const output = await Promise.race([Promise.resolve().then(() => tool.run(args, { ...ctx, toolCallId: call.id })), guard]);
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

  private bankTools(): ToolImplementation[] {
    return [
      {
        definition: {
          name: 'verify_customer',
          description: "Check the caller's customer number and PIN with the bank before anything else.",
          parameters: {
            type: 'object',
            properties: {
              customer_number: { type: 'string', description: 'The customer number, digits only.' },
              pin: { type: 'string', description: 'The telephone banking PIN, digits only.' },
            },
            required: ['customer_number', 'pin'],
          },
        },
        sensitive: ['customer_number', 'pin'],
        run: (args, ctx) => {
          const number = requiredDigits(args, 'customer_number');
          const pin = requiredDigits(args, 'pin');
          const customer = this.customers.find((c) => c.customerNumber === number && c.pin === pin);
          if (!customer) return { result: { ok: false } };
          this.verified.set(ctx.callId, customer);
          return { result: { ok: true, name: customer.name } };
        },
      },
      {
        definition: {
          name: 'block_card',
          description: "Block the verified caller's card with these last four digits (lost or stolen). Confirm with the caller first.",
          parameters: {
            type: 'object',
            properties: { card_last4: { type: 'string', description: 'Last four digits of the card.' } },
            required: ['card_last4'],
          },
        },
        confirmation: 'always',
        run: (args, ctx) => {
          const customer = this.verified.get(ctx.callId);
          if (!customer) throw new ToolArgumentError('the caller is not verified: call verify_customer first');
          const last4 = requiredDigits(args, 'card_last4');
          const card = customer.cards.find((c) => c.last4 === last4);
          if (!card) return { result: { ok: false, reason: 'no card with these digits' } };
          card.blocked = true;
          return { result: { ok: true, card_last4: last4, reference: `BLK${randomInt(100000, 1000000)}` } };
        },
      },
    ];
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
          description:
            'Book a table or an appointment. Ask the caller for missing fields, read the details back and call it only after they confirm.',
          parameters: {
            type: 'object',
            properties: {
              party_size: { type: 'integer', description: 'Number of people.' },
              date: { type: 'string', description: 'Requested day, ISO "2025-05-01".' },
              time: { type: 'string', description: 'Requested time, e.g. "19:30".' },
              name: { type: 'string', description: 'Name for the booking.' },
            },
            required: [],
          },
        },
        confirmation: 'always',
        run: (args, ctx) => {
          const partySize = optionalInteger(args, 'party_size');
          if (partySize !== undefined && (partySize < 1 || partySize > 100)) {
            throw new ToolArgumentError('party_size must be between 1 and 100');
          }
          const time = optionalString(args, 'time');
          const date = optionalString(args, 'date');
          const name = optionalString(args, 'name');
          const booking: Booking = {
            confirmationId: String(randomInt(100000, 1000000)),
            callId: ctx.callId,
            createdAt: this.now().toISOString(),
            ...(partySize !== undefined ? { partySize } : {}),
            ...(date !== undefined ? { date } : {}),
            ...(time !== undefined ? { time } : {}),
            ...(name !== undefined ? { name } : {}),
          };
          this.bookingStore.push(booking);
          return {
            result: {
              ok: true,
              confirmation_id: booking.confirmationId,
              ...(partySize !== undefined ? { party_size: partySize } : {}),
              ...(date !== undefined ? { date } : {}),
              ...(time !== undefined ? { time } : {}),
              ...(name !== undefined ? { name } : {}),
            },
          };
        },
      },
      {
        definition: {
          name: 'transfer_to_human',
          description: 'Transfer the caller to a human agent. Say a short sentence first. Pick the queue that fits what the caller needs.',
          parameters: {
            type: 'object',
            properties: {
              queue: { type: 'string', enum: this.queues, description: `Which team takes the call (default "${this.queues[0]}").` },
              reason: { type: 'string', description: 'A few words on why, for the person who takes the call.' },
            },
            required: [],
          },
        },
        confirmation: 'when-unsure',
        run: (args) => {
          const queue = optionalString(args, 'queue') ?? this.queues[0];
          if (!this.queues.includes(queue)) throw new ToolArgumentError(`unknown queue "${queue}" (known: ${this.queues.join(', ')})`);
          const reason = optionalString(args, 'reason');
          return { result: { ok: true, queue, ...(reason ? { reason: reason.slice(0, 120) } : {}) }, action: 'transfer' };
        },
      },
      {
        definition: {
          name: 'end_call',
          description: 'Hang up after saying goodbye.',
          parameters: { type: 'object', properties: {}, required: [] },
        },
        confirmation: 'when-unsure',
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

function requiredDigits(args: Record<string, unknown>, key: string): string {
  const v = args[key];
  const s = typeof v === 'number' ? String(v) : typeof v === 'string' ? v.replace(/[\s-]/g, '') : '';
  if (!/^\d+$/.test(s)) throw new ToolArgumentError(`${key} must be digits`);
  return s;
}

/** "12345678" → "****5678" for long numbers; short secrets (PINs) lose every digit. */
export function maskValue(value: string): string {
  const digits = value.replace(/\D/g, '');
  return digits.length >= 8 ? `****${digits.slice(-4)}` : '****';
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

function snippet(s: string): string {
  return s.length > 80 ? `${s.slice(0, 80)}…` : s;
}
