/**
 * SIP user agent server, the transaction user of RFC 3261: answers INVITEs with an SDP answer, handles ACK, BYE,
 * CANCEL, OPTIONS, re-INVITE (hold/resume), INFO DTMF and NOTIFY, transfers with REFER and hangs up with BYE.
 * Sockets and framing are transport.ts, retransmission and matching transaction.ts, dialog state dialog.ts;
 * every call gets a Session through the VoiceService (call.ts): this file is only signalling.
 */
import net from 'node:net';
import os from 'node:os';
import { randomUUID } from 'node:crypto';
import type { BlockList } from 'node:net';
import type { Logger } from 'pino';
import { sipConfigProblems, type SipConfig } from './options.js';
import type { VoiceService } from '../../service.js';
import { refusalOf, reportRefusal } from '../kit/refusal.js';
import { DigestAuth } from './access.js';
import { isAllowed, networkList } from '../../core/networks.js';
import { CallMedia } from './call.js';
import { callerFromSip, dialledLanguage } from '../../integration/context.js';
import {
  buildResponse,
  header,
  headerList,
  serializeSipMessage,
  type RequestEssentials,
  type SipHeader,
  type SipRequest,
  type SipResponse,
} from './message.js';
import { RtpPortPool } from './rtp/port-pool.js';
import { SdpError, buildAnswer, negotiate, parseSdp, type NegotiatedMedia } from './sdp.js';
import { contextHeaders, referToUri, type Handover } from '../../integration/handover.js';
import { SipTransport, responseVias, type Peer } from './transport.js';
import { T1, T2, TX_LIFETIME_MS, Transactions, clientKey, txKey } from './transaction.js';
import { contactFor, hostForUri, inDialogHeaders, peerUri, tag, type Call } from './dialog.js';

const ALLOW = 'INVITE, ACK, BYE, CANCEL, OPTIONS, INFO, NOTIFY';
/** Methods we know but do not serve: 405 with Allow rather than 501. */
const KNOWN = new Set(['REGISTER', 'SUBSCRIBE', 'MESSAGE', 'REFER', 'UPDATE', 'PRACK', 'PUBLISH']);

export interface SipServerOptions {
  service: VoiceService;
  config: SipConfig;
  logger: Logger;
}

export class SipServer {
  private readonly transport: SipTransport;
  private readonly transactions: Transactions;
  readonly calls = new Map<string, Call>();
  /** Where media may go besides the INVITE's source (sip.mediaNetworks). */
  private readonly mediaNetworks: BlockList;
  private readonly digest: DigestAuth | null;
  private readonly ports: RtpPortPool;
  private readonly log: Logger;
  private sweeper: NodeJS.Timeout | null = null;
  /** stop() has begun: no new call is taken. */
  private stopping = false;

  constructor(private readonly options: SipServerOptions) {
    const c = options.config;
    // The same declaration the config file is checked against: a server built directly gets the same errors.
    const problems = sipConfigProblems(c);
    if (problems.length > 0) throw new Error(`invalid sip configuration: ${problems.join('; ')}`);
    this.log = options.logger.child({ transport: 'sip' });
    this.mediaNetworks = networkList(c.mediaNetworks ?? [], 'sip.mediaNetworks');
    this.digest = c.digest ? new DigestAuth(c.digest) : null;
    this.ports = new RtpPortPool(c.rtpPortMin, c.rtpPortMax);
    this.transport = new SipTransport({
      host: c.host,
      port: c.port,
      receiveBufferBytes: c.udpReceiveBufferBytes,
      allow: networkList(c.allowFrom, 'sip.allowFrom'),
      limits: { maxMessageBytes: c.maxMessageBytes, maxHeaders: 128 },
      log: this.log,
      handler: {
        onRequest: (req, e, peer) => this.onRequest(req, e, peer),
        onResponse: (res) => this.onResponse(res),
        callsOn: (socket) => [...this.calls.values()].filter((call) => call.peer.socket === socket).map((call) => call.callId),
      },
    });
    this.transactions = new Transactions((peer, data) => this.transport.send(peer, data));
  }

  /** Counts of what happened, for tests and /metrics-style inspection. */
  get counters(): SipTransport['counters'] {
    return this.transport.counters;
  }

  /** RTP port pairs held by calls (0 when no call holds one: nothing leaked). */
  get rtpPortsInUse(): number {
    return this.ports.used;
  }

  /** The bound SIP port (UDP and TCP share it). */
  get port(): number {
    return this.transport.port;
  }

  async start(): Promise<number> {
    const { host } = this.options.config;
    this.stopping = false;
    this.ports.reopen();
    const port = await this.transport.listen();
    this.sweeper = setInterval(() => this.transactions.sweep(), 2000);
    this.sweeper.unref();
    this.log.info({ host, port, allowFrom: this.options.config.allowFrom, digest: this.digest !== null }, 'SIP listening on UDP and TCP');
    return port;
  }

  /**
   * Shut down in order, server → calls → RTP streams → ports: every call is hung up (its media, session and
   * port released), then the sockets close, then the port pool closes whatever a call still held (a bug if
   * anything: logged), so no error path outlives the server.
   */
  async stop(): Promise<void> {
    this.stopping = true;
    if (this.sweeper) clearInterval(this.sweeper);
    await Promise.allSettled([...this.calls.values()].map((call) => this.hangup(call, 'shutdown')));
    this.transactions.clear();
    await this.transport.close();
    const leaked = this.ports.close();
    if (leaked > 0) this.log.warn({ ports: leaked }, 'RTP ports still held at shutdown were closed');
  }

