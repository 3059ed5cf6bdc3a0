/**
 * HTTP tools: tools an agent file declares (`tools` in the rules JSON, or the file `agent.tools.file` names)
 * that call the operator's own systems. One definition feeds the LLM's tool list (name, description, JSON-schema
 * parameters) and the rules agent's forms (a form whose tool is an HTTP tool sends its slots as the parameters of
 * the same names). Every request is signed (signing.ts) and carries an Idempotency-Key derived from the call and
 * the tool call's id: the rules agent reuses one id per form instance, so a retried request, or the caller's
 * second "yes" after a timeout, books once at a receiver that honours the key.
 */
import { validateHandover, type HandoverConfig } from './handover.js';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { Logger } from 'pino';
import type { ConfirmationPolicy } from '../providers/llm/confirm-gate.js';
import type { ToolContext, ToolImplementation, ToolOutput } from '../providers/llm/tools.js';
import type { JsonSchema } from '../providers/llm/types.js';
import { fill, isRecord, placeholders, valueAt } from '../core/template.js';
import { IDEMPOTENCY_HEADER, secretFromEnv, signatureHeaders } from './signing.js';

export type HttpMethod = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
const METHODS: readonly HttpMethod[] = ['GET', 'POST', 'PUT', 'PATCH', 'DELETE'];

export interface HttpToolSpec {
  name: string;
  description: string;
  /** JSON schema of the arguments (type "object"): the LLM's tool parameters and a form's slot names. */
  parameters: JsonSchema;
  url: string;
  /** Default POST; GET and DELETE send the arguments as query parameters. */
  method?: HttpMethod;
  /** Whole budget of one execution, retries included (default: toolDefaults.timeoutMs, else 4000). */
  timeoutMs?: number;
  /** Env var holding the HMAC secret (default: toolDefaults.secretEnv). */
  secretEnv?: string;
  /** Extra request headers; values may use {caller.x}, {args.x}, {call.id}. */
  headers?: Record<string, string>;
  /** Extra body fields from the call's context, e.g. { "customer_id": "{caller.customer_id}" }; absent values are left out. */
  send?: Record<string, string>;
  /** Result fields → dotted paths in the JSON response (default: the response object as it is). */
  result?: Record<string, string>;
  /** Retries after a connection error, 429 or 5xx, within timeoutMs (default 1). */
  retries?: number;
  /** 'always' for a tool that changes something: it runs only after the caller's explicit yes. */
  confirmation?: ConfirmationPolicy;
  /** Arguments masked in events, logs and the conversation. */
  sensitive?: string[];
}

export interface HttpToolDefaults {
  secretEnv?: string;
  timeoutMs?: number;
}

/** The `tools` / `toolDefaults` part of an agent file. */
export interface AgentToolsFile {
  tools?: HttpToolSpec[];
  toolDefaults?: HttpToolDefaults;
  /** Where transfers go and when a person is offered (src/integration/handover.ts). */
  handover?: HandoverConfig;
  /** The agent's own voice per language (a TTS voice name, e.g. `{ "en": "en-GB", "es": "es-ES" }`). */
  voices?: Record<string, string>;
}

const DEFAULT_TIMEOUT_MS = 4000;
const TOOL_NAME = /^[A-Za-z][A-Za-z0-9_-]{0,63}$/;
const ENV_NAME = /^[A-Z_][A-Z0-9_]*$/;
const TEMPLATE_REF = /^(caller\.[a-z][a-z0-9_]*|args\.[A-Za-z0-9_]+|call\.id)$/;
/** Headers a template may not set: the signature, the key and the framing are ours. */
const OWN_HEADERS = new Set(['x-agent-signature', 'x-agent-timestamp', 'idempotency-key', 'content-type', 'content-length', 'host']);

