/** RTP/RTCP port pairs for calls, from the configured range. */
import dgram from 'node:dgram';
import { randomInt } from 'node:crypto';

/** Allocates even RTP ports (RTCP on port+1) from the configured range. */
export class RtpPortPool {
  private readonly inUse = new Set<number>();
  private cursor: number;

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
        this.inUse.add(port);
        return { rtp, rtcp, port };
      } catch {
        rtp.close();
        rtcp.close();
      }
    }
    throw new Error(`no free RTP port pair in ${this.min}..${this.max}`);
  }

  release(port: number): void {
    this.inUse.delete(port);
  }

  get used(): number {
    return this.inUse.size;
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
