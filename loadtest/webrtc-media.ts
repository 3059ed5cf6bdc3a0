import { loadavg } from 'node:os';
import { parseArgs } from 'node:util';
import { FRAME_MS, FRAME_SAMPLES } from '../src/audio/format.js';
import { percentiles } from './run.js';
import { WebRtcCaller } from './webrtc-caller.js';
import { ASR_ELSEWHERE, TTS_ELSEWHERE, startLocalService, type LocalService } from './local-service.js';
import { metricValue } from './prometheus.js';

/**
 * How many WebRTC calls one process holds on the media path alone: N callers connect and send silence (so
 * only Opus, NetEq, resampling, VAD and the agent's paced stream run — no turns), and each reports its
 * inbound RTP jitter (RFC 3550, from libwebrtc's getStats) and losses; the service's CPU and RSS come from
 * /metrics. Loopback only, bounded in time.
 *   npx tsx loadtest/webrtc-media.ts --url http://127.0.0.1:8080/v1/webrtc/offer --calls 10 --seconds 20 [--api-key KEY]
 *   npx tsx loadtest/webrtc-media.ts --spawn --calls 10 --seconds 20    # starts the service itself (loopback ICE)
 *   npx tsx loadtest/webrtc-media.ts --spawn --asr-elsewhere ...         # ... with no local ASR (media path alone)
 *   npx tsx loadtest/webrtc-media.ts --spawn --opus-frame-ms 10 ...      # ... sending and asking for 10 ms Opus frames
 *   npx tsx loadtest/webrtc-media.ts --spawn --opus-dtx off ...           # ... with Opus DTX off (webrtc.opusDtx)
 *   ... --noise-dbfs=-50                                                 # callers send a white-noise floor, not digital silence
 * With DTX a silent side sends a packet every 400 ms, so the RFC 3550 jitter of the agent's stream then measures
 * those sparse packets, not a continuous stream: compare jitter across runs with the same --opus-dtx.
 */
const { values } = parseArgs({
  options: {
    url: { type: 'string' },
    calls: { type: 'string', default: '10' },
    seconds: { type: 'string', default: '20' },
    'api-key': { type: 'string' },
    spawn: { type: 'boolean', default: false },
    'asr-elsewhere': { type: 'boolean', default: false },
    /** webrtc.opusFrameMs of the spawned service (10 or 20). */
    'opus-frame-ms': { type: 'string' },
    /** webrtc.opusDtx of the spawned service: on (its default) or off. */
    'opus-dtx': { type: 'string' },
    /** Level of the white noise the callers send (a line's background), dBFS; default digital silence. */
    'noise-dbfs': { type: 'string' },
  },
});
if (!values.url && !values.spawn) {
  console.error('usage: npx tsx loadtest/webrtc-media.ts (--url http://127.0.0.1:8080/v1/webrtc/offer [--api-key KEY] | --spawn) --calls N --seconds S');
  process.exit(2);
}
// --spawn: a service of its own, offering and accepting loopback candidates only.
const service: LocalService | null = values.spawn
  ? await startLocalService({
      limits: { maxSessionsPerKey: 1000, maxSessions: 0 },
      webrtc: {
        candidateAddresses: ['127.0.0.1'],
        remoteCandidateNetworks: ['127.0.0.0/8'],
        maxPeers: 200,
        ...(values['opus-frame-ms'] ? { opusFrameMs: Number(values['opus-frame-ms']) } : {}),
        ...(values['opus-dtx'] ? { opusDtx: values['opus-dtx'] !== 'off' } : {}),
      },
      ...(values['asr-elsewhere'] ? { providers: { asr: ASR_ELSEWHERE, tts: TTS_ELSEWHERE } } : {}),
    })
  : null;
// A failure below must not leave the spawned service running.
process.once('exit', () => service?.child.kill('SIGINT'));
const offerUrl = service ? `${service.httpUrl}/v1/webrtc/offer` : values.url!;
const target = new URL(offerUrl);
if (!['127.0.0.1', 'localhost', '[::1]'].includes(target.hostname)) {
  console.error('only loopback targets');
  process.exit(2);
}
const calls = Math.min(200, Math.max(1, Number(values.calls)));
const seconds = Math.min(600, Math.max(5, Number(values.seconds)));
const key = service?.apiKey ?? values['api-key'] ?? process.env.VOICE_AGENT_API_KEY;

async function metric(name: string): Promise<number> {
  const text = await (await fetch(`${target.protocol}//${target.host}/metrics`)).text();
  return metricValue(text, name);
}

const callers = Array.from({ length: calls }, () => new WebRtcCaller(offerUrl, key));
const rss0 = await metric('voice_agent_process_resident_memory_bytes');
const connected: WebRtcCaller[] = [];
for (const caller of callers) {
  try {
    await caller.connect();
    connected.push(caller);
  } catch (err) {
    console.error(`connect failed: ${(err as Error).message}`);
  }
}
const cpu0 = await metric('voice_agent_process_cpu_seconds_total');
const started = performance.now();
// One second of the callers' background, looped: digital silence, or white noise at --noise-dbfs.
const background = new Int16Array(FRAME_SAMPLES * 50);
if (values['noise-dbfs'] !== undefined) {
  // Uniform noise of peak a has an RMS of a/√3.
  const peak = Math.sqrt(3) * 32768 * 10 ** (Number(values['noise-dbfs']) / 20);
  for (let i = 0; i < background.length; i++) background[i] = Math.round((Math.random() * 2 - 1) * peak);
}
let frame = 0;
let next = performance.now();
while (performance.now() - started < seconds * 1000) {
  next += FRAME_MS;
  const wait = next - performance.now();
  if (wait > 1) await new Promise((r) => setTimeout(r, wait));
  const offset = (frame++ % 50) * FRAME_SAMPLES;
  const samples = background.subarray(offset, offset + FRAME_SAMPLES);
  for (const caller of connected) caller.sendFrame(samples);
}
const wallS = (performance.now() - started) / 1000;
const cpu1 = await metric('voice_agent_process_cpu_seconds_total');
const rss1 = await metric('voice_agent_process_resident_memory_bytes');
const jitters: number[] = [];
let lost = 0;
let received = 0;
for (const caller of connected) {
  const stats = await caller.inboundStats();
  if (!stats) continue;
  jitters.push(stats.jitterMs);
  lost += stats.packetsLost;
  received += stats.packetsReceived;
}
await Promise.all(connected.map((c) => c.close()));
const result = {
  calls,
  connected: connected.length,
  seconds: Math.round(wallS),
  inbound_jitter_ms: percentiles(jitters),
  packets_received: received,
  packets_lost: lost,
  server_cpu_percent: Math.round(((cpu1 - cpu0) / wallS) * 1000) / 10,
  server_cpu_percent_per_call: Math.round((((cpu1 - cpu0) / wallS) * 1000) / Math.max(1, connected.length)) / 10,
  server_rss_mb: Math.round(rss1 / 1e5) / 10,
  server_rss_mb_per_call: Math.round((rss1 - rss0) / 1e5 / Math.max(1, connected.length)) / 10,
  load_average_1m: Math.round(loadavg()[0] * 10) / 10,
};
await service?.stop();
console.log(JSON.stringify(result, null, 2));
process.exit(0);
