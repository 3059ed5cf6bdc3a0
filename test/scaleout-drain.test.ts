/**
 * A node behind a proxy (Kamailio's dispatcher, HAProxy, nginx) that is draining must tell the proxy so in a way
 * it acts on: SIP OPTIONS probes get 503 (the dispatcher marks the node inactive), and new WebSocket calls and
 * WebRTC offers are refused before the upgrade with 503 and Retry-After (a proxy can retry them on another node,
 * which it cannot do once a socket was upgraded and then closed). Real server, real sockets on 127.0.0.1.
 */
import dgram from 'node:dgram';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { sipServerOf } from '../src/transports/sip/index.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

let server: TestServer;
let sipPort: number;

beforeAll(async () => {
  server = await startTestServer({});
  const sip = sipServerOf(server.server.service);
  if (!sip) throw new Error('SIP transport did not start');
  sipPort = sip.port;
});
afterAll(async () => {
  await server?.stop();
});

/** One SIP OPTIONS over UDP from a fresh socket; resolves with the status code of the answer. */
async function optionsStatus(): Promise<number> {
  const socket = dgram.createSocket('udp4');
  await new Promise<void>((resolve) => socket.bind(0, '127.0.0.1', () => resolve()));
  const port = socket.address().port;
  const answer = new Promise<string>((resolve) => socket.once('message', (m) => resolve(m.toString('utf8'))));
  const probe = [
    `OPTIONS sip:agent@127.0.0.1:${sipPort} SIP/2.0`,
    `Via: SIP/2.0/UDP 127.0.0.1:${port};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`,
    'Max-Forwards: 70',
    'From: <sip:dispatcher@127.0.0.1>;tag=probe1',
    `To: <sip:agent@127.0.0.1:${sipPort}>`,
    `Call-ID: probe-${Math.random().toString(36).slice(2)}`,
    'CSeq: 1 OPTIONS',
    'Content-Length: 0',
    '',
    '',
  ].join('\r\n');
  socket.send(probe, sipPort, '127.0.0.1');
  const text = await Promise.race([answer, new Promise<string>((_, reject) => setTimeout(() => reject(new Error('no answer to OPTIONS')), 2000))]);
  socket.close();
  return Number(/^SIP\/2\.0 (\d{3})/.exec(text)?.[1] ?? 0);
}

/** Opens a WebSocket call; resolves 'open' or the HTTP status it was refused with. */
async function wsAttempt(path: string): Promise<'open' | { status: number; retryAfter: string | undefined }> {
  const ws = new WebSocket(`ws://127.0.0.1:${server.port}${path}`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
  ws.on('error', () => undefined);
  const outcome = await new Promise<'open' | { status: number; retryAfter: string | undefined }>((resolve) => {
    ws.once('open', () => resolve('open'));
    ws.once('unexpected-response', (_req, res) => resolve({ status: res.statusCode ?? 0, retryAfter: res.headers['retry-after'] as string | undefined }));
  });
  ws.terminate();
  return outcome;
}

describe('a draining node tells its proxy', () => {
  it('answers OPTIONS 200 and takes calls while ready; 503 to OPTIONS, WebSocket upgrades and WebRTC offers once draining', async () => {
    expect(await optionsStatus()).toBe(200);
    expect(await wsAttempt('/v1/ws')).toBe('open');

    const drained = server.server.service.drain(1000);
    expect(await optionsStatus()).toBe(503);
    for (const door of ['/v1/ws', '/v1/realtime', '/v1/telephony/twilio']) {
      expect(await wsAttempt(door)).toEqual({ status: 503, retryAfter: '5' });
    }
    const offer = await fetch(`${server.httpUrl}/v1/webrtc/offer`, {
      method: 'POST',
      headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/sdp' },
      body: 'v=0\r\n',
    });
    expect(offer.status).toBe(503);
    expect(offer.headers.get('retry-after')).toBe('5');
    // Health and records stay reachable: the proxy and the operator still see the node.
    const health = await fetch(`${server.httpUrl}/healthz`);
    expect(health.status).toBe(503);
    expect(((await health.json()) as { status: string }).status).toBe('draining');
    await drained;
  });
});
