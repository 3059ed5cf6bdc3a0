import { randomUUID } from 'node:crypto';
import { Counter, Gauge } from 'prom-client';
import type { VoiceService } from '../../service.js';
import { OfferError, WebRtcPeer } from './peer.js';

export { OfferError, EVENTS_CHANNEL, filterHostCandidates } from './peer.js';

export class PeerLimitError extends Error {}

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

  constructor(private readonly service: VoiceService) {
    const registry = service.metrics.registry;
    this.peerGauge = new Gauge({ name: 'voice_agent_webrtc_peers', help: 'RTCPeerConnections alive in this process', registers: [registry] });
    this.offers = new Counter({ name: 'voice_agent_webrtc_offers_total', help: 'SDP offers received, by result', labelNames: ['result'], registers: [registry] });
  }

  get size(): number {
    return this.peers.size;
  }

  /** Answer an offer and start the call; throws OfferError (the client's fault) or PeerLimitError. */
  async accept(offerSdp: string, options: { language?: string; owner: string }): Promise<{ sessionId: string; sdp: string }> {
    const config = this.service.config.webrtc;
    if (this.peers.size >= config.maxPeers) {
      this.offers.inc({ result: 'limit' });
      throw new PeerLimitError(`this server is at its limit of ${config.maxPeers} browser calls; try again shortly`);
    }
    const id = randomUUID();
    const log = this.service.logger.child({ callId: id, transport: 'webrtc' });
    const peer = new WebRtcPeer(id, this.service, config, log, {
      peerCreated: () => this.peerGauge.set(++this.live),
      peerClosed: () => this.peerGauge.set(--this.live),
      ended: (ended) => {
        if (this.peers.get(ended.id) !== ended) return;
        this.peers.delete(ended.id);
        this.owners.delete(ended.id);
      },
    }, options.language);
    this.peers.set(id, peer);
    this.owners.set(id, options.owner);
    try {
      const sdp = await peer.answer(offerSdp);
      this.offers.inc({ result: 'answered' });
      return { sessionId: id, sdp };
    } catch (err) {
      this.offers.inc({ result: err instanceof OfferError ? 'rejected' : 'failed' });
      throw err;
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