  // ---------------------------------------------------------------- dispatch

  private onRequest(req: SipRequest, e: RequestEssentials, peer: Peer): void {
    const key = txKey(req, e);
    // A retransmission: the transaction layer repeated our last response; nothing else to do.
    if (req.method !== 'ACK' && !this.transactions.receive(key, peer)) return;
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
          this.log.error({ err, sipCallId: e.callId }, 'INVITE handling failed');
          try {
            this.respond(req, peer, key, 500);
          } catch (respondErr) {
            this.log.error({ err: respondErr, sipCallId: e.callId }, 'could not answer the failed INVITE');
          }
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
    const response = buildResponse(req, status, { ...options, vias: responseVias(req, peer) });
    if (status === 501 || status === 405 || status === 420 || status === 483) this.log.info({ method: req.method.slice(0, 32), status }, 'SIP request refused');
    const data = serializeSipMessage(response);
    // The latest response (provisional too) is what a retransmitted request gets again.
    if (key) this.transactions.responded(key, data);
    this.transport.send(peer, data);
    return data;
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
    // `callId` in our logs is always our record's id (the edge binds it); the network's is `sipCallId`.
    const log = this.log.child({ sipCallId: e.callId });
    if (!service.ready || this.stopping) {
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
      media = negotiate(parseSdp(req.body.toString('utf8')), config.codecs, { comfortNoise: config.comfortNoise });
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
      try {
        if (call.state !== 'ended') {
          if (answered) this.sendBye(call, 'internal_error');
          else this.respond(req, peer, key, 500, { toTag: localTag });
        }
      } finally {
        // Even when the answer cannot be sent, the slot, the port and the session are given back.
        await this.endCall(call, 'internal_error');
      }
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
    this.respond(req, peer, key, 180, { toTag: localTag, headers: [{ name: 'contact', value: contactFor(call, this.port) }] });
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
      // The kit's table: 486 at the key's limit, 404 for a number or agent this deployment does not answer,
      // 503 otherwise (a proxy tries another node), with Retry-After where trying again later may succeed.
      const refusal = refusalOf(err);
      reportRefusal(refusal, err, log, service.metrics);
      const headers = refusal.retryAfterS !== undefined ? [{ name: 'retry-after', value: String(refusal.retryAfterS) }] : [];
      this.respond(req, peer, key, refusal.sip, { toTag: localTag, headers });
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
        { name: 'contact', value: contactFor(call, this.port) },
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
      this.transport.send(call.peer, data);
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
        media = negotiate(parseSdp(req.body.toString('utf8')), [call.media.codec], { comfortNoise: this.options.config.comfortNoise });
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
    // The port and media go back now, not when the INVITE's setup next looks (it may be waiting on admission).
    this.releaseMedia(call, 'cancelled').catch((err: unknown) => call.log.error({ err }, 'releasing a cancelled call failed'));
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
    try {
      if (call.state === 'proceeding') {
        call.cancelled = true;
        call.ringResolve?.();
        this.respond(call.invite, call.peer, call.inviteKey, 480, { toTag: call.localTag });
      } else {
        this.sendBye(call, reason);
      }
      call.log.info({ reason }, 'hanging up');
    } finally {
      // A BYE or 480 that cannot be sent must not keep the call, its port or its session.
      await this.endCall(call, reason);
    }
  }

  private sendBye(call: Call, reason: string): void {
    this.sendInDialog(call, 'BYE', [{ name: 'reason', value: `SIP;cause=200;text="${reason}"` }]);
  }

  /**
   * A request of ours inside the dialog (BYE, REFER): retransmitted over UDP (timer E, T1 doubling to T2)
   * until a final response or 32 s; `onFinal` gets the final status (408 when none came).
   */
  private sendInDialog(call: Call, method: string, extra: SipHeader[], onFinal?: (status: number) => void): void {
    const headers = inDialogHeaders(call, method, this.port, extra);
    const data = serializeSipMessage({ kind: 'request', method, uri: call.remoteTarget, headers, body: Buffer.alloc(0) });
    this.transactions.request(clientKey(call.callId, call.localCseq, method), call.peer, data, onFinal);
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
      { name: 'referred-by', value: `<sip:agent@${hostForUri(call.localAddress)}:${this.port}>` },
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
    this.transactions.onResponse(res);
  }

  private async endCall(call: Call, reason: string): Promise<void> {
    call.state = 'ended';
    if (call.okTimer) clearTimeout(call.okTimer);
    if (call.ringTimer) clearTimeout(call.ringTimer);
    if (this.calls.get(call.callId) === call) this.calls.delete(call.callId);
    await this.releaseMedia(call, reason);
  }

  /** Frees what the call holds on the media side: its session, its sockets and its port (idempotent). */
  private async releaseMedia(call: Call, reason: string): Promise<void> {
    const media = call.callMedia;
    call.callMedia = null;
    call.rtpSockets = null;
    // The pool closes the socket pair with its port, whether CallMedia owns it yet or not.
    if (call.rtpPort !== 0) this.ports.release(call.rtpPort);
    call.rtpPort = 0;
    if (!media) return;
    try {
      await media.close(reason);
    } catch (err) {
      // Port and slot are already free; a failing close is logged here so no caller (void hangups) sees a rejection.
      call.log.error({ err }, 'closing the call media failed');
    }
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
}
