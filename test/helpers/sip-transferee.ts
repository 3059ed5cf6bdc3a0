/**
 * A scripted SIP caller over UDP on 127.0.0.1 that does what RFC 3515 asks of a caller's UA when it is
 * REFERred: accept (202), INVITE the Refer-To target with the URI's embedded headers as headers (RFC 3261
 * §19.1.5), report the outcome in NOTIFYs (message/sipfrag). baresip 1.0 cannot parse a Refer-To with
 * embedded headers, so the handover test plays the caller with this.
 */
import dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';

interface Parsed {
  start: string;
  headers: Map<string, string>;
  body: string;
}

function parse(text: string): Parsed {
  const [head, ...rest] = text.split('\r\n\r\n');
  const lines = head.split('\r\n');
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(':');
    if (colon > 0) headers.set(line.slice(0, colon).trim().toLowerCase(), line.slice(colon + 1).trim());
  }
  return { start: lines[0], headers, body: rest.join('\r\n\r\n') };
}

const tag = () => randomBytes(6).toString('hex');
const branch = () => `z9hG4bK${randomBytes(8).toString('hex')}`;

export class SipTransferee {
  /** Every message received, as text, in order. */
  readonly received: string[] = [];
  private readonly socket = dgram.createSocket('udp4');
  private readonly rtp = dgram.createSocket('udp4');
  private port = 0;
  private cseq = 1;
  private readonly localTag = tag();
  private readonly callId = `${randomBytes(8).toString('hex')}@127.0.0.1`;
  private remoteTag = '';
  private waiters: { match: (m: Parsed) => boolean; resolve: (m: Parsed) => void }[] = [];

  async start(): Promise<void> {
    await Promise.all([
      new Promise<void>((r) => this.socket.bind(0, '127.0.0.1', () => r())),
      new Promise<void>((r) => this.rtp.bind(0, '127.0.0.1', () => r())),
    ]);
    this.port = this.socket.address().port;
    this.socket.on('message', (data) => {
      const text = data.toString('utf8');
      this.received.push(text);
      const m = parse(text);
      const i = this.waiters.findIndex((w) => w.match(m));
      if (i >= 0) this.waiters.splice(i, 1)[0].resolve(m);
    });
  }

