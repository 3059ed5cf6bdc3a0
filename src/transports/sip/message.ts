/**
 * SIP messages (RFC 3261 §7, §20, §25): a strict parser for what arrives on the wire and a serialiser for what
 * we send. No npm SIP stack fitted (the `sip` package is unmaintained since 2019, drachtio needs its own
 * server), so this is ours; RFC 4475's torture messages are its test fixtures.
 */

/** A message we refuse: `status` is the response owed to a request (400, 505, 513…). */
export class SipParseError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = 'SipParseError';
  }
}

export interface SipHeader {
  /** Canonical lower-case long name ("via", "call-id"); compact forms are expanded. */
  name: string;
  value: string;
}

interface SipMessageBase {
  headers: SipHeader[];
  body: Buffer;
}

export interface SipRequest extends SipMessageBase {
  kind: 'request';
  method: string;
  uri: string;
}

export interface SipResponse extends SipMessageBase {
  kind: 'response';
  status: number;
  reason: string;
}

export type SipMessage = SipRequest | SipResponse;

const COMPACT: Record<string, string> = {
  i: 'call-id',
  m: 'contact',
  e: 'content-encoding',
  l: 'content-length',
  c: 'content-type',
  f: 'from',
  s: 'subject',
  k: 'supported',
  t: 'to',
  v: 'via',
  o: 'event',
  r: 'refer-to',
  b: 'referred-by',
  x: 'session-expires',
  u: 'allow-events',
  a: 'accept-contact',
  j: 'reject-contact',
  d: 'request-disposition',
  y: 'identity',
  n: 'identity-info',
};

/** Canonical capitalisation for headers we write. */
const CANONICAL: Record<string, string> = {
  'call-id': 'Call-ID',
  cseq: 'CSeq',
  'www-authenticate': 'WWW-Authenticate',
  'record-route': 'Record-Route',
  'max-forwards': 'Max-Forwards',
};

/** Headers that may not be repeated (RFC 3261 §7.3: only comma-list headers may). */
const SINGLE = new Set(['call-id', 'cseq', 'from', 'to', 'content-length', 'max-forwards', 'content-type']);

