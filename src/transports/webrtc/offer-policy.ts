/**
 * What a browser's SDP offer may ask of this server, checked before libwebrtc sees it. libwebrtc opens
 * sockets for every unbundled m= section and probes every remote candidate it is given: an offer with
 * hundreds of sections froze the whole process, and candidates naming internal addresses turned the ICE
 * agent into a port scanner. A real browser offer has one audio section and one data section, BUNDLEd,
 * and a handful of candidates.
 */
import { networkList } from '../../core/networks.js';
import { BlockList, isIP } from 'node:net';
import { OfferError } from './peer.js';
import type { OpusFrameMs } from './options.js';

export interface OfferPolicy {
  /** m= sections an offer may hold (audio + data channel, room for a video the page did not mean to add). */
  maxMediaSections: number;
  /** Distinct usable ICE candidates (transport, address, port) an offer may list. */
  maxRemoteCandidates: number;
  /** Networks (CIDRs) remote candidates may point at besides public addresses. */
  remoteCandidateNetworks: readonly string[];
  /** How this server's calls use Opus (setOpusParameters). */
  opus: OpusChoices;
}

export interface OpusChoices {
  /** Frame (packet) length both ways. */
  frameMs: OpusFrameMs;
  /** Discontinuous transmission both ways: a packet every 400 ms instead of 50 a second while a side is silent. */
  dtx: boolean;
}

/** Packet-length parameters of the fmtp line (RFC 7587 / RFC 4566) and the attributes that carry them. */
const FRAMING_PARAMS = new Set(['ptime', 'minptime', 'maxptime']);

/**
 * Puts the audio section's Opus framing in this server's hands, in an offer (what this server's libwebrtc then sends)
 * and in the answer (what the browser sends back):
 * - every `a=ptime`/`a=maxptime` line and every `ptime`/`minptime`/`maxptime` fmtp parameter is removed and
 *   `a=ptime:<frameMs>` set. libwebrtc's Opus setup aborts the whole process (SIGILL, every call on the node dropped)
 *   on some of those values in a remote description: measured with this build, `maxptime` under 20 (`a=maxptime:10`,
 *   or in the fmtp line), `minptime` over 120, or a `minptime` over the `maxptime`. So no caller's value reaches it;
 *   `a=ptime` is the one libwebrtc reads to size the frames it sends, and a decoder takes any Opus frame length.
 * - with `dtx`, each Opus format gets `usedtx=1` (RFC 7587: the receiver prefers DTX), which libwebrtc and browsers
 *   honour when they send; without it, what the other side asked is left as it is.
 */
export function setOpusParameters(sdp: string, opus: OpusChoices): string {
  const lines = sdp.split(/\r?\n/);
  // A trailing CRLF leaves an empty last element: keep it last.
  const trailing = lines.length > 0 && lines[lines.length - 1] === '' ? lines.pop() : undefined;
  // The audio section's Opus payload types (its rtpmap lines may follow the fmtp lines).
  const opusTypes = new Set<string>();
  let inAudio = false;
  for (const line of lines) {
    if (line.startsWith('m=')) inAudio = line.startsWith('m=audio ');
    const rtpmap = inAudio ? /^a=rtpmap:(\d+) opus\//i.exec(line) : null;
    if (rtpmap) opusTypes.add(rtpmap[1]);
  }
  inAudio = false;
  const out: string[] = [];
  const withFmtp = new Set<string>();
  const closeAudio = (): void => {
    if (!inAudio) return;
    if (opus.dtx) for (const type of opusTypes) if (!withFmtp.has(type)) out.push(`a=fmtp:${type} usedtx=1`);
    out.push(`a=ptime:${opus.frameMs}`);
    inAudio = false;
  };
  for (const line of lines) {
    if (line.startsWith('m=')) {
      closeAudio();
      inAudio = line.startsWith('m=audio ');
      out.push(line);
      continue;
    }
    if (!inAudio) {
      out.push(line);
      continue;
    }
    if (/^a=(max)?ptime:/i.test(line)) continue;
    const fmtp = /^a=fmtp:(\S+) (.*)$/.exec(line);
    if (fmtp) {
      const isOpus = opusTypes.has(fmtp[1]);
      if (isOpus) withFmtp.add(fmtp[1]);
      const params = fmtp[2]
        .split(';')
        .map((p) => p.trim())
        .filter((p) => {
          const name = p.split('=')[0].trim().toLowerCase();
          return p !== '' && !FRAMING_PARAMS.has(name) && !(isOpus && opus.dtx && name === 'usedtx');
        });
      if (isOpus && opus.dtx) params.push('usedtx=1');
      if (params.length > 0) out.push(`a=fmtp:${fmtp[1]} ${params.join(';')}`);
      continue;
    }
    out.push(line);
  }
  closeAudio();
  if (trailing !== undefined) out.push(trailing);
  return out.join('\r\n');
}

