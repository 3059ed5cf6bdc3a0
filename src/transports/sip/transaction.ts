/**
 * SIP transaction layer (RFC 3261 §17): server transactions absorb retransmitted requests by repeating our
 * last response; client transactions (our BYE, REFER) are retransmitted over UDP until a final response or
 * timer F. Keys, timers and matching only: what a request means is the UAS's business.
 */
import type { RequestEssentials, SipRequest, SipResponse } from './message.js';
import { header } from './message.js';
import type { Peer } from './transport.js';

export const T1 = 500;
export const T2 = 4000;
export const TX_LIFETIME_MS = 64 * T1;

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

export class Transactions {
  private readonly serverTx = new Map<string, ServerTx>();
  private readonly clientTx = new Map<string, ClientTx>();

  constructor(private readonly send: (peer: Peer, data: Buffer) => void) {}

  /**
   * A request (not ACK) arrived: true when it opens a new server transaction, false for a retransmission
   * (our last response, if any, has been repeated; nothing else is to be done).
   */
  receive(key: string, peer: Peer): boolean {
    const existing = this.serverTx.get(key);
    if (existing) {
      // A retransmission: repeat our last response, do nothing else.
      if (existing.response) this.send(peer, existing.response);
      return false;
    }
    this.serverTx.set(key, { response: null, peer, expiresAt: performance.now() + TX_LIFETIME_MS });
    return true;
  }

  /** The latest response (provisional too) is what a retransmitted request gets again. */
  responded(key: string, data: Buffer): void {
    const tx = this.serverTx.get(key);
    if (tx) tx.response = data;
  }

  /**
   * Send a request of ours: retransmitted over UDP (timer E, T1 doubling to T2) until a final response or
   * 32 s; `onFinal` gets the final status (408 when none came).
   */
  request(key: string, peer: Peer, data: Buffer, onFinal?: (status: number) => void): void {
    const tx: ClientTx = { timer: null, done: false, onFinal };
    this.clientTx.set(key, tx);
    this.send(peer, data);
    const started = performance.now();
    const expire = () => {
      this.clientTx.delete(key);
      if (!tx.done) tx.onFinal?.(408);
    };
    if (peer.transport === 'udp') {
      let interval = T1;
      const again = () => {
        if (tx.done) return;
        if (performance.now() - started > TX_LIFETIME_MS) return expire();
        this.send(peer, data);
        interval = Math.min(interval * 2, T2);
        tx.timer = setTimeout(again, interval);
      };
      tx.timer = setTimeout(again, interval);
    } else {
      tx.timer = setTimeout(expire, TX_LIFETIME_MS);
    }
  }

  /** A response: a final one completes the client transaction it belongs to. */
  onResponse(res: SipResponse): void {
    const callId = header(res, 'call-id');
    const cseq = header(res, 'cseq');
    if (!callId || !cseq) return;
    const m = /^(\d+)\s+(\S+)$/.exec(cseq.trim());
    if (!m) return;
    const key = clientKey(callId, m[1], m[2]);
    const tx = this.clientTx.get(key);
    if (!tx || res.status < 200) return;
    tx.done = true;
    if (tx.timer) clearTimeout(tx.timer);
    this.clientTx.delete(key);
    tx.onFinal?.(res.status);
  }

  /** Forget server transactions past their lifetime. */
  sweep(): void {
    const now = performance.now();
    for (const [key, tx] of this.serverTx) if (tx.expiresAt < now) this.serverTx.delete(key);
  }

  /** Stop every client transaction's timers (shutdown). */
  clear(): void {
    for (const tx of this.clientTx.values()) if (tx.timer) clearTimeout(tx.timer);
    this.clientTx.clear();
  }
}

/** A client transaction's key: Call-ID, CSeq number and method, as its responses carry them. */
export function clientKey(callId: string, seq: number | string, method: string): string {
  return `${callId}|${seq}|${method}`;
}

export function txKey(req: SipRequest, e: RequestEssentials): string {
  const b = e.vias[0].params.get('branch');
  // RFC 3261 branches are unique per transaction; RFC 2543 peers need the older matching rule.
  const method = req.method === 'ACK' ? 'INVITE' : req.method;
  if (b && b.startsWith('z9hG4bK')) return `${b}|${e.vias[0].host}|${method}`;
  return `${e.callId}|${e.from.params.get('tag') ?? ''}|${e.cseq.seq}|${method}|${e.vias[0].raw}`;
}
