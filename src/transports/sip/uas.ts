/**
 * SIP user agent server on UDP and TCP (RFC 3261): answers INVITEs with an SDP answer, handles ACK, BYE,
 * CANCEL, OPTIONS, re-INVITE (hold/resume) and INFO DTMF, and hangs up with BYE. Every call gets a Session
 * through the VoiceService; this file is only signalling.
 */
import dgram from 'node:dgram';
import net from 'node:net';
import os from 'node:os';
import { randomBytes, randomUUID } from 'node:crypto';
import type { BlockList } from 'node:net';
import type { Logger } from 'pino';
import { sipConfigProblems, type SipConfig } from './options.js';
import type { VoiceService } from '../../service.js';
import { LimitError } from '../../limits/limits.js';
import { AgentSelectionError } from '../../agents/registry.js';
import { buildAllowList, isAllowed, DigestAuth } from './access.js';
import { CallMedia } from './call.js';
import { callerFromSip, dialledLanguage } from '../../integration/context.js';
import {
  SipParseError,
  SipStreamFramer,
  buildResponse,
  canonicalHeaderName,
  findHeadEnd,
  header,
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
import { RtpPortPool } from './rtp/port-pool.js';
import { SdpError, buildAnswer, negotiate, parseSdp, type NegotiatedMedia } from './sdp.js';
import { contextHeaders, referToUri, type Handover } from '../../integration/handover.js';

const T1 = 500;
const T2 = 4000;
const TX_LIFETIME_MS = 64 * T1;
const MAX_TCP_CONNECTIONS = 1000;
const ALLOW = 'INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY';
/** Methods we know but do not serve: 405 with Allow rather than 501. */
const KNOWN = new Set(['REGISTER', 'SUBSCRIBE', 'MESSAGE', 'REFER', 'UPDATE', 'PRACK', 'PUBLISH']);

export interface Peer {
  transport: 'udp' | 'tcp';
  address: string;
  port: number;
  socket?: net.Socket;
}

type CallState = 'proceeding' | 'answered' | 'confirmed' | 'ended';

interface Call {
  /** The SIP Call-ID (the dialog's key in `calls`). */
  callId: string;
  /** Our id for the call's session and record: fresh, never the network's Call-ID. */
  recordId: string;
  log: Logger;
  state: CallState;
  localTag: string;
  remoteTag: string;
  invite: SipRequest;
  inviteKey: string;
  peer: Peer;
  remoteTarget: string;
  routeSet: string[];
  /** Our From (their To + our tag) and our To (their From) for requests we send. */
  localUri: string;
  remoteUri: string;
  localCseq: number;
  remoteCseq: number;
  sdpVersion: number;
  sessionId: string;
  localAddress: string;
  rtpPort: number;
  /** The bound RTP/RTCP pair until CallMedia owns it (closed by releaseMedia if setup fails before). */
  rtpSockets: { rtp: dgram.Socket; rtcp: dgram.Socket } | null;
  media: NegotiatedMedia;
  callMedia: CallMedia | null;
  ringTimer: NodeJS.Timeout | null;
  ringResolve?: () => void;
  okTimer: NodeJS.Timeout | null;
  cancelled: boolean;
  answeredAt: number;
  /** A REFER of ours is in progress. */
  transferring?: boolean;
  /** The same transfer without embedded headers in Refer-To, tried once when the first one fails. */
  referRetry?: (() => void) | null;
}

interface ServerTx {
  response: Buffer | null;
  peer: Peer;
  expiresAt: number;
}

interface ClientTx {
  timer: NodeJS.Timeout | null;
  done: boolean;
  onFinal?: (status: number) => void;
}

export interface SipServerOptions {
  service: VoiceService;
  config: SipConfig;
  logger: Logger;
}

const tag = () => randomBytes(8).toString('hex');
const branch = () => `z9hG4bK${randomBytes(10).toString('hex')}`;

export class SipServer {
  private udp: dgram.Socket | null = null;
  private tcp: net.Server | null = null;
  private readonly tcpSockets = new Set<net.Socket>();
  readonly calls = new Map<string, Call>();
  private readonly serverTx = new Map<string, ServerTx>();
  private readonly clientTx = new Map<string, ClientTx>();
  private readonly allow: BlockList;
  /** Where media may go besides the INVITE's source (sip.mediaNetworks). */
  private readonly mediaNetworks: BlockList;
  private readonly digest: DigestAuth | null;
  private readonly ports: RtpPortPool;
  private readonly limits: ParseLimits;
  private readonly log: Logger;
  private sweeper: NodeJS.Timeout | null = null;
  private boundPort = 0;
  /** Counts of what happened, for tests and /metrics-style inspection. */
  readonly counters = { requests: 0, responses: 0, parseErrors: 0, dropped: 0, forbidden: 0 };

  constructor(private readonly options: SipServerOptions) {
    const c = options.config;
    // The same declaration the config file is checked against: a server built directly gets the same errors.
    const problems = sipConfigProblems(c);
    if (problems.length > 0) throw new Error(`invalid sip configuration: ${problems.join('; ')}`);
    this.log = options.logger.child({ transport: 'sip' });
    this.allow = buildAllowList(c.allowFrom);
    this.mediaNetworks = buildAllowList(c.mediaNetworks ?? [], 'sip.mediaNetworks');
    this.digest = c.digest ? new DigestAuth(c.digest) : null;
    this.ports = new RtpPortPool(c.rtpPortMin, c.rtpPortMax);
    this.limits = { maxMessageBytes: c.maxMessageBytes, maxHeaders: 128 };
  }

  /** RTP port pairs held by calls (0 when no call holds one: nothing leaked). */
  get rtpPortsInUse(): number {
    return this.ports.used;
  }

  /** The bound SIP port (UDP and TCP share it). */
  get port(): number {
    return this.boundPort;
  }

  async start(): Promise<number> {
    const { host, port } = this.options.config;
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
    udp.on('message', (msg, rinfo) => this.onDatagram(msg, { transport: 'udp', address: rinfo.address, port: rinfo.port }));
    udp.on('error', (err) => this.log.error({ err }, 'SIP UDP socket error'));
    const tcp = net.createServer((socket) => this.onConnection(socket));
    await new Promise<void>((resolve, reject) => {
      tcp.once('error', reject);
      tcp.listen(this.boundPort, host, () => {
        tcp.off('error', reject);
        resolve();
      });
    });
    tcp.on('error', (err) => this.log.error({ err }, 'SIP TCP server error'));
    this.tcp = tcp;
    this.sweeper = setInterval(() => this.sweep(), 2000);
    this.sweeper.unref();
    this.log.info({ host, port: this.boundPort, allowFrom: this.options.config.allowFrom, digest: this.digest !== null }, 'SIP listening on UDP and TCP');
    return this.boundPort;
  }

  async stop(): Promise<void> {
    if (this.sweeper) clearInterval(this.sweeper);
    await Promise.allSettled([...this.calls.values()].map((call) => this.hangup(call, 'shutdown')));
    for (const tx of this.clientTx.values()) if (tx.timer) clearTimeout(tx.timer);
    this.clientTx.clear();
    this.udp?.close();
    this.udp = null;
    for (const s of this.tcpSockets) s.destroy();
    await new Promise<void>((resolve) => (this.tcp ? this.tcp.close(() => resolve()) : resolve()));
    this.tcp = null;
  }

  // ---------------------------------------------------------------- transport

  private onDatagram(msg: Buffer, peer: Peer): void {
    try {
      // CRLF keep-alives (RFC 5626) and stray padding.
      if (msg.length <= 4 && /^[\r\n]*$/.test(msg.toString('latin1'))) return;
      this.onMessage(msg, peer, false);
    } catch (err) {
      this.log.error({ err }, 'SIP datagram handling failed');
    }
  }

  private onConnection(socket: net.Socket): void {
    const address = socket.remoteAddress ?? '';
    if (this.tcpSockets.size >= MAX_TCP_CONNECTIONS || !isAllowed(this.allow, address)) {
      this.counters.forbidden++;
      socket.destroy();
      return;
    }
    this.tcpSockets.add(socket);
    const peer: Peer = { transport: 'tcp', address, port: socket.remotePort ?? 0, socket };
    const framer = new SipStreamFramer(this.limits);
    socket.setNoDelay(true);
    // A connection that carries no call and says nothing for 5 minutes is closed.
    socket.setTimeout(300_000, () => {
      if (![...this.calls.values()].some((c) => c.peer.socket === socket)) socket.destroy();
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
          this.log.error({ err }, 'SIP TCP message handling failed');
        }
      }
    });
    socket.on('error', (err) => {
      // A reset or broken connection: 'close' follows and cleans up; the calls it carried are named in the log.
      const calls = [...this.calls.values()].filter((c) => c.peer.socket === socket).map((c) => c.callId);
      this.log.warn({ err, from: `${address}:${peer.port}`, calls }, 'SIP TCP connection error');
    });
    socket.on('close', () => this.tcpSockets.delete(socket));
  }

  private send(peer: Peer, data: Buffer): void {
    if (peer.transport === 'tcp') {
      if (peer.socket && !peer.socket.destroyed && peer.socket.writable) peer.socket.write(data);
      return;
    }
    this.udp?.send(data, peer.port, peer.address, (err) => {
      if (err) this.log.warn({ err, to: `${peer.address}:${peer.port}` }, 'SIP UDP send failed');
    });
  }

  // ---------------------------------------------------------------- dispatch

  private onMessage(raw: Buffer, peer: Peer, stream: boolean): void {
    if (!isAllowed(this.allow, peer.address)) {
      this.counters.forbidden++;
      // A request from outside the allow-list: 403 (never for ACK, never to responses).
      const head = lenientHead(raw);
      if (head && head.kind === 'request' && head.method !== 'ACK' && head.complete) this.send(peer, serializeSipMessage(buildResponse(head.request, 403)));
      return;
    }
    let message;
    try {
      message = parseSipMessage(raw, this.limits, stream);
    } catch (err) {
      this.counters.parseErrors++;
      if (err instanceof SipParseError) this.respondToGarbage(raw, err, peer);
      return;
    }
    if (message.kind === 'response') {
      this.counters.responses++;
      this.onResponse(message);
      return;
    }
    this.counters.requests++;
    let essentials: RequestEssentials;
    try {
      essentials = requestEssentials(message);
    } catch (err) {
      this.counters.parseErrors++;
      if (err instanceof SipParseError && message.method !== 'ACK') this.respond(message, peer, null, err.status, { reason: reasonFor(err) });
      return;
    }
    this.onRequest(message, essentials, peer);
  }

  /** A message we could not parse: the right 4xx/5xx if it is a request we can address, else dropped. */
  private respondToGarbage(raw: Buffer, err: SipParseError, peer: Peer): void {
    const head = lenientHead(raw);
    if (!head || head.kind !== 'request' || head.method === 'ACK' || !head.complete) {
      this.counters.dropped++;
      this.log.debug({ from: `${peer.address}:${peer.port}`, reason: err.message }, 'unparseable SIP message dropped');
      return;
    }
    this.log.info({ from: `${peer.address}:${peer.port}`, status: err.status, reason: err.message }, 'bad SIP request refused');
    try {
      this.send(peer, serializeSipMessage(buildResponse(head.request, err.status, { reason: reasonFor(err), vias: this.responseVias(head.request, peer) })));
    } catch {
      this.counters.dropped++;
    }
  }

  private onRequest(req: SipRequest, e: RequestEssentials, peer: Peer): void {
    const key = txKey(req, e);
    if (req.method !== 'ACK') {
      const existing = this.serverTx.get(key);
      if (existing) {
        // A retransmission: repeat our last response, do nothing else.
        if (existing.response) this.send(peer, existing.response);
        return;
      }
      this.serverTx.set(key, { response: null, peer, expiresAt: performance.now() + TX_LIFETIME_MS });
    }
    if (e.maxForwards === 0 && req.method !== 'ACK') {
      this.respond(req, peer, key, 483);
      return;
    }
    const require = headerList(req, 'require').filter((r) => r.toLowerCase() !== 'timer');
    if (require.length > 0 && req.method !== 'ACK' && req.method !== 'CANCEL') {
      this.respond(req, peer, key, 420, { headers: [{ name: 'unsupported', value: require.join(', ') }] });
      return;
    }
    switch (req.method) {
      case 'INVITE':
        if (e.to.params.get('tag')) this.onReInvite(req, e, peer, key);
        else void this.onInvite(req, e, peer, key).catch((err: unknown) => {
          this.log.error({ err, callId: e.callId }, 'INVITE handling failed');
          this.respond(req, peer, key, 500);
        });
        return;
      case 'ACK':
        this.onAck(req, e);
        return;
      case 'CANCEL':
        this.onCancel(req, e, peer, key);
        return;
      case 'BYE':
        this.onBye(req, e, peer, key);
        return;
      case 'OPTIONS':
        // Keep-alive probes (Kamailio's dispatcher, a trunk): a node that is loading or draining answers 503 so the
        // proxy stops sending it calls; calls in progress are unaffected.
        if (!this.options.service.ready) {
          this.respond(req, peer, key, 503, { toTag: e.to.params.get('tag') ? undefined : tag(), headers: [{ name: 'retry-after', value: '5' }] });
          return;
        }
        this.respond(req, peer, key, 200, {
          toTag: e.to.params.get('tag') ? undefined : tag(),
          headers: [
            { name: 'allow', value: ALLOW },
            { name: 'accept', value: 'application/sdp' },
            { name: 'supported', value: '' },
          ],
        });
        return;
      case 'INFO':
        this.onInfo(req, e, peer, key);
        return;
      case 'NOTIFY':
        this.onNotify(req, e, peer, key);
        return;
      default:
        if (KNOWN.has(req.method)) this.respond(req, peer, key, 405, { headers: [{ name: 'allow', value: ALLOW }] });
        else this.respond(req, peer, key, 501, { headers: [{ name: 'allow', value: ALLOW }] });
    }
  }

  private respond(req: SipRequest, peer: Peer, key: string | null, status: number, options: { toTag?: string; headers?: SipHeader[]; body?: Buffer; reason?: string } = {}): Buffer {
    const response = buildResponse(req, status, { ...options, vias: this.responseVias(req, peer) });
    if (status === 501 || status === 405 || status === 420 || status === 483) this.log.info({ method: req.method.slice(0, 32), status }, 'SIP request refused');
    const data = serializeSipMessage(response);
    // The latest response (provisional too) is what a retransmitted request gets again.
    if (key) {
      const tx = this.serverTx.get(key);
      if (tx) tx.response = data;
    }
    this.send(peer, data);
    return data;
  }

  /** The top Via gets `received` and a filled-in `rport` (RFC 3581): responses go back where the request came from. */
  private responseVias(req: SipRequest, peer: Peer): string[] {
    const vias = headerList(req, 'via');
    if (vias.length === 0) return vias;
    let top = vias[0];
    top = top.replace(/;\s*rport(?=;|$)/i, `;rport=${peer.port}`);
    if (!/;\s*received=/i.test(top)) top = `${top};received=${peer.address.replace(/^::ffff:/, '')}`;
    return [top, ...vias.slice(1)];
  }

  // ---------------------------------------------------------------- INVITE

  private async onInvite(req: SipRequest, e: RequestEssentials, peer: Peer, key: string): Promise<void> {
    const existing = this.calls.get(e.callId);
    if (existing) {
      // Same Call-ID without a To tag but a new transaction: a forked or looped request.
      this.respond(req, peer, key, 482);
      return;
    }
    const { service, config } = this.options;
    const log = this.log.child({ callId: e.callId });
    if (!service.ready) {
      this.respond(req, peer, key, 503, { headers: [{ name: 'retry-after', value: '5' }] });
      return;
    }
    if (this.calls.size >= config.maxCalls) {
      this.respond(req, peer, key, 486);
      return;
    }
    if (this.digest) {
      const verdict = this.digest.verify('INVITE', header(req, 'authorization'), peer.address);
      if (verdict === 'throttled') {
        // Guessing passwords: no new challenge for this source until its window passes.
        log.warn({ from: peer.address }, 'INVITE refused: too many failed authentications from this address');
        this.respond(req, peer, key, 403, { toTag: tag(), reason: 'Too Many Failed Authentications' });
        return;
      }
      if (verdict !== 'ok') {
        log.info({ verdict }, 'INVITE challenged');
        this.respond(req, peer, key, 401, { toTag: tag(), headers: [{ name: 'www-authenticate', value: this.digest.challenge(verdict === 'stale') }] });
        return;
      }
    }
    const contentType = (header(req, 'content-type') ?? '').split(';')[0].trim().toLowerCase();
    if (req.body.length === 0) {
      // Offerless INVITE (offer in our 200, answer in ACK) is not supported: say so plainly.
      this.respond(req, peer, key, 488, { headers: [{ name: 'warning', value: '399 voice-agent "an SDP offer is required in the INVITE"' }] });
      return;
    }
    if (contentType !== 'application/sdp') {
      this.respond(req, peer, key, 415, { headers: [{ name: 'accept', value: 'application/sdp' }] });
      return;
    }
    let media: NegotiatedMedia | null;
    try {
      media = negotiate(parseSdp(req.body.toString('utf8')), config.codecs);
    } catch (err) {
      if (!(err instanceof SdpError)) throw err;
      this.respond(req, peer, key, 400, { reason: `Bad SDP: ${err.message}`.slice(0, 100) });
      return;
    }
    if (!media) {
      this.respond(req, peer, key, 488, { headers: [{ name: 'warning', value: `399 voice-agent "no common audio codec; we accept ${config.codecs.join(', ')}"` }] });
      return;
    }
    if (!net.isIP(media.remoteAddress)) {
      // A host name would have us resolve and stream to whatever it names: never.
      this.respond(req, peer, key, 488, { headers: [{ name: 'warning', value: '305 voice-agent "c= must be an IP address"' }] });
      return;
    }
    const plausible = this.mediaPlausibility(peer);
    if (media.remoteAddress !== '0.0.0.0' && !plausible(media.remoteAddress)) {
      // Usually a phone behind NAT naming its private address; a third party's address otherwise. Either way
      // nothing goes there: we wait for the caller's own RTP from the signalling source and latch to it.
      log.info({ sdpAddress: media.remoteAddress, signalling: peer.address }, 'SDP media address is not the signalling source: waiting for the caller\'s RTP');
    }
    const contact = header(req, 'contact');
    let remoteTarget = peerUri(peer);
    if (contact) {
      const m = /<([^>]+)>/.exec(contact) ?? /^\s*([^;,\s]+)/.exec(contact);
      if (m) remoteTarget = m[1];
    }
    const localTag = tag();
    const localAddress = this.localAddressFor(peer, req);
    const call: Call = {
      callId: e.callId,
      recordId: randomUUID(),
      log,
      state: 'proceeding',
      localTag,
      remoteTag: e.from.params.get('tag') ?? '',
      invite: req,
      inviteKey: key,
      peer,
      remoteTarget,
      routeSet: headerList(req, 'record-route'),
      localUri: `${header(req, 'to') ?? ''};tag=${localTag}`,
      remoteUri: header(req, 'from') ?? '',
      localCseq: 1,
      remoteCseq: e.cseq.seq,
      sdpVersion: 1,
      sessionId: String(Date.now()),
      localAddress,
      rtpPort: 0,
      rtpSockets: null,
      media,
      callMedia: null,
      ringTimer: null,
      okTimer: null,
      cancelled: false,
      answeredAt: 0,
    };
    this.calls.set(e.callId, call);
    // From here the call holds a slot (and soon an RTP port): every way out, a throw included, releases both.
    try {
      await this.setUpCall(call, req, e, peer, key, plausible);
    } catch (err) {
      log.error({ err }, 'INVITE handling failed: call released');
      const answered = call.state === 'answered' || call.state === 'confirmed';
      if (call.state !== 'ended') {
        if (answered) this.sendBye(call, 'internal_error');
        else this.respond(req, peer, key, 500, { toTag: localTag });
      }
      await this.endCall(call, 'internal_error');
    }
  }

  /** The INVITE's work once the call is registered: RTP port, media, ringing, session, 200 OK. */
  private async setUpCall(call: Call, req: SipRequest, e: RequestEssentials, peer: Peer, key: string, plausible: (address: string) => boolean): Promise<void> {
    const { service, config } = this.options;
    const { log, localTag, media } = call;
    log.info({ from: e.from.uri, to: e.to.uri, peer: `${peer.transport}:${peer.address}:${peer.port}`, codec: media.codec, dtmf: media.telephoneEvent !== null }, 'incoming SIP call');
    this.respond(req, peer, key, 100);

    let sockets;
    try {
      const rtpHost = this.options.config.host;
      sockets = await this.ports.bind(rtpHost);
    } catch (err) {
      log.error({ err }, 'no RTP port');
      this.respond(req, peer, key, 503, { toTag: localTag });
      await this.endCall(call, 'no_rtp_port');
      return;
    }
    call.rtpPort = sockets.port;
    call.rtpSockets = sockets;
    if (call.state === 'ended') {
      // Ended (shutdown) while the port was being bound.
      await this.releaseMedia(call, 'ended');
      return;
    }
    const context = callerFromSip(req);
    const callMedia = new CallMedia({
      callId: call.recordId,
      networkId: e.callId,
      plausible,
      service,
      media,
      sockets,
      keyId: `sip:${peer.address}`,
      caller: /^sips?:([^@;]+)@/i.exec(e.from.uri)?.[1],
      context,
      language: dialledLanguage(config.languageByNumber, context),
      logger: log,
      rtpTimeoutMs: config.rtpTimeoutMs,
      onHangup: (reason) => void this.hangup(call, reason),
      onTransfer: (handover) => this.transfer(call.callId, handover),
    });
    call.callMedia = callMedia;
    call.rtpSockets = null;
    if (call.cancelled) {
      await this.releaseMedia(call, 'cancelled');
      return;
    }
    this.respond(req, peer, key, 180, { toTag: localTag, headers: [{ name: 'contact', value: this.contactFor(call) }] });
    if (config.ringMs > 0) {
      await new Promise<void>((resolve) => {
        call.ringTimer = setTimeout(resolve, config.ringMs);
        call.ringResolve = resolve;
      });
      call.ringTimer = null;
    }
    if (call.cancelled) {
      await this.releaseMedia(call, 'cancelled');
      return;
    }
    try {
      await callMedia.open();
    } catch (err) {
      // 404: the dialled number or the asked-for agent is not one this deployment answers (config agents).
      const status = err instanceof LimitError ? (err.code === 'session_limit' ? 486 : 503) : err instanceof AgentSelectionError ? 404 : 503;
      log.warn({ err: (err as Error).message, status }, 'call refused');
      this.respond(req, peer, key, status, { toTag: localTag });
      await this.endCall(call, 'refused');
      return;
    }
    if (call.cancelled) {
      await this.releaseMedia(call, 'cancelled');
      return;
    }
    this.sendOk(call, req, key);
    call.state = 'answered';
    call.answeredAt = performance.now();
    callMedia.start();
    log.info({ rtpPort: sockets.port, remote: `${media.remoteAddress}:${media.remotePort}`, recordId: call.recordId }, 'SIP call answered');
  }

  /** 200 OK with our SDP answer; over UDP it is retransmitted (T1 doubling to T2) until the ACK arrives. */
  private sendOk(call: Call, req: SipRequest, key: string): void {
    const body = Buffer.from(
      buildAnswer({ sessionId: call.sessionId, version: call.sdpVersion, address: call.localAddress, port: call.rtpPort, media: call.media }),
      'utf8',
    );
    const data = this.respond(req, call.peer, key, 200, {
      toTag: call.localTag,
      body,
      headers: [
        { name: 'contact', value: this.contactFor(call) },
        { name: 'allow', value: ALLOW },
        { name: 'supported', value: '' },
        { name: 'content-type', value: 'application/sdp' },
        ...headerList(req, 'record-route').map((value) => ({ name: 'record-route', value })),
      ],
    });
    if (call.peer.transport !== 'udp') return;
    let interval = T1;
    const started = performance.now();
    const retransmit = () => {
      if (call.state === 'ended' || call.state === 'confirmed') return;
      if (performance.now() - started >= TX_LIFETIME_MS) {
        call.log.warn('no ACK for our 200 OK: hanging up');
        void this.hangup(call, 'no_ack');
        return;
      }
      this.send(call.peer, data);
      interval = Math.min(interval * 2, T2);
      call.okTimer = setTimeout(retransmit, interval);
    };
    if (call.okTimer) clearTimeout(call.okTimer);
    call.okTimer = setTimeout(retransmit, interval);
  }

  private onReInvite(req: SipRequest, e: RequestEssentials, peer: Peer, key: string): void {
    const call = this.calls.get(e.callId);
    if (!call || call.state === 'ended' || e.to.params.get('tag') !== call.localTag) {
      this.respond(req, peer, key, 481);
      return;
    }
    if (e.cseq.seq <= call.remoteCseq) {
      this.respond(req, peer, key, 500, { reason: 'CSeq out of order' });
      return;
    }
    if (call.state === 'answered') {
      // Our previous INVITE transaction is still waiting for its ACK.
      this.respond(req, peer, key, 491);
      return;
    }
    call.remoteCseq = e.cseq.seq;
    if (req.body.length > 0) {
      let media: NegotiatedMedia | null;
      try {
        media = negotiate(parseSdp(req.body.toString('utf8')), [call.media.codec]);
      } catch (err) {
        if (!(err instanceof SdpError)) throw err;
        this.respond(req, peer, key, 400, { reason: `Bad SDP: ${err.message}`.slice(0, 100) });
        return;
      }
      if (!media || !net.isIP(media.remoteAddress)) {
        this.respond(req, peer, key, 488);
        return;
      }
      call.media = media;
      call.callMedia?.update(media);
      call.log.info({ direction: media.direction, remote: `${media.remoteAddress}:${media.remotePort}` }, media.direction === 'sendrecv' ? 'call resumed' : 'call on hold');
    }
    call.sdpVersion++;
    call.peer = peer;
    call.state = 'answered';
    call.inviteKey = key;
    this.sendOk(call, req, key);
  }

  private onAck(_req: SipRequest, e: RequestEssentials): void {
    const call = this.calls.get(e.callId);
    // Our To tag went only to the INVITE's real source: an ACK without it (a spoofed INVITE's sender never
    // saw our 200 OK) confirms nothing, so no media flows toward a forged source address.
    if (!call || e.to.params.get('tag') !== call.localTag) return;
    if (call.state === 'answered') {
      call.state = 'confirmed';
      if (call.okTimer) clearTimeout(call.okTimer);
      call.okTimer = null;
      call.callMedia?.acknowledged();
    }
  }

  private onCancel(req: SipRequest, e: RequestEssentials, peer: Peer, key: string): void {
    const inviteKey = txKey({ ...req, method: 'INVITE' }, { ...e, cseq: { seq: e.cseq.seq, method: 'INVITE' } });
    const call = this.calls.get(e.callId);
    if (!call || call.inviteKey !== inviteKey) {
      this.respond(req, peer, key, 481);
      return;
    }
    this.respond(req, peer, key, 200, { toTag: call.localTag });
    if (call.state !== 'proceeding') return; // already answered: CANCEL has no effect
    call.cancelled = true;
    call.state = 'ended';
    if (call.ringTimer) clearTimeout(call.ringTimer);
    call.ringResolve?.();
    this.calls.delete(call.callId);
    this.respond(call.invite, call.peer, call.inviteKey, 487, { toTag: call.localTag });
    call.log.info('call cancelled before answer');
  }

  private onBye(req: SipRequest, e: RequestEssentials, peer: Peer, key: string): void {
    const call = this.calls.get(e.callId);
    const toTag = e.to.params.get('tag');
    if (!call || call.state === 'proceeding' || toTag !== call.localTag) {
      this.respond(req, peer, key, 481);
      return;
    }
    this.respond(req, peer, key, 200);
    // A caller's UA that followed our REFER may end our leg itself once the target answered (baresip does).
    const reason = call.transferring ? 'transferred' : 'caller_hangup';
    call.log.info({ durationMs: Math.round(performance.now() - call.answeredAt), reason }, 'caller hung up (BYE)');
    void this.endCall(call, reason);
  }

  private onInfo(req: SipRequest, e: RequestEssentials, peer: Peer, key: string): void {
    const call = this.calls.get(e.callId);
    if (!call || e.to.params.get('tag') !== call.localTag) {
      this.respond(req, peer, key, 481);
      return;
    }
    const type = (header(req, 'content-type') ?? '').split(';')[0].trim().toLowerCase();
    const body = req.body.toString('utf8');
    let digit: string | undefined;
    if (type === 'application/dtmf-relay') digit = /Signal\s*=\s*([0-9*#A-Da-d])/.exec(body)?.[1];
    else if (type === 'application/dtmf') digit = /^\s*([0-9*#A-Da-d])\s*$/.exec(body)?.[1];
    else {
      this.respond(req, peer, key, 415, { headers: [{ name: 'accept', value: 'application/dtmf-relay, application/dtmf' }] });
      return;
    }
    if (!digit) {
      this.respond(req, peer, key, 400, { reason: 'Bad DTMF body' });
      return;
    }
    this.respond(req, peer, key, 200);
    if (this.options.service.config.privacy.logTranscripts) call.log.info({ digit, via: 'INFO' }, 'DTMF received');
    call.callMedia?.pushDtmf(digit.toUpperCase());
  }

  // ---------------------------------------------------------------- ending calls

  /** We end the call: BYE if it was answered, otherwise a final error response. */
  async hangup(call: Call, reason: string): Promise<void> {
    if (call.state === 'ended') return;
    if (call.state === 'proceeding') {
      call.cancelled = true;
      call.ringResolve?.();
      this.respond(call.invite, call.peer, call.inviteKey, 480, { toTag: call.localTag });
    } else {
      this.sendBye(call, reason);
    }
    call.log.info({ reason }, 'hanging up');
    await this.endCall(call, reason);
  }

  private sendBye(call: Call, reason: string): void {
    this.sendInDialog(call, 'BYE', [{ name: 'reason', value: `SIP;cause=200;text="${reason}"` }]);
  }

  /**
   * A request of ours inside the dialog (BYE, REFER): retransmitted over UDP (timer E, T1 doubling to T2)
   * until a final response or 32 s; `onFinal` gets the final status (408 when none came).
   */
  private sendInDialog(call: Call, method: string, extra: SipHeader[], onFinal?: (status: number) => void): void {
    const via = `SIP/2.0/${call.peer.transport.toUpperCase()} ${hostForUri(call.localAddress)}:${this.boundPort};branch=${branch()};rport`;
    const headers: SipHeader[] = [
      { name: 'via', value: via },
      { name: 'max-forwards', value: '70' },
      { name: 'from', value: call.localUri },
      { name: 'to', value: call.remoteUri },
      { name: 'call-id', value: call.callId },
      { name: 'cseq', value: `${++call.localCseq} ${method}` },
      ...call.routeSet.map((value) => ({ name: 'route', value })),
      { name: 'contact', value: this.contactFor(call) },
      ...extra,
    ];
    const data = serializeSipMessage({ kind: 'request', method, uri: call.remoteTarget, headers, body: Buffer.alloc(0) });
    const key = `${call.callId}|${call.localCseq}|${method}`;
    const tx: ClientTx = { timer: null, done: false, onFinal };
    this.clientTx.set(key, tx);
    this.send(call.peer, data);
    const started = performance.now();
    const expire = () => {
      this.clientTx.delete(key);
      if (!tx.done) tx.onFinal?.(408);
    };
    if (call.peer.transport === 'udp') {
      let interval = T1;
      const again = () => {
        if (tx.done) return;
        if (performance.now() - started > TX_LIFETIME_MS) return expire();
        this.send(call.peer, data);
        interval = Math.min(interval * 2, T2);
        tx.timer = setTimeout(again, interval);
      };
      tx.timer = setTimeout(again, interval);
    } else {
      tx.timer = setTimeout(expire, TX_LIFETIME_MS);
    }
  }

  /**
   * Blind transfer (RFC 3515): REFER the caller to the queue's target; the caller's NOTIFY reporting a 2xx from
   * the target ends our leg with BYE. A refused REFER or a failed transfer leaves the call with the agent.
   * The context (call id, summary, User-to-User) rides in Refer-To as embedded headers, so the caller's UA
   * puts it on its INVITE to the target (RFC 3515 §2.1, RFC 7433), and on the REFER itself.
   */
  transfer(callId: string, to: Handover | string | null = null, embed = true): boolean {
    const call = this.calls.get(callId);
    if (!call || (call.state !== 'confirmed' && call.state !== 'answered')) return false;
    // A bare URI: a transfer without context (tests, tools); null: the configured default.
    const handover = typeof to === 'object' ? to : null;
    const target = typeof to === 'string' ? to : handover ? handover.target : this.options.config.transferTarget;
    if (!target) {
      call.log.warn({ queue: handover?.queue }, 'transfer requested but no target is configured for it (handover.queues, sip.transferTarget): the call stays with the agent');
      return false;
    }
    // A phone number from the queues goes to the PBX the caller came from, as a tel-style SIP URI.
    const uri = target.startsWith('+') ? `sip:${target}@${hostForUri(call.peer.address.replace(/^::ffff:/, ''))}` : target;
    const withContext = handover ? { ...handover, target: uri } : null;
    call.log.info({ target: uri, queue: handover?.queue, embedded: Boolean(withContext && embed) }, 'transferring the call (REFER)');
    call.transferring = true;
    // Some UAs cannot follow a Refer-To with embedded headers (baresip 1.0 fails the transfer): once, the
    // same REFER again with a plain Refer-To; the context still rides on the REFER itself and the webhook.
    call.referRetry = withContext && embed ? () => this.transfer(callId, withContext, false) : null;
    this.sendInDialog(call, 'REFER', [
      { name: 'refer-to', value: `<${withContext && embed ? referToUri(withContext) : uri}>` },
      { name: 'referred-by', value: `<sip:agent@${hostForUri(call.localAddress)}:${this.boundPort}>` },
      ...(withContext ? contextHeaders(withContext).map((h) => ({ name: h.name.toLowerCase(), value: h.value })) : []),
    ], (status) => {
      if (status >= 300) this.transferFailed(call, status, "transfer refused by the caller's side");
    });
    return true;
  }

  /** A refused REFER or a failed transfer: once more without embedded headers, else the call stays with the agent. */
  private transferFailed(call: Call, status: number, what: string): void {
    const retry = call.referRetry;
    call.referRetry = null;
    if (retry && call.state !== 'ended') {
      call.log.warn({ status }, `${what}: trying again with a plain Refer-To`);
      retry();
      return;
    }
    call.transferring = false;
    call.log.warn({ status }, `${what}: the call stays with the agent`);
  }

  /** NOTIFY for our REFER (message/sipfrag): the transfer's progress. */
  private onNotify(req: SipRequest, e: RequestEssentials, peer: Peer, key: string): void {
    const call = this.calls.get(e.callId);
    if (!call || e.to.params.get('tag') !== call.localTag) {
      this.respond(req, peer, key, 481);
      return;
    }
    this.respond(req, peer, key, 200);
    const event = (header(req, 'event') ?? '').split(';')[0].trim().toLowerCase();
    const frag = /^SIP\/2\.0 (\d{3})/.exec(req.body.toString('utf8').trim());
    if (event !== 'refer' || !frag || !call.transferring) return;
    const status = Number(frag[1]);
    if (status >= 200 && status < 300) {
      call.log.info('transfer target answered: ending our leg');
      void this.hangup(call, 'transferred');
    } else if (status >= 300) {
      this.transferFailed(call, status, 'transfer failed');
    }
  }

  private onResponse(res: SipResponse): void {
    const callId = header(res, 'call-id');
    const cseq = header(res, 'cseq');
    if (!callId || !cseq) return;
    const m = /^(\d+)\s+(\S+)$/.exec(cseq.trim());
    if (!m) return;
    const key = `${callId}|${m[1]}|${m[2]}`;
    const tx = this.clientTx.get(key);
    if (!tx || res.status < 200) return;
    tx.done = true;
    if (tx.timer) clearTimeout(tx.timer);
    this.clientTx.delete(key);
    tx.onFinal?.(res.status);
  }

  private async endCall(call: Call, reason: string): Promise<void> {
    call.state = 'ended';
    if (call.okTimer) clearTimeout(call.okTimer);
    if (call.ringTimer) clearTimeout(call.ringTimer);
    this.calls.delete(call.callId);
    await this.releaseMedia(call, reason);
  }

  /** Frees what the call holds on the media side: its session, its sockets and its port (idempotent). */
  private async releaseMedia(call: Call, reason: string): Promise<void> {
    const media = call.callMedia;
    const sockets = call.rtpSockets;
    call.callMedia = null;
    call.rtpSockets = null;
    if (call.rtpPort !== 0) this.ports.release(call.rtpPort);
    call.rtpPort = 0;
    if (sockets) {
      for (const socket of [sockets.rtp, sockets.rtcp]) {
        try {
          socket.close();
        } catch (err) {
          call.log.debug({ err }, 'RTP socket already closed');
        }
      }
    }
    if (media) await media.close(reason);
  }

  // ---------------------------------------------------------------- helpers

  /**
   * Where a call's media may go and come from: the address its INVITE came from (a trunk's or phone's own
   * address, NAT included) or the operator's media networks. Never what the SDP alone says.
   */
  private mediaPlausibility(peer: Peer): (address: string) => boolean {
    const signalling = peer.address.replace(/^::ffff:/i, '');
    return (address: string) => address.replace(/^::ffff:/i, '') === signalling || isAllowed(this.mediaNetworks, address);
  }

  private contactFor(call: Call): string {
    const transport = call.peer.transport === 'tcp' ? ';transport=tcp' : '';
    return `<sip:agent@${hostForUri(call.localAddress)}:${this.boundPort}${transport}>`;
  }

  /** The address the caller should reach us at: configured, else the interface the request came in on. */
  private localAddressFor(peer: Peer, req: SipRequest): string {
    const c = this.options.config;
    if (c.publicAddress) return c.publicAddress;
    const local = peer.socket?.localAddress?.replace(/^::ffff:/, '');
    if (local) return local;
    if (c.host !== '0.0.0.0' && c.host !== '::') return c.host;
    const remote = peer.address.replace(/^::ffff:/, '');
    if (remote.startsWith('127.') || remote === '::1') return remote === '::1' ? '::1' : '127.0.0.1';
    const uriHost = /^sips?:(?:[^@]*@)?([0-9.]+)(?::|;|$)/.exec(req.uri)?.[1];
    if (uriHost && net.isIPv4(uriHost)) return uriHost;
    for (const list of Object.values(os.networkInterfaces())) {
      for (const addr of list ?? []) if (addr.family === 'IPv4' && !addr.internal) return addr.address;
    }
    return '127.0.0.1';
  }

  private sweep(): void {
    const now = performance.now();
    for (const [key, tx] of this.serverTx) if (tx.expiresAt < now) this.serverTx.delete(key);
  }
}

function txKey(req: SipRequest, e: RequestEssentials): string {
  const b = e.vias[0].params.get('branch');
  // RFC 3261 branches are unique per transaction; RFC 2543 peers need the older matching rule.
  const method = req.method === 'ACK' ? 'INVITE' : req.method;
  if (b && b.startsWith('z9hG4bK')) return `${b}|${e.vias[0].host}|${method}`;
  return `${e.callId}|${e.from.params.get('tag') ?? ''}|${e.cseq.seq}|${method}|${e.vias[0].raw}`;
}

function reasonFor(err: SipParseError): string {
  const base = err.status === 400 ? 'Bad Request' : err.status === 513 ? 'Message Too Large' : err.status === 505 ? 'Version Not Supported' : 'Bad Request';
  return `${base} - ${err.message.replace(/[\r\n]/g, ' ').slice(0, 80)}`;
}

function hostForUri(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

function peerUri(peer: Peer): string {
  return `sip:${hostForUri(peer.address.replace(/^::ffff:/, ''))}:${peer.port}${peer.transport === 'tcp' ? ';transport=tcp' : ''}`;
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
