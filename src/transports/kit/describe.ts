/**
 * What a transport says of itself, beside its code: its door, the audio it speaks and whether it is on. The
 * service lists them at `GET /v1/capabilities`, so a client (or an operator's reviewer) reads what a node
 * accepts instead of guessing from docs.
 */
export interface TransportDescription {
  /** The transport's name in metrics and call records ('ws', 'webrtc', 'realtime', 'twilio', 'sip', …). */
  name: string;
  /** Where callers reach it: an HTTP path, or a SIP URI's host:port and protocols. */
  door: string;
  /** Off in this node's configuration (its door refuses or is not bound). */
  enabled: boolean;
  /** Audio on the wire, as codec/rate pairs ('pcm16/16000', 'opus/48000', 'pcmu/8000'); none for a text door. */
  audio: readonly string[];
  /** Control and events besides audio (JSON messages, SIP INFO / RFC 4733 digits, a data channel). */
  control: string;
}
