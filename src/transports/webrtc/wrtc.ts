/**
 * The slice of @roamhq/wrtc (libwebrtc for Node) this service uses, typed here: the package's own typings
 * lean on DOM globals that a Node build does not have, which would leave everything `any`.
 */
import { createRequire } from 'node:module';

export interface IceServer {
  urls: string | string[];
  username?: string;
  credential?: string;
}

export interface PeerConfiguration {
  iceServers: IceServer[];
  /** Non-standard (node-webrtc): UDP/TCP ports the ICE agent binds. */
  portRange?: { min: number; max: number };
}

export interface SessionDescription {
  type: 'offer' | 'answer' | 'pranswer' | 'rollback';
  sdp: string;
}

export interface MediaTrack {
  readonly kind: string;
  readonly id: string;
  stop(): void;
}

export interface RtpSender {
  readonly track: MediaTrack | null;
  replaceTrack(track: MediaTrack | null): Promise<void>;
}

export interface RtpTransceiver {
  readonly mid: string | null;
  direction: 'sendrecv' | 'sendonly' | 'recvonly' | 'inactive' | 'stopped';
  readonly sender: RtpSender;
  readonly receiver: { readonly track: MediaTrack };
}

export interface DataChannel {
  readonly label: string;
  readonly readyState: 'connecting' | 'open' | 'closing' | 'closed';
  readonly bufferedAmount: number;
  binaryType: string;
  onopen: (() => void) | null;
  onclose: (() => void) | null;
  onerror: ((event: unknown) => void) | null;
  onmessage: ((event: { data: string | ArrayBuffer }) => void) | null;
  send(data: string | Uint8Array): void;
  close(): void;
}

export type PeerState = 'new' | 'connecting' | 'connected' | 'disconnected' | 'failed' | 'closed';

export interface PeerConnection {
  readonly connectionState: PeerState;
  readonly iceConnectionState: 'new' | 'checking' | 'connected' | 'completed' | 'disconnected' | 'failed' | 'closed';
  readonly iceGatheringState: 'new' | 'gathering' | 'complete';
  readonly localDescription: SessionDescription | null;
  onconnectionstatechange: (() => void) | null;
  oniceconnectionstatechange: (() => void) | null;
  onicegatheringstatechange: (() => void) | null;
  ontrack: ((event: { track: MediaTrack }) => void) | null;
  ondatachannel: ((event: { channel: DataChannel }) => void) | null;
  setRemoteDescription(description: SessionDescription): Promise<void>;
  setLocalDescription(description: SessionDescription): Promise<void>;
  createAnswer(): Promise<SessionDescription>;
  createOffer(): Promise<SessionDescription>;
  addTrack(track: MediaTrack): RtpSender;
  addTransceiver(trackOrKind: MediaTrack | 'audio', init?: { direction?: RtpTransceiver['direction'] }): RtpTransceiver;
  getTransceivers(): RtpTransceiver[];
  createDataChannel(label: string, init?: { ordered?: boolean; negotiated?: boolean; id?: number }): DataChannel;
  /** Standard stats: a map of report id → report (type, kind, jitter, packetsLost, …). */
  getStats(): Promise<Map<string, Record<string, unknown>>>;
  close(): void;
}

/** One 10 ms chunk of decoded audio from a remote track (after libwebrtc's jitter buffer and decoder). */
export interface SinkAudioData {
  samples: Int16Array;
  sampleRate: number;
  bitsPerSample: number;
  channelCount: number;
  numberOfFrames: number;
}

export interface AudioSink {
  ondata: ((data: SinkAudioData) => void) | null;
  stop(): void;
}

/** Feeds PCM into a local track; libwebrtc expects 10 ms per onData call. */
export interface AudioSource {
  createTrack(): MediaTrack;
  onData(data: { samples: Int16Array; sampleRate: number; bitsPerSample: 16; channelCount: number; numberOfFrames: number }): void;
}

export interface Wrtc {
  RTCPeerConnection: new (configuration: PeerConfiguration) => PeerConnection;
  nonstandard: {
    RTCAudioSink: new (track: MediaTrack) => AudioSink;
    RTCAudioSource: new () => AudioSource;
  };
}

let loaded: Wrtc | null = null;

/** Loads the native module on first use, so processes that never take a WebRTC call never map libwebrtc. */
export function wrtc(): Wrtc {
  loaded ??= createRequire(import.meta.url)('@roamhq/wrtc') as Wrtc;
  return loaded;
}
