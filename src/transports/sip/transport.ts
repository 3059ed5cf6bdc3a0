/**
 * SIP transport layer (RFC 3261 §18): the UDP socket and TCP listener on one port, TCP stream framing, the
 * allow-list at the door, parsing, and the answers to what cannot be parsed. Parsed requests and responses go
 * up to the handler (the UAS); nothing here knows about transactions or calls.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import type { BlockList } from 'node:net';
import type { Logger } from 'pino';
import { isAllowed } from '../../core/networks.js';
import {
  SipParseError,
  SipStreamFramer,
  buildResponse,
  canonicalHeaderName,
  findHeadEnd,
  headerList,
  parseSipMessage,
  requestEssentials,
  serializeSipMessage,
  type ParseLimits,
  type RequestEssentials,
  type SipHeader,
  type SipRequest,
  type SipResponse,
} from './message.js';

const MAX_TCP_CONNECTIONS = 1000;
/** How long close() waits for queued messages to leave. */
const FLUSH_MS = 1000;

export interface Peer {
  transport: 'udp' | 'tcp';
  address: string;
  port: number;
  socket?: net.Socket;
}

/** What the transport hands up: well-formed requests (with their essentials) and responses. */
export interface SipTransportHandler {
  onRequest(req: SipRequest, e: RequestEssentials, peer: Peer): void;
  onResponse(res: SipResponse): void;
  /** The Call-IDs of the calls whose signalling rides on this TCP connection (kept open, named in logs). */
  callsOn(socket: net.Socket): string[];
}

export interface SipTransportOptions {
  host: string;
  port: number;
  /** SO_RCVBUF asked for the UDP socket (sip.udpReceiveBufferBytes); the kernel may grant less. */
  receiveBufferBytes?: number;
  allow: BlockList;
  limits: ParseLimits;
  log: Logger;
  handler: SipTransportHandler;
}

export class SipTransport {
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly tcpSockets = new Set<net.Socket>();
  private boundPort = 0;
  /** UDP sends not yet handed to the kernel: close() lets them go first (a shutdown's BYEs). */
  private pendingSends = 0;
  private onDrained: (() => void) | null = null;
  /** Counts of what happened, for tests and /metrics-style inspection. */
  readonly counters = { requests: 0, responses: 0, parseErrors: 0, dropped: 0, forbidden: 0 };

  constructor(private readonly options: SipTransportOptions) {}

  /** The bound SIP port (UDP and TCP share it). */
  get port(): number {
    return this.boundPort;
  }

  /** Bind UDP (the port, or an ephemeral one for 0), then TCP on the same port. */
  async listen(): Promise<number> {
    const { host, port, log } = this.options;
    const type = host.includes(':') ? 'udp6' : 'udp4';
    const udp = dgram.createSocket({ type, reuseAddr: false });
    await new Promise<void>((resolve, reject) => {
      udp.once('error', reject);
      udp.bind(port, host, () => {
        udp.off('error', reject);
        resolve();
      });
    });
    this.udp = udp;
    this.boundPort = udp.address().port;
    if (this.options.receiveBufferBytes !== undefined) this.sizeReceiveBuffer(udp, this.options.receiveBufferBytes);
    udp.on('message', (msg, rinfo) => this.onDatagram(msg, { transport: 'udp', address: rinfo.address, port: rinfo.port }));
    udp.on('error', (err) => log.error({ err }, 'SIP UDP socket error'));
    const tcp = net.createServer((socket) => this.onConnection(socket));
    try {
      await new Promise<void>((resolve, reject) => {
        tcp.once('error', reject);
        tcp.listen(this.boundPort, host, () => {
          tcp.off('error', reject);
          resolve();
        });
      });
    } catch (err) {
      // TCP taken: the UDP socket bound above must not stay open behind a failed start.
      await this.close();
      throw err;
    }
    tcp.on('error', (err) => log.error({ err }, 'SIP TCP server error'));
    this.tcp = tcp;
    return this.boundPort;
  }

  /**
   * Ask for a receive buffer that holds a burst of messages. Linux caps the request at net.core.rmem_max without an
   * error (and reports twice what it keeps, for its own bookkeeping): read it back and say when it fell short.
   */
  private sizeReceiveBuffer(udp: dgram.Socket, bytes: number): void {
    const { log } = this.options;
    try {
      udp.setRecvBufferSize(bytes);
    } catch (err) {
      log.warn({ err, requestedBytes: bytes }, 'SIP UDP receive buffer could not be set');
      return;
    }
    const granted = udp.getRecvBufferSize();
    const kept = process.platform === 'linux' ? granted / 2 : granted;
    if (kept < bytes) {
      log.warn(
        { requestedBytes: bytes, grantedBytes: kept },
        'SIP UDP receive buffer smaller than sip.udpReceiveBufferBytes: a burst of messages may be dropped (raise net.core.rmem_max)',
      );
    } else log.debug({ receiveBufferBytes: kept }, 'SIP UDP receive buffer');
  }

