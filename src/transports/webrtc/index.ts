import { randomUUID } from 'node:crypto';
import { Counter, Gauge } from 'prom-client';
import type { VoiceService } from '../../service.js';
import type { BlockList } from 'node:net';
import { OfferError, WebRtcPeer } from './peer.js';
import { networkList } from '../../core/networks.js';
import { checkOffer, type CheckedOffer } from './offer-policy.js';

export { OfferError, EVENTS_CHANNEL, filterHostCandidates } from './peer.js';

/** Too many browser calls, or too many offers being negotiated at once: HTTP 503 with Retry-After. */
export class PeerLimitError extends Error {
  constructor(
    message: string,
    readonly retryAfterS: number,
  ) {
    super(message);
    this.name = 'PeerLimitError';
  }
}

/**
 * Browser calls over WebRTC: owns the live peers, counts them in /metrics, and ends them on shutdown.
 * Signaling (HTTP) lives in signaling/; this module never sees a request.
 */
export class WebRtcTransport {
  private readonly peers = new Map<string, WebRtcPeer>();
  /** Who opened each call (API key id): only they may end it. */
  private readonly owners = new Map<string, string>();
  private readonly peerGauge: Gauge;
  private readonly offers: Counter<'result'>;
  private live = 0;
  /** Offers between arrival and answer: each holds libwebrtc threads and sockets while ICE gathers. */
  private negotiating = 0;
  private readonly candidateNetworks: BlockList;

  constructor(private readonly service: VoiceService) {
    this.candidateNetworks = networkList(service.config.webrtc.remoteCandidateNetworks, 'webrtc.remoteCandidateNetworks');
    const registry = service.metrics.registry;
    this.peerGauge = new Gauge({ name: 'voice_agent_webrtc_peers', help: 'RTCPeerConnections alive in this process', registers: [registry] });
    this.offers = new Counter({ name: 'voice_agent_webrtc_offers_total', help: 'SDP offers received, by result', labelNames: ['result'], registers: [registry] });
  }

  get size(): number {
    return this.peers.size;
  }

  /**
   * Answer an offer and start the call; throws OfferError (the client's fault), PeerLimitError, or what
   * admission throws (`refusalOf` says what it means). `owner` is the caller's API key id.
   */
  async accept(offerSdp: string, options: { language?: string; owner: string; caller?: Readonly<Record<string, string>> }): Promise<{ sessionId: string; sdp: string }> {
    const config = this.service.config.webrtc;
    if (this.peers.size >= config.maxPeers) {
      this.offers.inc({ result: 'limit' });
      throw new PeerLimitError(`this server is at its limit of ${config.maxPeers} browser calls; try again shortly`, 5);
    }
    // Checked before libwebrtc parses anything: its work per offer grows with sections and candidates.
    let checked: CheckedOffer;
    try {
      checked = checkOffer(offerSdp, { maxMediaSections: config.maxOfferMediaSections, maxRemoteCandidates: config.maxRemoteCandidates, remoteCandidateNetworks: config.remoteCandidateNetworks, opus: { frameMs: config.opusFrameMs, dtx: config.opusDtx } }, this.candidateNetworks);
    } catch (err) {
      this.offers.inc({ result: 'rejected' });
      throw err;
    }
    if (this.negotiating >= config.maxConcurrentOffers) {
      this.offers.inc({ result: 'busy' });
      throw new PeerLimitError(`${this.negotiating} offers are being negotiated; try again in a moment`, 1);
    }
    this.negotiating++;
    const id = randomUUID();
    const log = this.service.logger.child({ callId: id, transport: 'webrtc' });
    if (checked.droppedCandidates > 0) log.info({ dropped: checked.droppedCandidates }, 'remote ICE candidates outside the allowed networks removed');
    const peer = new WebRtcPeer(id, this.service, config, log, {
      peerCreated: () => this.peerGauge.set(++this.live),
      peerClosed: () => this.peerGauge.set(--this.live),
      ended: (ended) => {
        if (this.peers.get(ended.id) !== ended) return;
        this.peers.delete(ended.id);
        this.owners.delete(ended.id);
      },
    }, options.language, options.owner, options.caller);
    this.peers.set(id, peer);
    this.owners.set(id, options.owner);
    try {
      const sdp = await peer.answer(checked.sdp);
      this.offers.inc({ result: 'answered' });
      return { sessionId: id, sdp };
    } catch (err) {
      this.offers.inc({ result: err instanceof OfferError ? 'rejected' : 'failed' });
      throw err;
    } finally {
      this.negotiating--;
    }
  }

  /** End a call by id; false when there is no such call of this owner. */
  async hangup(id: string, owner: string, reason = 'client deleted the session'): Promise<boolean> {
    const peer = this.peers.get(id);
    if (!peer || this.owners.get(id) !== owner) return false;
    await peer.close(reason);
    return true;
  }

  async close(): Promise<void> {
    await Promise.allSettled([...this.peers.values()].map((p) => p.close('server shutting down')));
  }
}