/** Checks an agent file's `tools` and `toolDefaults`; pushes `path: problem` lines. */
export function validateHttpTools(tools: unknown, defaults: unknown, err: (where: string, msg: string) => void): void {
  let defaultSecret = false;
  if (defaults !== undefined) {
    if (!isRecord(defaults)) err('toolDefaults', 'must be an object');
    else {
      if (defaults.secretEnv !== undefined && !(typeof defaults.secretEnv === 'string' && ENV_NAME.test(defaults.secretEnv))) err('toolDefaults.secretEnv', 'must name an environment variable (A-Z, 0-9, _)');
      else defaultSecret = defaults.secretEnv !== undefined;
      if (defaults.timeoutMs !== undefined && !validTimeout(defaults.timeoutMs)) err('toolDefaults.timeoutMs', 'must be an integer in [100, 60000]');
    }
  }
  if (tools === undefined) return;
  if (!Array.isArray(tools)) return err('tools', 'must be an array of HTTP tool declarations');
  const names = new Set<string>();
  tools.forEach((t: unknown, i: number) => {
    const at = `tools[${i}]`;
    if (!isRecord(t)) return err(at, 'must be an object');
    const where = typeof t.name === 'string' ? `${at} (${t.name})` : at;
    if (typeof t.name !== 'string' || !TOOL_NAME.test(t.name)) err(`${at}.name`, 'must be letters, digits, _ or - (at most 64), starting with a letter');
    else if (names.has(t.name)) err(where, 'duplicate tool name');
    else names.add(t.name);
    if (typeof t.description !== 'string' || t.description.trim() === '') err(`${where}.description`, 'must be a non-empty string');
    const params = t.parameters;
    if (!isRecord(params) || params.type !== 'object' || !isRecord(params.properties)) err(`${where}.parameters`, 'must be a JSON schema { "type": "object", "properties": {…} }');
    else if (params.required !== undefined && !(Array.isArray(params.required) && params.required.every((r) => typeof r === 'string' && isRecord(params.properties) && r in params.properties))) {
      err(`${where}.parameters.required`, 'must list names of properties');
    }
    let url: URL | undefined;
    try {
      url = typeof t.url === 'string' ? new URL(t.url) : undefined;
    } catch {
      url = undefined;
    }
    if (!url || (url.protocol !== 'http:' && url.protocol !== 'https:')) err(`${where}.url`, 'must be an http:// or https:// URL');
    if (t.method !== undefined && !METHODS.includes(t.method as HttpMethod)) err(`${where}.method`, `must be one of ${METHODS.join(', ')}`);
    if (t.timeoutMs !== undefined && !validTimeout(t.timeoutMs)) err(`${where}.timeoutMs`, 'must be an integer in [100, 60000]');
    if (t.secretEnv !== undefined && !(typeof t.secretEnv === 'string' && ENV_NAME.test(t.secretEnv))) err(`${where}.secretEnv`, 'must name an environment variable (A-Z, 0-9, _)');
    if (t.secretEnv === undefined && !defaultSecret) err(`${where}.secretEnv`, 'requests are signed: name the secret\'s environment variable here or in toolDefaults.secretEnv');
    for (const key of ['headers', 'send', 'result'] as const) {
      const v = t[key];
      if (v === undefined) continue;
      if (!isRecord(v) || !Object.values(v).every((s) => typeof s === 'string')) {
        err(`${where}.${key}`, 'must be an object of strings');
        continue;
      }
      for (const [k, s] of Object.entries(v) as [string, string][]) {
        if (key === 'headers' && (OWN_HEADERS.has(k.toLowerCase()) || !/^[A-Za-z0-9-]+$/.test(k))) err(`${where}.headers.${k}`, 'not a header a tool may set');
        if (key === 'result') {
          if (!/^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/.test(s)) err(`${where}.result.${k}`, 'must be a dotted path in the response, e.g. "booking.reference"');
          continue;
        }
        for (const ref of placeholders(s)) if (!TEMPLATE_REF.test(ref)) err(`${where}.${key}.${k}`, `unknown placeholder {${ref}} (use {caller.x}, {args.x} or {call.id})`);
      }
    }
    if (t.retries !== undefined && !(Number.isInteger(t.retries) && (t.retries as number) >= 0 && (t.retries as number) <= 5)) err(`${where}.retries`, 'must be an integer in [0, 5]');
    if (t.confirmation !== undefined && t.confirmation !== 'always' && t.confirmation !== 'when-unsure') err(`${where}.confirmation`, 'must be "always" or "when-unsure"');
    if (t.sensitive !== undefined && !(Array.isArray(t.sensitive) && t.sensitive.every((s) => typeof s === 'string'))) err(`${where}.sensitive`, 'must be an array of argument names');
  });
}