  /**
   * Close the UDP socket, every TCP connection and the listener (idempotent). What was already sent (the BYEs
   * of a shutdown) leaves first, within FLUSH_MS: closing a socket drops what is still queued on it.
   */
  async close(): Promise<void> {
    const flushed: Promise<unknown>[] = [];
    if (this.udp && this.pendingSends > 0) flushed.push(new Promise<void>((resolve) => (this.onDrained = resolve)));
    for (const s of this.tcpSockets) {
      if (s.destroyed || s.writableFinished) continue;
      flushed.push(new Promise<void>((resolve) => s.once('finish', resolve).once('close', resolve)));
      s.end();
    }
    if (flushed.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(flushed), new Promise<void>((resolve) => (timer = setTimeout(resolve, FLUSH_MS)))]);
      clearTimeout(timer);
    }
    this.onDrained = null;
    this.udp?.close();
    this.udp = null;
    for (const s of this.tcpSockets) s.destroy();
    await new Promise<void>((resolve) => (this.tcp ? this.tcp.close(() => resolve()) : resolve()));
    this.tcp = null;
  }

  send(peer: Peer, data: Buffer): void {
    if (peer.transport === 'tcp') {
      if (peer.socket && !peer.socket.destroyed && peer.socket.writable) peer.socket.write(data);
      return;
    }
    if (!this.udp) return;
    this.pendingSends++;
    try {
      this.udp.send(data, peer.port, peer.address, (err) => {
        if (--this.pendingSends === 0) this.onDrained?.();
        if (err) this.options.log.warn({ err, to: `${peer.address}:${peer.port}` }, 'SIP UDP send failed');
      });
    } catch (err) {
      // Refused at once (a bad port): no callback will come for it.
      this.pendingSends--;
      throw err;
    }
  }

  private onDatagram(msg: Buffer, peer: Peer): void {
    try {
      // CRLF keep-alives (RFC 5626) and stray padding.
      if (msg.length <= 4 && /^[\r\n]*$/.test(msg.toString('latin1'))) return;
      this.onMessage(msg, peer, false);
    } catch (err) {
      this.options.log.error({ err }, 'SIP datagram handling failed');
    }
  }

  private onConnection(socket: net.Socket): void {
    const { handler, log } = this.options;
    const address = socket.remoteAddress ?? '';
    if (this.tcpSockets.size >= MAX_TCP_CONNECTIONS || !isAllowed(this.options.allow, address)) {
      this.counters.forbidden++;
      socket.destroy();
      return;
    }
    this.tcpSockets.add(socket);
    const peer: Peer = { transport: 'tcp', address, port: socket.remotePort ?? 0, socket };
    const framer = new SipStreamFramer(this.options.limits);
    socket.setNoDelay(true);
    // A connection that carries no call and says nothing for 5 minutes is closed.
    socket.setTimeout(300_000, () => {
      if (handler.callsOn(socket).length === 0) socket.destroy();
    });
    socket.on('data', (chunk: Buffer) => {
      let framed: { messages: Buffer[]; keepalives: number };
      try {
        framed = framer.push(chunk);
      } catch (err) {
        // The stream cannot be framed any more: answer if we can, then close (RFC 3261 §18.3).
        this.counters.parseErrors++;
        if (err instanceof SipParseError) this.respondToGarbage(chunk, err, peer);
        socket.end();
        return;
      }
      for (let i = 0; i < framed.keepalives; i++) socket.write('\r\n');
      for (const message of framed.messages) {
        try {
          this.onMessage(message, peer, true);
        } catch (err) {
          log.error({ err }, 'SIP TCP message handling failed');
        }
      }
    });
    socket.on('error', (err) => {
      // A reset or broken connection: 'close' follows and cleans up; the calls it carried are named in the log.
      log.warn({ err, from: `${address}:${peer.port}`, calls: handler.callsOn(socket) }, 'SIP TCP connection error');
    });
    socket.on('close', () => this.tcpSockets.delete(socket));
  }

  private onMessage(raw: Buffer, peer: Peer, stream: boolean): void {
    if (!isAllowed(this.options.allow, peer.address)) {
      this.counters.forbidden++;
      // A request from outside the allow-list: 403 (never for ACK, never to responses).
      const head = lenientHead(raw);
      if (head && head.kind === 'request' && head.method !== 'ACK' && head.complete) this.send(peer, serializeSipMessage(buildResponse(head.request, 403)));
      return;
    }
    let message;
    try {
      message = parseSipMessage(raw, this.options.limits, stream);
    } catch (err) {
      this.counters.parseErrors++;
      if (err instanceof SipParseError) this.respondToGarbage(raw, err, peer);
      return;
    }
    if (message.kind === 'response') {
      this.counters.responses++;
      this.options.handler.onResponse(message);
      return;
    }
    this.counters.requests++;
    let essentials: RequestEssentials;
    try {
      essentials = requestEssentials(message);
    } catch (err) {
      this.counters.parseErrors++;
      if (err instanceof SipParseError && message.method !== 'ACK') {
        this.send(peer, serializeSipMessage(buildResponse(message, err.status, { reason: reasonFor(err), vias: responseVias(message, peer) })));
      }
      return;
    }
    this.options.handler.onRequest(message, essentials, peer);
  }

  /** A message we could not parse: the right 4xx/5xx if it is a request we can address, else dropped. */
  private respondToGarbage(raw: Buffer, err: SipParseError, peer: Peer): void {
    const head = lenientHead(raw);
    if (!head || head.kind !== 'request' || head.method === 'ACK' || !head.complete) {
      this.counters.dropped++;
      this.options.log.debug({ from: `${peer.address}:${peer.port}`, reason: err.message }, 'unparseable SIP message dropped');
      return;
    }
    this.options.log.info({ from: `${peer.address}:${peer.port}`, status: err.status, reason: err.message }, 'bad SIP request refused');
    try {
      this.send(peer, serializeSipMessage(buildResponse(head.request, err.status, { reason: reasonFor(err), vias: responseVias(head.request, peer) })));
    } catch {
      this.counters.dropped++;
    }
  }
}

