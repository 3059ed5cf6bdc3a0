/** A real client offer (audio + events channel, BUNDLEd), gathered, as a browser or the load tester makes it. */
import { wrtc, type PeerConnection } from '../../src/transports/webrtc/wrtc.js';

export async function clientOffer(): Promise<{ pc: PeerConnection; sdp: string }> {
  const { RTCPeerConnection, nonstandard } = wrtc();
  const pc = new RTCPeerConnection({ iceServers: [] });
  pc.addTrack(new nonstandard.RTCAudioSource().createTrack());
  pc.createDataChannel('events');
  const offer = await pc.createOffer();
  await pc.setLocalDescription(offer);
  for (let i = 0; i < 100 && pc.iceGatheringState !== 'complete'; i++) await new Promise((r) => setTimeout(r, 20));
  return { pc, sdp: pc.localDescription?.sdp ?? offer.sdp };
}