const TOKEN = /^[A-Za-z0-9\-.!%*_+`'~]+$/;
const SIP_VERSION = 'SIP/2.0';

export function canonicalHeaderName(name: string): string {
  const lower = name.toLowerCase();
  return COMPACT[lower] ?? lower;
}

function displayHeaderName(name: string): string {
  return CANONICAL[name] ?? name.replace(/(^|-)([a-z])/g, (_m, dash: string, c: string) => dash + c.toUpperCase());
}

export interface ParseLimits {
  /** Whole message (head + body) above this → 513. */
  maxMessageBytes: number;
  /** Most header lines accepted. */
  maxHeaders: number;
}

export const DEFAULT_LIMITS: ParseLimits = { maxMessageBytes: 16 * 1024, maxHeaders: 128 };

/** Where the header section ends: index of the CRLFCRLF (or bare LFLF), and the separator length. */
export function findHeadEnd(buf: Buffer, from = 0): { index: number; sepLength: number } | null {
  const crlf = buf.indexOf('\r\n\r\n', from, 'latin1');
  const lf = buf.indexOf('\n\n', from, 'latin1');
  if (crlf < 0 && lf < 0) return null;
  if (crlf >= 0 && (lf < 0 || crlf < lf)) return { index: crlf, sepLength: 4 };
  return { index: lf, sepLength: 2 };
}

/**
 * Parse one datagram (UDP) or one framed message (TCP, body already cut to Content-Length). Throws
 * SipParseError; never anything else for any input.
 */
export function parseSipMessage(buf: Buffer, limits: ParseLimits = DEFAULT_LIMITS, stream = false): SipMessage {
  if (buf.length > limits.maxMessageBytes) throw new SipParseError(513, `message of ${buf.length} bytes is too large`);
  const end = findHeadEnd(buf);
  if (!end) throw new SipParseError(400, 'header section not terminated by an empty line');
  const head = buf.subarray(0, end.index).toString('utf8');
  const rawBody = buf.subarray(end.index + end.sepLength);
  const lines = head.split(/\r?\n/);
  // A lone CR is no line end and no legal header character: it could smuggle a line into a response.
  if (lines.some((l) => l.includes('\r'))) throw new SipParseError(400, 'bare CR in the header section');
  const startLine = lines.shift() ?? '';
  const headers = parseHeaderLines(lines, limits);
  const message = parseStartLine(startLine, headers);
  const lengths = headers.filter((h) => h.name === 'content-length');
  let body = rawBody;
  if (lengths.length > 0) {
    const value = lengths[0].value.trim();
    if (!/^\d{1,9}$/.test(value)) throw new SipParseError(400, `invalid Content-Length "${value.slice(0, 20)}"`);
    const length = Number(value);
    if (length > rawBody.length) throw new SipParseError(400, `Content-Length ${length} exceeds the ${rawBody.length} body bytes received`);
    // Bytes past Content-Length on a datagram are discarded (RFC 3261 §18.3).
    body = rawBody.subarray(0, length);
  } else if (stream) {
    throw new SipParseError(400, 'Content-Length is required on stream transports');
  }
  message.body = Buffer.from(body);
  return message;
}

function parseHeaderLines(lines: string[], limits: ParseLimits): SipHeader[] {
  const headers: SipHeader[] = [];
  for (const line of lines) {
    if (line.length === 0) continue;
    if (line[0] === ' ' || line[0] === '\t') {
      // Folded continuation (LWS): joins the previous header's value with one space.
      const last = headers[headers.length - 1];
      if (!last) throw new SipParseError(400, 'continuation line before any header');
      last.value = `${last.value} ${line.trim()}`.trim();
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) throw new SipParseError(400, `malformed header line "${line.slice(0, 40)}"`);
    const rawName = line.slice(0, colon).trim();
    if (!TOKEN.test(rawName)) throw new SipParseError(400, `invalid header name "${rawName.slice(0, 40)}"`);
    headers.push({ name: canonicalHeaderName(rawName), value: line.slice(colon + 1).trim() });
    if (headers.length > limits.maxHeaders) throw new SipParseError(513, `more than ${limits.maxHeaders} headers`);
  }
  for (const name of SINGLE) {
    if (headers.filter((h) => h.name === name).length > 1) throw new SipParseError(400, `header ${displayHeaderName(name)} appears more than once`);
  }
  return headers;
}

function parseStartLine(line: string, headers: SipHeader[]): SipMessage {
  if (line.startsWith('SIP/')) {
    const m = /^SIP\/(\d+\.\d+) (\d{3}) ?(.*)$/.exec(line);
    if (!m) throw new SipParseError(400, `malformed status line "${line.slice(0, 60)}"`);
    if (m[1] !== '2.0') throw new SipParseError(505, `unsupported SIP version ${m[1]}`);
    const status = Number(m[2]);
    if (status < 100 || status > 699) throw new SipParseError(400, `status code ${status} out of range`);
    return { kind: 'response', status, reason: m[3], headers, body: Buffer.alloc(0) };
  }
  // Request-Line = Method SP Request-URI SP SIP-Version: exactly single spaces, nothing trailing.
  const parts = line.split(' ');
  if (parts.length !== 3) throw new SipParseError(400, `malformed request line "${line.slice(0, 60)}"`);
  const [method, uri, version] = parts;
  if (!TOKEN.test(method)) throw new SipParseError(400, `invalid method "${method.slice(0, 40)}"`);
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:[^\s<>"]+$/.test(uri)) throw new SipParseError(400, `invalid Request-URI "${uri.slice(0, 60)}"`);
  const v = /^SIP\/(\d+\.\d+)$/.exec(version);
  if (!v) throw new SipParseError(400, `invalid SIP version "${version.slice(0, 20)}"`);
  if (v[1] !== '2.0') throw new SipParseError(505, `unsupported SIP version ${v[1]}`);
  return { kind: 'request', method, uri, headers, body: Buffer.alloc(0) };
}

export function header(message: SipMessage, name: string): string | undefined {
  const wanted = canonicalHeaderName(name);
  return message.headers.find((h) => h.name === wanted)?.value;
}

/** Every value of a comma-list header, across repeated header lines. */
export function headerList(message: SipMessage, name: string): string[] {
  const wanted = canonicalHeaderName(name);
  const out: string[] = [];
  for (const h of message.headers) if (h.name === wanted) out.push(...splitList(h.value));
  return out;
}

/** Split on commas outside quotes and angle brackets. */
export function splitList(value: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let quoted = false;
  let start = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === '<') depth++;
    else if (c === '>') depth = Math.max(0, depth - 1);
    else if (c === ',' && depth === 0) {
      out.push(value.slice(start, i).trim());
      start = i + 1;
    }
  }
  if (quoted) throw new SipParseError(400, 'unbalanced quotes in header value');
  out.push(value.slice(start).trim());
  return out.filter((v) => v.length > 0);
}

/** `;name=value` parameters, names lower-cased; a valueless parameter maps to ''. */
export function parseParams(text: string): Map<string, string> {
  const params = new Map<string, string>();
  for (const part of text.split(';')) {
    const p = part.trim();
    if (!p) continue;
    const eq = p.indexOf('=');
    const name = (eq < 0 ? p : p.slice(0, eq)).trim().toLowerCase();
    let value = eq < 0 ? '' : p.slice(eq + 1).trim();
    if (value.startsWith('"') && value.endsWith('"') && value.length >= 2) value = value.slice(1, -1);
    params.set(name, value);
  }
  return params;
}

export interface Via {
  transport: string;
  host: string;
  port: number | null;
  params: Map<string, string>;
  raw: string;
}

export function parseVia(raw: string): Via {
  const m = /^SIP\s*\/\s*2\.0\s*\/\s*([A-Za-z0-9-]+)\s+(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?:\s*:\s*(\d{1,5}))?\s*(;.*)?$/.exec(raw.trim());
  if (!m) throw new SipParseError(400, `malformed Via "${raw.slice(0, 60)}"`);
  const port = m[3] === undefined ? null : Number(m[3]);
  if (port !== null && (port < 1 || port > 65535)) throw new SipParseError(400, `Via port ${port} out of range`);
  return { transport: m[1].toUpperCase(), host: m[2], port, params: parseParams(m[4] ?? ''), raw: raw.trim() };
}

export interface NameAddr {
  display: string;
  uri: string;
  params: Map<string, string>;
}

/** From / To / Contact / Route values: `"Name" <uri>;params` or `uri;params` (addr-spec). */
export function parseNameAddr(raw: string): NameAddr {
  const text = raw.trim();
  const lt = findUnquoted(text, '<');
  if (lt >= 0) {
    const gt = text.indexOf('>', lt);
    if (gt < 0) throw new SipParseError(400, 'unterminated <uri>');
    const display = text.slice(0, lt).trim().replace(/^"(.*)"$/s, '$1');
    const uri = text.slice(lt + 1, gt).trim();
    if (!/^[A-Za-z][A-Za-z0-9+.-]*:\S+$/.test(uri)) throw new SipParseError(400, `invalid URI "${uri.slice(0, 60)}"`);
    return { display, uri, params: parseParams(text.slice(gt + 1)) };
  }
  if (text.includes('"')) throw new SipParseError(400, 'display name without <uri>');
  // In addr-spec form, parameters after the URI belong to the header, not the URI (RFC 3261 §20.10).
  const semi = text.indexOf(';');
  const uri = (semi < 0 ? text : text.slice(0, semi)).trim();
  if (!/^[A-Za-z][A-Za-z0-9+.-]*:[^\s]+$/.test(uri)) throw new SipParseError(400, `invalid URI "${uri.slice(0, 60)}"`);
  return { display: '', uri, params: parseParams(semi < 0 ? '' : text.slice(semi)) };
}

function findUnquoted(text: string, ch: string): number {
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '\\') i++;
      else if (c === '"') quoted = false;
    } else if (c === '"') quoted = true;
    else if (c === ch) return i;
  }
  if (quoted) throw new SipParseError(400, 'unbalanced quotes');
  return -1;
}

export interface CSeq {
  seq: number;
  method: string;
}

export function parseCSeq(raw: string): CSeq {
  const m = /^(\d{1,10})\s+([A-Za-z0-9\-.!%*_+`'~]+)$/.exec(raw.trim());
  if (!m) throw new SipParseError(400, `malformed CSeq "${raw.slice(0, 40)}"`);
  const seq = Number(m[1]);
  if (seq > 2 ** 31 - 1) throw new SipParseError(400, 'CSeq number exceeds 2^31-1');
  return { seq, method: m[2] };
}

