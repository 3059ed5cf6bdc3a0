import type { Logger } from 'pino';
import type { WebSocket } from 'ws';

/**
 * The caller-facing edge of every WebSocket transport (device WS, realtime, telephony media streams): agent
 * media goes out with back-pressure, protocol messages always go out. A peer (or a proxy) that stops reading
 * would otherwise make `ws` buffer the agent's audio in memory without bound, for as long as the call lasts.
 *
 * Media is dropped while the socket holds more than `maxBufferedBytes`; an episode ends (sending resumes)
 * once the peer has drained below half of it, so a peer hovering at the bound is told once, not per frame.
 * Control messages are never dropped: they are small, made at the pace of the conversation, and the
 * protocol breaks without them (marks, clears, response.done).
 */
export interface WsOutboundOptions {
  /** The metric's label (the transport's name, as in the call records). */
  transport: string;
  maxBufferedBytes: number;
  metrics: { droppedAudio(transport: string): void };
  /** The call's logger (a getter: transports bind the call id once the call is admitted). */
  log: () => Logger;
  /** Tell the peer, once per episode, where its protocol has a way to (an error event). */
  notice?: () => void;
}

export class WsOutbound {
  /** Frames dropped in the current episode (0: not dropping). */
  private droppedNow = 0;
  private episodeStart = 0;
  private droppedTotal = 0;

  constructor(
    private readonly socket: WebSocket,
    private readonly options: WsOutboundOptions,
  ) {}

  get open(): boolean {
    return this.socket.readyState === this.socket.OPEN;
  }

  /** Agent media (one frame or payload). False when it was dropped (or the socket is closed): not sent. */
  media(data: string | Uint8Array, binary: boolean): boolean {
    if (!this.open) return false;
    const { maxBufferedBytes, transport } = this.options;
    const buffered = this.socket.bufferedAmount;
    if (buffered > (this.droppedNow > 0 ? maxBufferedBytes / 2 : maxBufferedBytes)) {
      if (this.droppedNow++ === 0) {
        this.episodeStart = performance.now();
        this.log().warn({ bufferedBytes: buffered, maxBufferedBytes }, 'peer is not reading: dropping agent audio');
        this.options.notice?.();
      }
      this.droppedTotal++;
      this.options.metrics.droppedAudio(transport);
      return false;
    }
    if (this.droppedNow > 0) {
      this.log().info({ droppedFrames: this.droppedNow, episodeMs: Math.round(performance.now() - this.episodeStart), bufferedBytes: buffered }, 'peer reads again: agent audio resumes');
      this.droppedNow = 0;
    }
    this.socket.send(data, { binary });
    return true;
  }

  /** The call's logger, naming the transport unless it already does. */
  private log(): Logger {
    const log = this.options.log();
    return 'transport' in log.bindings() ? log : log.child({ transport: this.options.transport });
  }

  /** A protocol message the peer needs: never dropped. */
  control(data: string | Uint8Array, binary = false): void {
    if (this.open) this.socket.send(data, { binary });
  }

  /** Agent media frames dropped on this connection so far. */
  get dropped(): number {
    return this.droppedTotal;
  }
}