  private next(match: (m: Parsed) => boolean, timeoutMs = 20_000): Promise<Parsed> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no such SIP message in time')), timeoutMs);
      this.waiters.push({ match, resolve: (m) => (clearTimeout(timer), resolve(m)) });
    });
  }

  private send(port: number, lines: string[], body = ''): void {
    this.socket.send(Buffer.from(`${lines.join('\r\n')}\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`), port, '127.0.0.1');
  }

  private sdp(): string {
    const port = this.rtp.address().port;
    return ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${port} RTP/AVP 0`, 'a=rtpmap:0 PCMU/8000', 'a=sendrecv', ''].join('\r\n');
  }

  private via(): string {
    return `Via: SIP/2.0/UDP 127.0.0.1:${this.port};branch=${branch()};rport`;
  }

  /** Place a call to the agent; resolves once it is answered and acknowledged. */
  async call(agentPort: number): Promise<void> {
    const uri = `sip:agent@127.0.0.1:${agentPort}`;
    const answered = this.next((m) => m.start.startsWith('SIP/2.0 200') && (m.headers.get('cseq') ?? '').endsWith('INVITE'));
    this.send(agentPort, [`INVITE ${uri} SIP/2.0`, this.via(), 'Max-Forwards: 70', `From: <sip:caller@127.0.0.1>;tag=${this.localTag}`, `To: <${uri}>`, `Call-ID: ${this.callId}`, `CSeq: ${this.cseq} INVITE`, `Contact: <sip:caller@127.0.0.1:${this.port}>`, 'Content-Type: application/sdp'], this.sdp());
    const ok = await answered;
    this.remoteTag = /;tag=([^;]+)/.exec(ok.headers.get('to') ?? '')?.[1] ?? '';
    this.send(agentPort, [`ACK ${uri} SIP/2.0`, this.via(), 'Max-Forwards: 70', `From: <sip:caller@127.0.0.1>;tag=${this.localTag}`, `To: <${uri}>;tag=${this.remoteTag}`, `Call-ID: ${this.callId}`, `CSeq: ${this.cseq} ACK`]);
  }

  /**
   * Wait for the agent's REFER, accept it, INVITE the target with the embedded headers, and NOTIFY the agent of
   * the target's answer. Resolves with the REFER and the INVITE sent to the target.
   */
  async followRefer(agentPort: number): Promise<{ refer: string; invite: string; targetPort: number }> {
    const refer = await this.next((m) => m.start.startsWith('REFER '));
    const referText = this.received[this.received.length - 1];
    const respond = (status: string) =>
      this.send(agentPort, [`SIP/2.0 ${status}`, `Via: ${refer.headers.get('via')}`, `From: ${refer.headers.get('from')}`, `To: ${refer.headers.get('to')}`, `Call-ID: ${this.callId}`, `CSeq: ${refer.headers.get('cseq')}`]);
    respond('202 Accepted');
    const referTo = /<([^>]+)>/.exec(refer.headers.get('refer-to') ?? '')?.[1] ?? '';
    const [target, query = ''] = referTo.split('?');
    const embedded = query ? query.split('&').map((pair) => pair.split('=').map(decodeURIComponent)).map(([n, v]) => `${n}: ${v}`) : [];
    const targetPort = Number(/:(\d+)$/.exec(target)?.[1] ?? 5060);
    const inviteId = `${randomBytes(8).toString('hex')}@127.0.0.1`;
    const fromTag = tag();
    const inviteLines = [`INVITE ${target} SIP/2.0`, this.via(), 'Max-Forwards: 70', `From: <sip:caller@127.0.0.1>;tag=${fromTag}`, `To: <${target}>`, `Call-ID: ${inviteId}`, 'CSeq: 1 INVITE', `Contact: <sip:caller@127.0.0.1:${this.port}>`, `Referred-By: ${refer.headers.get('referred-by') ?? ''}`, ...embedded, 'Content-Type: application/sdp'];
    const answered = this.next((m) => m.start.startsWith('SIP/2.0 2') && m.headers.get('call-id') === inviteId);
    this.send(targetPort, inviteLines, this.sdp());
    const ok = await answered;
    const toTag = /;tag=([^;]+)/.exec(ok.headers.get('to') ?? '')?.[1] ?? '';
    this.send(targetPort, [`ACK ${target} SIP/2.0`, this.via(), 'Max-Forwards: 70', `From: <sip:caller@127.0.0.1>;tag=${fromTag}`, `To: <${target}>;tag=${toTag}`, `Call-ID: ${inviteId}`, 'CSeq: 1 ACK']);
    this.targetDialog = { target, targetPort, fromTag, toTag, inviteId };
    // The transfer worked: tell the agent (its leg then ends with BYE).
    const agentUri = /<([^>]+)>/.exec(refer.headers.get('contact') ?? '')?.[1] ?? `sip:agent@127.0.0.1:${agentPort}`;
    this.send(agentPort, [`NOTIFY ${agentUri} SIP/2.0`, this.via(), 'Max-Forwards: 70', `From: <sip:caller@127.0.0.1>;tag=${this.localTag}`, `To: <sip:agent@127.0.0.1:${agentPort}>;tag=${this.remoteTag}`, `Call-ID: ${this.callId}`, `CSeq: ${++this.cseq} NOTIFY`, 'Event: refer', 'Subscription-State: terminated;reason=noresource', 'Content-Type: message/sipfrag'], 'SIP/2.0 200 OK\r\n');
    const bye = await this.next((m) => m.start.startsWith('BYE '));
    this.send(agentPort, ['SIP/2.0 200 OK', `Via: ${bye.headers.get('via')}`, `From: ${bye.headers.get('from')}`, `To: ${bye.headers.get('to')}`, `Call-ID: ${this.callId}`, `CSeq: ${bye.headers.get('cseq')}`]);
    return { refer: referText, invite: `${inviteLines.join('\r\n')}\r\n`, targetPort };
  }

  private targetDialog: { target: string; targetPort: number; fromTag: string; toTag: string; inviteId: string } | null = null;

  /** Hang up the call with the target. */
  async hangUpTarget(): Promise<void> {
    const d = this.targetDialog;
    if (!d) return;
    const done = this.next((m) => m.start.startsWith('SIP/2.0 200') && m.headers.get('call-id') === d.inviteId, 5000);
    this.send(d.targetPort, [`BYE ${d.target} SIP/2.0`, this.via(), 'Max-Forwards: 70', `From: <sip:caller@127.0.0.1>;tag=${d.fromTag}`, `To: <${d.target}>;tag=${d.toTag}`, `Call-ID: ${d.inviteId}`, 'CSeq: 2 BYE']);
    await done;
  }

  close(): void {
    this.socket.close();
    this.rtp.close();
  }
}