/** host and port of a sip: / sips: URI, for sending requests to a Contact. */
export function uriHostPort(uri: string): { host: string; port: number | null; params: Map<string, string> } | null {
  const m = /^sips?:(?:[^@]*@)?(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::(\d{1,5}))?(;[^?]*)?/i.exec(uri);
  if (!m) return null;
  return { host: m[1].replace(/^\[|\]$/g, ''), port: m[2] ? Number(m[2]) : null, params: parseParams(m[3] ?? '') };
}

/** The request's essentials, validated: what every handler needs before it does anything. */
export interface RequestEssentials {
  vias: Via[];
  from: NameAddr;
  to: NameAddr;
  callId: string;
  cseq: CSeq;
  maxForwards: number | null;
}

export function requestEssentials(req: SipRequest): RequestEssentials {
  const viaValues = headerList(req, 'via');
  if (viaValues.length === 0) throw new SipParseError(400, 'missing Via');
  const fromRaw = header(req, 'from');
  const toRaw = header(req, 'to');
  const callId = header(req, 'call-id');
  const cseqRaw = header(req, 'cseq');
  if (!fromRaw || !toRaw || !callId || !cseqRaw) throw new SipParseError(400, 'missing one of From, To, Call-ID, CSeq');
  if (/\s/.test(callId)) throw new SipParseError(400, 'Call-ID contains whitespace');
  const cseq = parseCSeq(cseqRaw);
  if (cseq.method !== req.method) throw new SipParseError(400, `CSeq method ${cseq.method} does not match ${req.method}`);
  const mfRaw = header(req, 'max-forwards');
  let maxForwards: number | null = null;
  if (mfRaw !== undefined) {
    // Leading zeros are legal ("0068", RFC 4475 wsinv); values above 255 are not.
    if (!/^\d{1,10}$/.test(mfRaw.trim()) || Number(mfRaw.trim()) > 255) throw new SipParseError(400, 'malformed Max-Forwards');
    maxForwards = Number(mfRaw.trim());
  }
  return { vias: viaValues.map(parseVia), from: parseNameAddr(fromRaw), to: parseNameAddr(toRaw), callId, cseq, maxForwards };
}

