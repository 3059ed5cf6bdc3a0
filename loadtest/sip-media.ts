/**
 * SIP media-path benchmark: N concurrent SIP calls (raw UDP SIP + PCMU RTP, one caller per call) against a
 * running service, each sending 20 ms RTP packets in real time, measuring the agent's RTP as it arrives:
 * interarrival deviation from 20 ms (p50/p95/p99/max), RFC 3550 jitter, loss. The caller sends silence by
 * default (VAD runs, no turns: the media path alone) or, with --audio (8 kHz mono PCM16), that utterance
 * followed by --gap seconds of silence, looped, reporting voice-to-voice latency at the caller: last voiced
 * packet sent → first audible agent packet received. With --spawn it also reports the service's own CPU over the
 * streaming window (from /proc, so the callers' CPU is not counted), per call, its RSS, and the load average.
 *
 *   npx tsx loadtest/sip-media.ts --sip 127.0.0.1:5060 --calls 50 --seconds 20
 *   npx tsx loadtest/sip-media.ts --spawn --calls 50 --seconds 20     # starts the service itself
 *   npx tsx loadtest/sip-media.ts --spawn --asr-elsewhere ...           # ... with no local ASR (media path alone)
 *   npx tsx loadtest/sip-media.ts --spawn --vad-quiet off ...           # providers.vad.quietWindowDbfs null (or a level)
 *   npx tsx loadtest/sip-media.ts --noise-dbfs -50 ...                  # a noise floor instead of digital silence
 *   npx tsx loadtest/sip-media.ts --comfort-noise ...                   # callers offer CN/8000 (RFC 3389): the agent's
 *                                                                        # silence is then a CN packet a second; the
 *                                                                        # callers still send every packet
 * With --comfort-noise the agent's stream is sparse while it is silent: interarrival, PDV and jitter then describe
 * those few packets, not a paced stream (compare them only between runs with the same setting).
 */
import dgram from 'node:dgram';
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync, readFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { decodeMulaw, encodeMulaw } from '../src/audio/g711.js';
import { rmsDbfs } from '../src/audio/format.js';
import { parseWav } from '../src/audio/wav.js';
import { processCpuS, processRssMb } from './proc-stat.js';
import { ASR_ELSEWHERE, TTS_ELSEWHERE, vadQuietOption } from './local-service.js';
import { seededNoiseAtDbfs } from './voices.js';

interface Args {
  host: string;
  port: number;
  calls: number;
  seconds: number;
  audio: string | null;
  spawn: boolean;
  rampMs: number;
  gapSeconds: number;
  asrElsewhere: boolean;
  /** providers.vad.quietWindowDbfs for a spawned service: null = every window inferred; undefined = its default. */
  vadQuiet: number | null | undefined;
  /** RMS level of the callers' line noise, dBFS; null = digital silence (µ-law 0xFF). */
  noiseDbfs: number | null;
  /** The callers offer comfort noise (CN/8000, payload type 13). */
  comfortNoise: boolean;
}

