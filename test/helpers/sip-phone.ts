/** A phone on a UDP socket of 127.0.0.1 that talks to a test server's SIP transport. */
import dgram from 'node:dgram';
import type { VoiceService } from '../../src/service.js';
import { sipServerOf } from '../../src/transports/sip/index.js';
import type { SipServer } from '../../src/transports/sip/uas.js';

export interface UdpSipPhone {
  sip: SipServer;
  /** This phone's own UDP port. */
  port: number;
  /** Every message received, as text, in order. */
  got: string[];
  send(message: string): void;
  close(): void;
}

export async function udpSipPhone(service: VoiceService): Promise<UdpSipPhone> {
  const sip = sipServerOf(service);
  if (!sip) throw new Error('SIP transport did not start');
  const socket = dgram.createSocket('udp4');
  const got: string[] = [];
  socket.on('message', (d) => got.push(d.toString('utf8')));
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  return {
    sip,
    port: socket.address().port,
    got,
    send: (message) => socket.send(Buffer.from(message), sip.port, '127.0.0.1'),
    close: () => socket.close(),
  };
}