/** The top Via gets `received` and a filled-in `rport` (RFC 3581): responses go back where the request came from. */
export function responseVias(req: SipRequest, peer: Peer): string[] {
  const vias = headerList(req, 'via');
  if (vias.length === 0) return vias;
  let top = vias[0];
  top = top.replace(/;\s*rport(?=;|$)/i, `;rport=${peer.port}`);
  if (!/;\s*received=/i.test(top)) top = `${top};received=${peer.address.replace(/^::ffff:/, '')}`;
  return [top, ...vias.slice(1)];
}

function reasonFor(err: SipParseError): string {
  const base = err.status === 400 ? 'Bad Request' : err.status === 513 ? 'Message Too Large' : err.status === 505 ? 'Version Not Supported' : 'Bad Request';
  return `${base} - ${err.message.replace(/[\r\n]/g, ' ').slice(0, 80)}`;
}

/**
 * Just enough of a message we could not parse to answer it: the start line and the headers a response copies.
 * `complete` when Via, From, To, Call-ID and CSeq are all present.
 */
function lenientHead(raw: Buffer): { kind: 'request'; method: string; request: SipRequest; complete: boolean } | { kind: 'response'; complete: boolean } | null {
  const end = findHeadEnd(raw);
  const head = raw.subarray(0, end ? end.index : Math.min(raw.length, 65_536)).toString('utf8');
  const lines = head.split(/\r?\n/);
  const start = lines.shift() ?? '';
  if (start.startsWith('SIP/')) return { kind: 'response', complete: false };
  const method = /^([A-Za-z0-9\-.!%*_+`'~]+) /.exec(start)?.[1];
  if (!method) return null;
  const headers: SipHeader[] = [];
  for (const line of lines) {
    if (line.startsWith(' ') || line.startsWith('\t')) {
      const last = headers[headers.length - 1];
      if (last) last.value = `${last.value} ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    const name = canonicalHeaderName(line.slice(0, colon).trim());
    if (['via', 'from', 'to', 'call-id', 'cseq'].includes(name)) {
      const value = line.slice(colon + 1).trim().replace(/[\r\n]/g, '');
      if (value.length > 1024) continue;
      // Keep one of each single-valued header; several Via lines are legal.
      if (name !== 'via' && headers.some((h) => h.name === name)) continue;
      headers.push({ name, value });
    }
  }
  const names = new Set(headers.map((h) => h.name));
  const complete = ['via', 'from', 'to', 'call-id', 'cseq'].every((n) => names.has(n));
  return { kind: 'request', method, request: { kind: 'request', method, uri: 'sip:invalid', headers, body: Buffer.alloc(0) }, complete };
}