/** Serialise. Content-Length is always written from the body. */
export function serializeSipMessage(message: SipMessage): Buffer {
  const start = message.kind === 'request' ? `${message.method} ${message.uri} ${SIP_VERSION}` : `${SIP_VERSION} ${message.status} ${message.reason}`;
  const lines = [start];
  for (const h of message.headers) {
    if (h.name === 'content-length') continue;
    if (/[\r\n]/.test(h.value)) throw new Error(`header ${h.name} value contains a line break`);
    lines.push(`${displayHeaderName(h.name)}: ${h.value}`);
  }
  lines.push(`Content-Length: ${message.body.length}`);
  return Buffer.concat([Buffer.from(lines.join('\r\n') + '\r\n\r\n', 'utf8'), message.body]);
}

export const REASONS: Record<number, string> = {
  100: 'Trying',
  180: 'Ringing',
  200: 'OK',
  400: 'Bad Request',
  401: 'Unauthorized',
  403: 'Forbidden',
  404: 'Not Found',
  405: 'Method Not Allowed',
  408: 'Request Timeout',
  415: 'Unsupported Media Type',
  420: 'Bad Extension',
  481: 'Call/Transaction Does Not Exist',
  482: 'Loop Detected',
  483: 'Too Many Hops',
  486: 'Busy Here',
  487: 'Request Terminated',
  488: 'Not Acceptable Here',
  491: 'Request Pending',
  500: 'Server Internal Error',
  501: 'Not Implemented',
  503: 'Service Unavailable',
  505: 'Version Not Supported',
  513: 'Message Too Large',
};