/** Property names of a tool's parameters (what a form's slots map onto). */
export function parameterNames(spec: HttpToolSpec): string[] {
  const props = spec.parameters.properties;
  return isRecord(props) ? Object.keys(props) : [];
}

export class HttpToolError extends Error {
  override readonly name = 'HttpToolError';
}

export interface HttpToolDeps {
  logger?: Logger;
  env?: NodeJS.ProcessEnv;
}

/** A ToolImplementation for the registry. Reads the secret now: a missing one stops start-up, it never sends unsigned. */
export function httpTool(spec: HttpToolSpec, defaults: HttpToolDefaults = {}, deps: HttpToolDeps = {}): ToolImplementation {
  const envName = spec.secretEnv ?? defaults.secretEnv;
  if (!envName) throw new Error(`tools.${spec.name}: no secretEnv (requests are signed)`);
  const secret = secretFromEnv(envName, `tools.${spec.name}.secretEnv`, deps.env);
  const timeoutMs = spec.timeoutMs ?? defaults.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const retries = spec.retries ?? 1;
  const method = spec.method ?? 'POST';
  const log = deps.logger?.child({ tool: spec.name });
  return {
    definition: { name: spec.name, description: spec.description, parameters: spec.parameters },
    // The request's own deadline fires first and says so; the registry's guard is the backstop.
    timeoutMs: timeoutMs + 1000,
    ...(spec.confirmation ? { confirmation: spec.confirmation } : {}),
    ...(spec.sensitive ? { sensitive: spec.sensitive } : {}),
    run: (args, ctx) => callOnce(spec, { secret, timeoutMs, retries, method, log }, args, ctx),
  };
}

/** Stable per call and tool call id: the same form instance (or a retried request) always sends the same key. */
export function idempotencyKey(callId: string, toolName: string, toolCallId: string): string {
  return createHash('sha256').update(`${callId}\u0000${toolName}\u0000${toolCallId}`).digest('hex').slice(0, 32);
}

async function callOnce(
  spec: HttpToolSpec,
  opts: { secret: string; timeoutMs: number; retries: number; method: HttpMethod; log: Logger | undefined },
  args: Record<string, unknown>,
  ctx: ToolContext,
): Promise<ToolOutput> {
  const vars = { caller: ctx.caller ?? {}, args, call: { id: ctx.callId } };
  const payload: Record<string, unknown> = { ...args };
  for (const [k, template] of Object.entries(spec.send ?? {})) {
    const v = fill(template, vars);
    if (v !== undefined) payload[k] = v;
  }
  const url = new URL(spec.url);
  const bodyless = opts.method === 'GET' || opts.method === 'DELETE';
  if (bodyless) for (const [k, v] of Object.entries(payload)) if (v !== undefined && v !== null) url.searchParams.set(k, String(v));
  // GET/DELETE sign the path and query: the receiver checks what it acts on.
  const body = bodyless ? '' : JSON.stringify(payload);
  const signed = bodyless ? `${url.pathname}${url.search}` : body;
  const key = idempotencyKey(ctx.callId, spec.name, ctx.toolCallId ?? '');
  const extra: Record<string, string> = {};
  for (const [k, template] of Object.entries(spec.headers ?? {})) {
    const v = fill(template, vars);
    if (v !== undefined) extra[k] = v;
  }
  const deadline = AbortSignal.timeout(opts.timeoutMs);
  const signal = AbortSignal.any([deadline, ctx.signal]);
  const started = performance.now();
  for (let attempt = 0; ; attempt++) {
    try {
      const res = await fetch(url, {
        method: opts.method,
        signal,
        // A redirect would carry the signed request (and the caller's data) somewhere the file never named.
        redirect: 'error',
        headers: {
          ...extra,
          ...(bodyless ? {} : { 'content-type': 'application/json' }),
          accept: 'application/json',
          [IDEMPOTENCY_HEADER]: key,
          'x-agent-call-id': ctx.callId,
          // Signed per attempt: a retry late in the budget must not carry an old timestamp.
          ...signatureHeaders(opts.secret, signed),
        },
        ...(bodyless ? {} : { body }),
      });
      const text = await boundedText(res, MAX_ANSWER_BYTES);
      if (res.ok) {
        opts.log?.info({ status: res.status, attempt, ms: Math.round(performance.now() - started) }, 'http tool answered');
        return { result: mapResult(spec, parseJson(text)) };
      }
      const retryable = res.status === 429 || res.status >= 500;
      opts.log?.warn({ status: res.status, attempt }, 'http tool refused');
      if (!retryable || attempt >= opts.retries) throw new HttpToolError(`the service answered HTTP ${res.status}`);
    } catch (err) {
      if (err instanceof HttpToolError) throw err;
      if (deadline.aborted) {
        opts.log?.warn({ timeoutMs: opts.timeoutMs, attempt }, 'http tool timed out');
        throw new HttpToolError(`no answer within ${opts.timeoutMs} ms`);
      }
      if (ctx.signal.aborted) throw new HttpToolError('cancelled');
      opts.log?.warn({ err: err instanceof Error ? err.message : String(err), attempt }, 'http tool unreachable');
      if (attempt >= opts.retries) throw new HttpToolError('the service could not be reached');
    }
    await backoff(100 * 2 ** attempt, signal);
  }
}

