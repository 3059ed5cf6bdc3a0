/**
 * SIP dialogs (RFC 3261 §12) as the UAS keeps them: one per call, keyed by Call-ID, with the state, tags,
 * route set and CSeq numbers that requests inside it need, and the media it holds until it ends.
 */
import type dgram from 'node:dgram';
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { CallMedia } from './call.js';
import type { SipHeader, SipRequest } from './message.js';
import type { NegotiatedMedia } from './sdp.js';
import type { Peer } from './transport.js';

export type CallState = 'proceeding' | 'answered' | 'confirmed' | 'ended';

export interface Call {
  /** The SIP Call-ID (the dialog's key in `calls`). */
  callId: string;
  /** Our id for the call's session and record: fresh, never the network's Call-ID. */
  recordId: string;
  log: Logger;
  state: CallState;
  localTag: string;
  remoteTag: string;
  invite: SipRequest;
  inviteKey: string;
  peer: Peer;
  remoteTarget: string;
  routeSet: string[];
  /** Our From (their To + our tag) and our To (their From) for requests we send. */
  localUri: string;
  remoteUri: string;
  localCseq: number;
  remoteCseq: number;
  sdpVersion: number;
  sessionId: string;
  localAddress: string;
  rtpPort: number;
  /** The bound RTP/RTCP pair until CallMedia owns it (closed by releaseMedia if setup fails before). */
  rtpSockets: { rtp: dgram.Socket; rtcp: dgram.Socket } | null;
  media: NegotiatedMedia;
  callMedia: CallMedia | null;
  ringTimer: NodeJS.Timeout | null;
  ringResolve?: () => void;
  okTimer: NodeJS.Timeout | null;
  cancelled: boolean;
  answeredAt: number;
  /** A REFER of ours is in progress. */
  transferring?: boolean;
  /** The same transfer without embedded headers in Refer-To, tried once when the first one fails. */
  referRetry?: (() => void) | null;
}

export const tag = () => randomBytes(8).toString('hex');
export const branch = () => `z9hG4bK${randomBytes(10).toString('hex')}`;

export function hostForUri(address: string): string {
  return address.includes(':') ? `[${address}]` : address;
}

export function peerUri(peer: Peer): string {
  return `sip:${hostForUri(peer.address.replace(/^::ffff:/, ''))}:${peer.port}${peer.transport === 'tcp' ? ';transport=tcp' : ''}`;
}

/** Our Contact in this dialog: where the caller's in-dialog requests reach us. */
export function contactFor(call: Call, sipPort: number): string {
  const transport = call.peer.transport === 'tcp' ? ';transport=tcp' : '';
  return `<sip:agent@${hostForUri(call.localAddress)}:${sipPort}${transport}>`;
}

/** The headers of a request of ours inside the dialog (BYE, REFER); takes the next local CSeq. */
export function inDialogHeaders(call: Call, method: string, sipPort: number, extra: SipHeader[]): SipHeader[] {
  const via = `SIP/2.0/${call.peer.transport.toUpperCase()} ${hostForUri(call.localAddress)}:${sipPort};branch=${branch()};rport`;
  return [
    { name: 'via', value: via },
    { name: 'max-forwards', value: '70' },
    { name: 'from', value: call.localUri },
    { name: 'to', value: call.remoteUri },
    { name: 'call-id', value: call.callId },
    { name: 'cseq', value: `${++call.localCseq} ${method}` },
    ...call.routeSet.map((value) => ({ name: 'route', value })),
    { name: 'contact', value: contactFor(call, sipPort) },
    ...extra,
  ];
}
