/** RTP/RTCP port pairs for calls, from the configured range. */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';

/** Allocates even RTP ports (RTCP on port+1) from the configured range. */
export class RtpPortPool {
  /** Bound pairs by RTP port: the pool owns them until release, so closing the pool frees every port. */
  private readonly inUse = new Map<number, { rtp: dgram.Socket; rtcp: dgram.Socket }>();
  private cursor: number;
  private closed = false;

  constructor(
    readonly min: number,
    readonly max: number,
  ) {
    if (!Number.isInteger(min) || !Number.isInteger(max) || min < 1024 || max > 65535 || max - min < 4) {
      throw new RangeError(`sip.rtpPortMin/rtpPortMax must be a range of at least 4 ports within 1024..65535, got ${min}..${max}`);
    }
    this.cursor = min + (min % 2) + 2 * randomInt(0, Math.max(1, Math.floor((max - min) / 2)));
  }

  /** Bind an RTP/RTCP socket pair on `host`; tries successive ports until one pair binds. */
  async bind(host: string): Promise<{ rtp: dgram.Socket; rtcp: dgram.Socket; port: number }> {
    const even = this.min + (this.min % 2);
    const slots = Math.floor((this.max - even) / 2);
    for (let attempt = 0; attempt < Math.min(slots, 64); attempt++) {
      this.cursor += 2;
      if (this.cursor + 1 > this.max) this.cursor = even;
      const port = this.cursor;
      if (this.inUse.has(port)) continue;
      const type = host.includes(':') ? 'udp6' : 'udp4';
      const rtp = dgram.createSocket(type);
      const rtcp = dgram.createSocket(type);
      try {
        await bindSocket(rtp, port, host);
        await bindSocket(rtcp, port + 1, host);
      } catch {
        closeSockets([rtp, rtcp]);
        continue;
      }
      if (this.closed || this.inUse.has(port)) {
        // Closed while binding (shutdown), or another bind took the port meanwhile: this pair is not handed out.
        closeSockets([rtp, rtcp]);
        if (this.closed) break;
        continue;
      }
      this.inUse.set(port, { rtp, rtcp });
      return { rtp, rtcp, port };
    }
    throw new Error(this.closed ? 'RTP port pool is closed' : `no free RTP port pair in ${this.min}..${this.max}`);
  }

  /** Free the port and close its socket pair (the stream may have closed it already). */
  release(port: number): void {
    const pair = this.inUse.get(port);
    if (!pair) return;
    this.inUse.delete(port);
    closeSockets([pair.rtp, pair.rtcp]);
  }

  /** Take binds again after close() (a server started again). */
  reopen(): void {
    this.closed = false;
  }

  /** Release every port still held and refuse new binds; returns how many were still held. */
  close(): number {
    this.closed = true;
    const held = [...this.inUse.keys()];
    for (const port of held) this.release(port);
    return held.length;
  }

  get used(): number {
    return this.inUse.size;
  }
}

/** Close sockets that may already be closed (dgram throws on a second close). */
export function closeSockets(sockets: dgram.Socket[]): void {
  for (const socket of sockets) {
    try {
      socket.close();
    } catch {
      // Already closed: nothing is held.
    }
  }
}

function bindSocket(socket: dgram.Socket, port: number, host: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    socket.once('error', onError);
    socket.bind(port, host, () => {
      socket.off('error', onError);
      resolve();
    });
  });
}