/**
 * A response to `req` (RFC 3261 §8.2.6): Via, From, To, Call-ID and CSeq copied; `toTag` added to To when the
 * request's To has none. Header values the parser did not understand are copied verbatim.
 */
export function buildResponse(req: SipRequest, status: number, options: { toTag?: string; headers?: SipHeader[]; body?: Buffer; reason?: string; vias?: string[] } = {}): SipResponse {
  const headers: SipHeader[] = [];
  const vias = options.vias ?? headerList(req, 'via');
  for (const v of vias) headers.push({ name: 'via', value: v });
  for (const name of ['from', 'to', 'call-id', 'cseq']) {
    let value = header(req, name);
    if (value === undefined) continue;
    if (name === 'to' && options.toTag && !/;\s*tag=/i.test(value)) value = `${value};tag=${options.toTag}`;
    headers.push({ name, value });
  }
  headers.push(...(options.headers ?? []));
  return { kind: 'response', status, reason: options.reason ?? REASONS[status] ?? 'Unknown', headers, body: options.body ?? Buffer.alloc(0) };
}

/**
 * Frames a TCP byte stream into messages by Content-Length (RFC 3261 §18.3). Throws SipParseError when the
 * stream can no longer be framed (the connection must then be closed after the error response).
 */
export class SipStreamFramer {
  private buffer: Buffer = Buffer.alloc(0);
  /** CR/LF bytes seen between messages (a ping may arrive split across reads). */
  private crlfRun = 0;

  constructor(private readonly limits: ParseLimits = DEFAULT_LIMITS) {}

  /** Bytes in; complete messages (raw, head + body) out. `keepalive` counts CRLFCRLF pings (RFC 5626). */
  push(chunk: Buffer): { messages: Buffer[]; keepalives: number } {
    this.buffer = this.buffer.length === 0 ? chunk : Buffer.concat([this.buffer, chunk]);
    const messages: Buffer[] = [];
    let keepalives = 0;
    for (;;) {
      // Skip CRLFs between messages; a double CRLF on its own is a keep-alive ping.
      let skip = 0;
      while (skip < this.buffer.length && (this.buffer[skip] === 0x0d || this.buffer[skip] === 0x0a)) {
        skip++;
        if (++this.crlfRun === 4) {
          keepalives++;
          this.crlfRun = 0;
        }
      }
      if (skip > 0) this.buffer = this.buffer.subarray(skip);
      if (this.buffer.length === 0) break;
      this.crlfRun = 0;
      const end = findHeadEnd(this.buffer);
      if (!end) {
        if (this.buffer.length > this.limits.maxMessageBytes) throw new SipParseError(513, 'header section too large');
        break;
      }
      const head = this.buffer.subarray(0, end.index).toString('latin1');
      const m = /(?:^|\r?\n)(?:content-length|l)[ \t]*:[ \t]*([^\r\n]*)/i.exec(head);
      if (!m) throw new SipParseError(400, 'Content-Length is required on stream transports');
      const value = m[1].trim();
      if (!/^\d{1,9}$/.test(value)) throw new SipParseError(400, `invalid Content-Length "${value.slice(0, 20)}"`);
      const total = end.index + end.sepLength + Number(value);
      if (total > this.limits.maxMessageBytes) throw new SipParseError(513, `message of ${total} bytes is too large`);
      if (this.buffer.length < total) break;
      messages.push(Buffer.from(this.buffer.subarray(0, total)));
      this.buffer = this.buffer.subarray(total);
    }
    return { messages, keepalives };
  }
}