/** An answer bigger than this is refused: a tool result fills a spoken line, not a download. */
const MAX_ANSWER_BYTES = 256 * 1024;

async function boundedText(res: Response, max: number): Promise<string> {
  if (!res.body) return '';
  const reader = res.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > max) {
      await reader.cancel().catch(() => undefined);
      throw new HttpToolError(`the answer is larger than ${max} bytes`);
    }
    chunks.push(value);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function backoff(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms);
    signal.addEventListener('abort', () => { clearTimeout(timer); resolve(); }, { once: true });
  });
}

function mapResult(spec: HttpToolSpec, body: unknown): Record<string, unknown> {
  const obj = isRecord(body) ? body : body === undefined ? { ok: true } : { ok: true, value: body };
  if (!spec.result) return obj;
  const out: Record<string, unknown> = {};
  for (const [k, path] of Object.entries(spec.result)) {
    const v = valueAt(obj, path);
    if (v !== undefined) out[k] = v;
  }
  // ok:false is the receiver's "no" (slot taken, wrong PIN): the form says its failure line, so keep it.
  if (obj.ok === false && out.ok === undefined) out.ok = false;
  return out;
}

function parseJson(text: string): unknown {
  if (text.trim() === '') return undefined;
  try {
    return JSON.parse(text);
  } catch {
    return text.slice(0, 200);
  }
}

function validTimeout(v: unknown): boolean {
  return Number.isInteger(v) && (v as number) >= 100 && (v as number) <= 60_000;
}

/** The `tools` and `toolDefaults` of an agent file (the rules file, or any JSON holding them), validated. */
export function loadAgentTools(file: string): AgentToolsFile {
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: cannot read the agent file's tools (${e instanceof Error ? e.message : String(e)})`);
  }
  return agentToolsOfJson(raw, file);
}

/** The HTTP tools of an agent file already parsed (`source` names it in errors). */
export function agentToolsOfJson(raw: unknown, source: string): AgentToolsFile {
  if (!isRecord(raw)) throw new Error(`${source}: expected a JSON object`);
  const problems: string[] = [];
  validateHttpTools(raw.tools, raw.toolDefaults, (where, msg) => problems.push(`${where}: ${msg}`));
  validateHandover(raw.handover, (where, msg) => problems.push(`${where}: ${msg}`));
  if (raw.voices !== undefined && !(isRecord(raw.voices) && Object.entries(raw.voices).every(([k, v]) => /^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$/.test(k) && typeof v === 'string' && v.length > 0 && v.length <= 100))) {
    problems.push('voices: must map language tags to voice names, e.g. { "en": "en-GB" }');
  }
  if (problems.length > 0) throw new Error(`${source}: invalid tools:\n  - ${problems.join('\n  - ')}`);
  return {
    tools: raw.tools as HttpToolSpec[] | undefined,
    toolDefaults: raw.toolDefaults as HttpToolDefaults | undefined,
    ...(raw.handover !== undefined ? { handover: raw.handover as HandoverConfig } : {}),
    ...(raw.voices !== undefined ? { voices: raw.voices as Record<string, string> } : {}),
  };
}