function parseArgs(argv: string[]): Args {
  const get = (name: string) => {
    const i = argv.indexOf(`--${name}`);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  const [host, port] = (get('sip') ?? '127.0.0.1:5060').split(':');
  return {
    host,
    port: Number(port),
    calls: Number(get('calls') ?? 10),
    seconds: Number(get('seconds') ?? 20),
    audio: get('audio') ?? null,
    spawn: argv.includes('--spawn'),
    rampMs: Number(get('ramp-ms') ?? 50),
    gapSeconds: Number(get('gap') ?? 5),
    asrElsewhere: argv.includes('--asr-elsewhere'),
    vadQuiet: vadQuietOption(get('vad-quiet')),
    noiseDbfs: get('noise-dbfs') === undefined ? null : Number(get('noise-dbfs')),
    comfortNoise: argv.includes('--comfort-noise'),
  };
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

class Caller {
  readonly sip = dgram.createSocket('udp4');
  readonly rtp = dgram.createSocket('udp4');
  readonly callId = `bench-${randomBytes(6).toString('hex')}`;
  private readonly tag = randomBytes(4).toString('hex');
  remoteRtp: { address: string; port: number } | null = null;
  toHeader = '';
  arrivals: number[] = [];
  /** CN packets from the agent (its silence, with --comfort-noise). */
  comfortNoisePackets = 0;
  lastVoicedSentAt: number | null = null;
  v2v: number[] = [];
  /** arrival − RTP timestamp (ms) per packet: its spread is the packet delay variation. */
  transits: { at: number; transit: number }[] = [];
  jitter = 0;
  private lastTransit: number | null = null;
  private seq = 0;
  private ts = 0;
  private readonly ssrc = randomBytes(4).readUInt32BE(0);
  private answered: ((msg: string) => void) | null = null;
  byeOk = false;

  constructor(private readonly args: Args) {}

  async start(): Promise<void> {
    await new Promise<void>((r) => this.sip.bind(0, '127.0.0.1', () => r()));
    await new Promise<void>((r) => this.rtp.bind(0, '127.0.0.1', () => r()));
    this.sip.on('message', (m) => this.onSip(m.toString()));
    this.rtp.on('message', (m) => this.onRtp(m));
  }

  private headers(method: string, cseq: number): string[] {
    const sipPort = this.sip.address().port;
    return [
      `Via: SIP/2.0/UDP 127.0.0.1:${sipPort};branch=z9hG4bK${randomBytes(6).toString('hex')};rport`,
      'Max-Forwards: 70',
      `From: <sip:bench@127.0.0.1>;tag=${this.tag}`,
      `To: ${this.toHeader || `<sip:agent@${this.args.host}:${this.args.port}>`}`,
      `Call-ID: ${this.callId}`,
      `CSeq: ${cseq} ${method}`,
      `Contact: <sip:bench@127.0.0.1:${sipPort}>`,
    ];
  }

  private send(lines: string[], body = ''): void {
    const text = [...lines, ...(body ? ['Content-Type: application/sdp'] : []), `Content-Length: ${Buffer.byteLength(body)}`, '', body].join('\r\n');
    this.sip.send(Buffer.from(text), this.args.port, this.args.host);
  }

  async invite(): Promise<void> {
    const cn = this.args.comfortNoise;
    const sdp = ['v=0', 'o=- 1 1 IN IP4 127.0.0.1', 's=-', 'c=IN IP4 127.0.0.1', 't=0 0', `m=audio ${this.rtp.address().port} RTP/AVP 0 101${cn ? ' 13' : ''}`, 'a=rtpmap:0 PCMU/8000', 'a=rtpmap:101 telephone-event/8000', ...(cn ? ['a=rtpmap:13 CN/8000'] : []), 'a=ptime:20', 'a=sendrecv', ''].join('\r\n');
    const ok = new Promise<string>((resolve) => (this.answered = resolve));
    this.send([`INVITE sip:agent@${this.args.host}:${this.args.port} SIP/2.0`, ...this.headers('INVITE', 1)], sdp);
    const msg = await Promise.race([ok, sleep(10_000).then(() => '')]);
    if (!msg) throw new Error(`${this.callId}: no 200 OK`);
    this.toHeader = /^To: (.*)$/m.exec(msg)![1].trim();
    const m = /^m=audio (\d+)/m.exec(msg);
    const c = /^c=IN IP4 (\S+)/m.exec(msg);
    this.remoteRtp = { address: c![1], port: Number(m![1]) };
    this.send([`ACK sip:agent@${this.args.host}:${this.args.port} SIP/2.0`, ...this.headers('ACK', 1)]);
  }

  private byeLines: string[] | null = null;

  /** BYE, or the same BYE again (same branch: a retransmission of one transaction, RFC 3261 §17.1.2). */
  bye(): void {
    this.byeLines ??= [`BYE sip:agent@${this.args.host}:${this.args.port} SIP/2.0`, ...this.headers('BYE', 2)];
    this.send(this.byeLines);
  }

  private onSip(text: string): void {
    const status = Number(/^SIP\/2\.0 (\d{3})/.exec(text)?.[1] ?? 0);
    const cseq = /^CSeq: \d+ (\w+)/m.exec(text)?.[1];
    if (status === 200 && cseq === 'INVITE') this.answered?.(text);
    if (status === 200 && cseq === 'BYE') this.byeOk = true;
    if (status >= 300 && cseq === 'INVITE') console.error(`${this.callId}: INVITE refused: ${text.split('\r\n')[0]}`);
  }

  private onRtp(m: Buffer): void {
    const now = performance.now();
    // RTCP (payload types 200–204, RFC 5761 §4): the service sends its sender reports to the RTP port + 1, which is
    // often the next caller's RTP socket here (ports are not allocated in pairs). Read as RTP, a report's SSRC and NTP
    // time looked like a timestamp jump of days: the "discontinuity" of earlier PDV and jitter maxima.
    if (m.length < 12 || (m[1] >= 192 && m[1] <= 223)) return;
    // Comfort noise (RFC 3389): the agent is silent; not a paced audio packet.
    if ((m[1] & 0x7f) === 13) {
      this.comfortNoisePackets++;
      return;
    }
    this.arrivals.push(now);
    if (this.lastVoicedSentAt !== null && rmsDbfs(decodeMulaw(m.subarray(12))) > -40) {
      // First audible agent packet after the caller's last voiced one: voice-to-voice at the caller.
      this.v2v.push(now - this.lastVoicedSentAt);
      this.lastVoicedSentAt = null;
    }
    const ts = m.readUInt32BE(4);
    const transit = now - ts / 8;
    this.transits.push({ at: now, transit });
    if (this.lastTransit !== null) this.jitter += (Math.abs(transit - this.lastTransit) - this.jitter) / 16;
    this.lastTransit = transit;
  }

  sendPacket(payload: Buffer): void {
    if (!this.remoteRtp) return;
    const p = Buffer.alloc(12 + payload.length);
    p[0] = 0x80;
    p[1] = 0;
    p.writeUInt16BE(this.seq++ & 0xffff, 2);
    p.writeUInt32BE(this.ts >>> 0, 4);
    p.writeUInt32BE(this.ssrc, 8);
    payload.copy(p, 12);
    this.ts += 160;
    this.rtp.send(p, this.remoteRtp.port, this.remoteRtp.address);
  }

  close(): void {
    this.sip.close();
    this.rtp.close();
  }
}

async function spawnService(asrElsewhere: boolean, vadQuiet: number | null | undefined): Promise<{ child: ChildProcess; port: number }> {
  const port = 25_000 + Math.floor(Math.random() * 5000);
  const file = path.join(tmpdir(), `sip-bench-${process.pid}.json`);
  writeFileSync(
    file,
    JSON.stringify({ host: '127.0.0.1', port: 0, logLevel: 'warn', store: { path: ':memory:' }, limits: { maxSessionsPerKey: 1000, maxSessions: 0 },
      sip: { host: '127.0.0.1', port, maxCalls: 1000 },
      providers: {
        ...(asrElsewhere ? { asr: ASR_ELSEWHERE, tts: TTS_ELSEWHERE } : {}),
        ...(vadQuiet === undefined ? {} : { vad: { provider: 'silero', quietWindowDbfs: vadQuiet } }),
      },
    }),
  );
  const extra = process.env.SIP_BENCH_NODE_FLAGS ? process.env.SIP_BENCH_NODE_FLAGS.split(' ') : [];
  // The service's logs go to stderr: this script's stdout is its report.
  const child = spawn(process.execPath, [...extra, '--import', 'tsx', 'src/main.ts', '--config', file], { stdio: ['ignore', process.stderr, 'inherit'] });
  // Ready when OPTIONS gets a 200 and an INVITE is not refused with 503 (models loaded).
  const probe = dgram.createSocket('udp4');
  await new Promise<void>((r) => probe.bind(0, '127.0.0.1', () => r()));
  let ready = false;
  probe.on('message', () => (ready = true));
  const deadline = performance.now() + 120_000;
  while (!ready) {
    if (performance.now() > deadline) throw new Error('service did not start');
    const lp = probe.address().port;
    probe.send(Buffer.from(`OPTIONS sip:agent@127.0.0.1:${port} SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:${lp};branch=z9hG4bK${Date.now()}\r\nFrom: <sip:p@127.0.0.1>;tag=1\r\nTo: <sip:agent@127.0.0.1>\r\nCall-ID: probe-${Date.now()}\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n`), port, '127.0.0.1');
    await sleep(500);
  }
  probe.close();
  return { child, port };
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  let child: ChildProcess | null = null;
  if (args.spawn) {
    const s = await spawnService(args.asrElsewhere, args.vadQuiet);
    child = s.child;
    args.port = s.port;
  }
  /** The line's noise under everything the caller sends; none: zeros. */
  const lineNoise = (samples: number): Int16Array => (args.noiseDbfs === null ? new Int16Array(samples) : seededNoiseAtDbfs(samples, 3, args.noiseDbfs));
  let audio: Uint8Array = args.noiseDbfs === null ? new Uint8Array(8000).fill(0xff) : encodeMulaw(lineNoise(8000));
  /** Packet index (within one loop of `audio`) of the last voiced 20 ms; -1 for silence. */
  let lastVoicedPacket = -1;
  if (args.audio) {
    const wav = parseWav(readFileSync(args.audio));
    if (wav.sampleRate !== 8000) throw new Error('--audio must be 8 kHz mono PCM16');
    // The utterance, then `gap` seconds of silence for the agent to answer in; looped.
    const looped = lineNoise(wav.samples.length + 8000 * args.gapSeconds);
    for (let i = 0; i < wav.samples.length; i++) looped[i] = Math.max(-32768, Math.min(32767, looped[i] + wav.samples[i]));
    for (let i = 0; i + 160 <= wav.samples.length; i += 160) if (rmsDbfs(wav.samples.subarray(i, i + 160)) > -40) lastVoicedPacket = i / 160;
    audio = encodeMulaw(looped);
  }
  const packetsPerLoop = Math.floor(audio.length / 160);
  const callers: Caller[] = [];
  try {
    for (let i = 0; i < args.calls; i++) {
      for (;;) {
        const c = new Caller(args);
        await c.start();
        try {
          await c.invite();
          callers.push(c);
          break;
        } catch (err) {
          // The service may still be loading models (503): try again shortly.
          c.close();
          console.error((err as Error).message);
          await sleep(1000);
        }
      }
      await sleep(args.rampMs);
    }
    console.log(`${callers.length} calls up; streaming ${args.seconds} s`);
    // One drift-corrected 20 ms clock sends a packet for every call.
    for (const c of callers) {
      c.arrivals.length = 0;
      c.transits.length = 0;
    }
    const start = performance.now();
    const cpu0 = child?.pid === undefined ? NaN : processCpuS(child.pid);
    // The main (event-loop) thread's own share: it carries every call's RTP, so it is the one that must not saturate.
    const main0 = child?.pid === undefined ? NaN : processCpuS(child.pid, child.pid);
    const clientLate: number[] = [];
    let tick = 0;
    while (performance.now() - start < args.seconds * 1000) {
      const due = start + tick * 20;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      clientLate.push(performance.now() - due);
      const payload = Buffer.alloc(160);
      const base = (tick % packetsPerLoop) * 160;
      for (let i = 0; i < 160; i++) payload[i] = audio[base + i];
      for (const c of callers) c.sendPacket(payload);
      if (lastVoicedPacket >= 0 && tick % packetsPerLoop === lastVoicedPacket) for (const c of callers) c.lastVoicedSentAt = performance.now();
      tick++;
    }
    const wallS = (performance.now() - start) / 1000;
    const cpu1 = child?.pid === undefined ? NaN : processCpuS(child.pid);
    const main1 = child?.pid === undefined ? NaN : processCpuS(child.pid, child.pid);
    const rssMb = child?.pid === undefined ? NaN : processRssMb(child.pid);
    // As a UA does over UDP: an unanswered BYE again after 0.5 s, then 1 s more (Timer E doubling), then 2 s for answers.
    for (const c of callers) c.bye();
    let byeRetransmissions = 0;
    for (const wait of [500, 1000]) {
      await sleep(wait);
      const unanswered = callers.filter((c) => !c.byeOk);
      if (unanswered.length === 0) break;
      byeRetransmissions += unanswered.length;
      for (const c of unanswered) c.bye();
    }
    if (callers.some((c) => !c.byeOk)) await sleep(2000);
    // Measure from the middle of the run (skip the first second: start-up transients).
    const deviations: number[] = [];
    let received = 0;
    let expected = 0;
    const jitters: number[] = [];
    const pdv: number[] = [];
    for (const c of callers) {
      const a = c.arrivals.filter((t) => t - start > 1000 && t - start < args.seconds * 1000);
      received += a.length;
      expected += Math.round((args.seconds * 1000 - 1000) / 20);
      for (let i = 1; i < a.length; i++) deviations.push(Math.abs(a[i] - a[i - 1] - 20));
      jitters.push(c.jitter);
      // Packet delay variation (RFC 5481): each packet's delay above the call's fastest one.
      const t = c.transits.filter((x) => x.at - start > 1000 && x.at - start < args.seconds * 1000).map((x) => x.transit);
      const min = Math.min(...t);
      for (const x of t) pdv.push(x - min);
    }
    deviations.sort((x, y) => x - y);
    clientLate.sort((x, y) => x - y);
    jitters.sort((x, y) => x - y);
    pdv.sort((x, y) => x - y);
    const f = (n: number) => n.toFixed(2);
    const result = {
      calls: callers.length,
      seconds: args.seconds,
      lineNoiseDbfs: args.noiseDbfs ?? 'digital silence',
      packetsReceived: received,
      // With comfort noise the agent sends audio packets only while it speaks: no count is expected.
      packetsExpected: args.comfortNoise ? null : expected,
      ...(args.comfortNoise ? { comfortNoisePacketsReceived: callers.reduce((n, c) => n + c.comfortNoisePackets, 0) } : {}),
      interarrivalDeviationMs: { p50: f(percentile(deviations, 50)), p95: f(percentile(deviations, 95)), p99: f(percentile(deviations, 99)), max: f(deviations.at(-1) ?? NaN) },
      packetDelayVariationMs: { p50: f(percentile(pdv, 50)), p95: f(percentile(pdv, 95)), p99: f(percentile(pdv, 99)), max: f(pdv.at(-1) ?? NaN) },
      rfc3550JitterMs: { median: f(percentile(jitters, 50)), max: f(jitters.at(-1) ?? NaN) },
      clientSendLatenessMs: { p50: f(percentile(clientLate, 50)), p99: f(percentile(clientLate, 99)) },
      byeAnswered: callers.filter((c) => c.byeOk).length,
      byeRetransmissions,
      // Only for a service this script started (its pid is known).
      ...(child
        ? {
            serverCpuPercent: Math.round(((cpu1 - cpu0) / wallS) * 1000) / 10,
            serverCpuPercentPerCall: Math.round(((cpu1 - cpu0) / wallS / Math.max(1, callers.length)) * 10_000) / 100,
            serverMainThreadCpuPercent: Math.round(((main1 - main0) / wallS) * 1000) / 10,
            serverRssMb: Math.round(rssMb),
            vadQuiet: args.vadQuiet === undefined ? 'default' : (args.vadQuiet ?? 'off'),
          }
        : {}),
      loadAverage1m: Math.round(loadavg()[0] * 10) / 10,
      ...(lastVoicedPacket >= 0
        ? (() => {
            const v = callers.flatMap((c) => c.v2v).sort((x, y) => x - y);
            return { v2vAtCallerMs: { turns: v.length, p50: f(percentile(v, 50)), p95: f(percentile(v, 95)), max: f(v.at(-1) ?? NaN) } };
          })()
        : {}),
    };
    console.log(JSON.stringify(result, null, 2));
  } finally {
    for (const c of callers) c.close();
    if (child) {
      child.kill('SIGINT');
      await sleep(500);
    }
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
