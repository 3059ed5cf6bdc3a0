import dgram from 'node:dgram';

/** Tests of SIP through Kamailio (scaleout-sip-proxy, scaleout-cluster): a raw UDP caller on 127.0.0.1. */

export const sipStatus = (message: string | undefined): number => Number(/^SIP\/2\.0 (\d{3})/.exec(message ?? '')?.[1] ?? 0);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** A raw UDP SIP caller talking to the proxy: sends requests, collects every message that comes back. */
export async function sipCaller(proxyPort: number) {
  const socket = dgram.createSocket('udp4');
  const got: string[] = [];
  socket.on('message', (m) => got.push(m.toString('utf8')));
  await new Promise<void>((r) => socket.bind(0, '127.0.0.1', () => r()));
  const local = socket.address().port;
  const send = (lines: string[], body = ''): void => {
    const text = [...lines, `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n');
    socket.send(Buffer.from(text), proxyPort, '127.0.0.1');
  };
  const via = () => `Via: SIP/2.0/UDP 127.0.0.1:${local};branch=z9hG4bK${Math.random().toString(36).slice(2)};rport`;
  return { got, local, send, via, close: () => socket.close() };
}

export const sipOffer = (rtpPort: number) =>
  ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${rtpPort} RTP/AVP 8 101`, 'a=rtpmap:8 PCMA/8000', 'a=rtpmap:101 telephone-event/8000', ''].join('\r\n');

export interface ProxiedCall {
  status: number;
  /** The SIP Call-ID (the record's network_id). */
  callId: string;
  routes: string[];
  hangUp(): Promise<void>;
}

/** One call through the proxy: INVITE, the final answer; on 200 the ACK along the Record-Route. */
export async function callThroughProxy(proxyPort: number): Promise<ProxiedCall> {
  const c = await sipCaller(proxyPort);
  const callId = `kam-${Math.random().toString(36).slice(2)}`;
  const uri = `sip:agent@127.0.0.1:${proxyPort}`;
  const from = `From: <sip:tester@127.0.0.1>;tag=${callId}`;
  c.send([`INVITE ${uri} SIP/2.0`, c.via(), 'Max-Forwards: 70', from, `To: <${uri}>`, `Call-ID: ${callId}`, 'CSeq: 1 INVITE', `Contact: <sip:tester@127.0.0.1:${c.local}>`, 'Content-Type: application/sdp'], sipOffer(c.local + 2));
  let final: string | undefined;
  for (let i = 0; i < 100 && !final; i++) {
    final = c.got.find((m) => sipStatus(m) >= 200 && /CSeq: 1 INVITE/i.test(m));
    if (!final) await sleep(50);
  }
  const code = sipStatus(final);
  if (code !== 200) {
    c.close();
    return { status: code, callId, routes: [], hangUp: async () => undefined };
  }
  const to = /^To: (.+)$/im.exec(final!)![1];
  const contact = /^Contact: <([^>]+)>/im.exec(final!)![1];
  // The route set is the Record-Route of the answer, as received (UAC side: in reverse; one proxy here).
  const routes = [...final!.matchAll(/^Record-Route: (.+)$/gim)].map((m) => m[1].trim()).reverse();
  const inDialog = (method: string, cseq: number) => [`${method} ${contact} SIP/2.0`, c.via(), 'Max-Forwards: 70', ...routes.map((r) => `Route: ${r}`), from, `To: ${to}`, `Call-ID: ${callId}`, `CSeq: ${cseq} ${method}`];
  c.send(inDialog('ACK', 1));
  return {
    status: code,
    callId,
    routes,
    hangUp: async () => {
      c.send(inDialog('BYE', 2));
      for (let i = 0; i < 40 && !c.got.some((m) => /CSeq: 2 BYE/i.test(m) && sipStatus(m) === 200); i++) await sleep(50);
      c.close();
    },
  };
}