/** Addresses an ICE agent must never be steered to unless the operator allows their network. */
const NON_PUBLIC: BlockList = (() => {
  const list = new BlockList();
  for (const [net, prefix] of [
    ['0.0.0.0', 8],
    ['10.0.0.0', 8],
    ['100.64.0.0', 10],
    ['127.0.0.0', 8],
    ['169.254.0.0', 16],
    ['172.16.0.0', 12],
    ['192.0.0.0', 24],
    ['192.168.0.0', 16],
    ['198.18.0.0', 15],
    ['224.0.0.0', 3],
  ] as const)
    list.addSubnet(net, prefix, 'ipv4');
  for (const [net, prefix] of [
    ['::', 127],
    ['fc00::', 7],
    ['fe80::', 10],
    ['ff00::', 8],
  ] as const)
    list.addSubnet(net, prefix, 'ipv6');
  return list;
})();


/** True for a literal IP that is public, or inside `allowed`. Hostnames (mDNS .local names included) are never. */
export function candidateAddressAllowed(candidate: string, allowed: BlockList): boolean {
  // IPv4-mapped IPv6 is judged as the IPv4 address it is (BlockList matches IPv4 against ::ffff:0:0/96 rules).
  const address = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(candidate)?.[1] ?? candidate;
  const family = isIP(address);
  if (family === 0) return false;
  const type = family === 4 ? 'ipv4' : 'ipv6';
  if (allowed.check(address, type)) return true;
  return !NON_PUBLIC.check(address, type);
}

export interface CheckedOffer {
  sdp: string;
  /** Remote candidates removed by the address policy. */
  droppedCandidates: number;
}

/**
 * Validates an offer's shape and removes remote candidates the policy forbids. Throws OfferError (HTTP 400).
 * Removing a browser's private candidates does not break a LAN call: its connectivity checks still reach our
 * candidates, and ICE answers them as peer-reflexive (a source that really sent to us, not a target we were told).
 */
export function checkOffer(sdp: string, policy: OfferPolicy, allowed: BlockList = networkList(policy.remoteCandidateNetworks, 'webrtc.remoteCandidateNetworks')): CheckedOffer {
  const lines = sdp.split(/\r?\n/);
  if (lines[0]?.trim() !== 'v=0') throw new OfferError('invalid_sdp', 'the SDP offer must start with v=0');
  const sections = lines.filter((l) => l.startsWith('m=')).length;
  if (sections === 0) throw new OfferError('no_audio', 'the SDP offer has no media section');
  if (sections > policy.maxMediaSections) {
    throw new OfferError('invalid_sdp', `the SDP offer has ${sections} media sections; at most ${policy.maxMediaSections} are accepted (one audio, one data channel)`);
  }
  const audio = lines.filter((l) => l.startsWith('m=audio ')).length;
  if (audio > 1) throw new OfferError('invalid_sdp', `the SDP offer has ${audio} audio sections; one is accepted`);
  if (sections > 1) {
    // Every section must share one transport: unbundled sections each cost the server its own sockets.
    const mids = lines.filter((l) => l.startsWith('a=mid:')).map((l) => l.slice(6).trim());
    const bundle = lines.find((l) => l.startsWith('a=group:BUNDLE'))?.slice('a=group:BUNDLE'.length).trim().split(/\s+/) ?? [];
    if (mids.length !== sections || !mids.every((mid) => bundle.includes(mid))) {
      throw new OfferError('invalid_sdp', 'an SDP offer with several media sections must BUNDLE them all (a=group:BUNDLE with every a=mid)');
    }
  }
  let dropped = 0;
  const distinct = new Set<string>();
  const kept = lines.filter((line) => {
    if (!line.startsWith('a=candidate:')) return true;
    // a=candidate:<foundation> <component> <transport> <priority> <address> <port> typ <type> [tcptype <t>] ...
    const parts = line.split(' ');
    const transport = parts[2]?.toLowerCase() ?? '';
    const address = parts[4] ?? '';
    const tcptype = parts[parts.indexOf('tcptype') + 1];
    // A TCP candidate other than "active" asks us to connect out to it: a server never needs that (browsers
    // reach it), and it is how an offer makes the service TCP-connect to internal ports.
    const outboundTcp = transport === 'tcp' && !(parts.includes('tcptype') && tcptype === 'active');
    if (outboundTcp || !candidateAddressAllowed(address, allowed)) {
      dropped++;
      return false;
    }
    // Bundled sections repeat the same candidates: count distinct transport addresses.
    distinct.add(`${transport} ${address} ${parts[5]}`);
    return true;
  });
  if (distinct.size > policy.maxRemoteCandidates) {
    throw new OfferError('invalid_sdp', `the SDP offer lists ${distinct.size} ICE candidates; at most ${policy.maxRemoteCandidates} are accepted`);
  }
  return { sdp: setOpusParameters(kept.join('\r\n'), policy.opus), droppedCandidates: dropped };
}
