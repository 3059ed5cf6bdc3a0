import dgram from 'node:dgram';
import { describe, expect, it } from 'vitest';
import { RtpStream } from '../src/transports/sip/rtp/stream.js';
import { OutboundStream, webrtcClock } from '../src/transports/webrtc/outbound-stream.js';
import type { AudioSource } from '../src/transports/webrtc/wrtc.js';

/**
 * Socket and stream failures are reported to the call that owns them (which logs them with its call id),
 * never swallowed: RTP/RTCP socket errors of a SIP call, and a WebRTC outbound stream that fails on the
 * shared media clock (which must keep driving every other call).
 */
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

describe('RTP and RTCP socket errors reach the call', () => {
  it('reports each socket error with which socket failed', async () => {
    const rtp = dgram.createSocket('udp4');
    const rtcp = dgram.createSocket('udp4');
    await Promise.all([new Promise<void>((r) => rtp.bind(0, '127.0.0.1', () => r())), new Promise<void>((r) => rtcp.bind(0, '127.0.0.1', () => r()))]);
    const errors: { socket: string; message: string }[] = [];
    const invalid: string[] = [];
    const stream = new RtpStream({
      rtp,
      rtcp,
      remote: null,
      plausible: () => true,
      payloadType: 0,
      telephoneEvent: null,
      clockRate: 8000,
      samplesPerPacket: 160,
      silencePayload: null,
      onAudio: () => {},
      onDtmf: () => {},
      onInvalid: (reason) => invalid.push(reason),
      onSocketError: (socket, err) => errors.push({ socket, message: err.message }),
      onMediaError: (err) => errors.push({ socket: 'clock', message: String(err) }),
    });
    // What the OS reports on a UDP socket (ICMP port unreachable surfaces as an error event).
    rtcp.emit('error', Object.assign(new Error('recv ECONNREFUSED'), { code: 'ECONNREFUSED' }));
    rtp.emit('error', Object.assign(new Error('send EHOSTUNREACH'), { code: 'EHOSTUNREACH' }));
    expect(errors).toEqual([
      { socket: 'rtcp', message: 'recv ECONNREFUSED' },
      { socket: 'rtp', message: 'send EHOSTUNREACH' },
    ]);
    // A socket failure is not miscounted as a junk packet.
    expect(invalid).toEqual([]);
    stream.close();
  });
});

/** An audio source whose chunks go to `onData` (the outbound stream never asks it for a track). */
const sourceFeeding = (onData: AudioSource['onData']): AudioSource => ({
  createTrack: () => {
    throw new Error('not used');
  },
  onData,
});

describe('a failing WebRTC outbound stream', () => {
  it('is reported once and removed, and the media clock keeps pumping the others', async () => {
    const failures: unknown[] = [];
    let brokenCalls = 0;
    const broken = sourceFeeding(() => {
      brokenCalls++;
      throw new Error('audio source closed under us');
    });
    let healthyChunks = 0;
    const healthy = sourceFeeding(() => {
      healthyChunks++;
    });
    const good = new OutboundStream(healthy, (err) => failures.push(err));
    webrtcClock.add(good);
    const bad = new OutboundStream(broken, (err) => failures.push(err));
    webrtcClock.add(bad);
    await sleep(200);
    const before = healthyChunks;
    await sleep(100);
    webrtcClock.delete(good);
    expect(failures).toHaveLength(1);
    expect(String(failures[0])).toMatch(/audio source closed/);
    expect(brokenCalls).toBe(1);
    expect(healthyChunks).toBeGreaterThan(before);
  });
});
