import { readFileSync } from 'node:fs';
import path from 'node:path';
import { writeFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import os from 'node:os';
import { readWav } from '../src/audio/wav.js';
import { resampleOnce } from '../src/audio/resample.js';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { runLoadTest } from './run.js';
import { WsCaller } from './ws-caller.js';
import { TwilioCaller } from './twilio-caller.js';
import { WebRtcCaller } from './webrtc-caller.js';
import { RealtimeCaller } from './realtime-caller.js';
import { SipCaller } from './sip-caller.js';
import { metricValue } from './prometheus.js';

/**
 * npm run loadtest -- --url ws://127.0.0.1:8080/v1/ws --audio FILE.wav [--sessions N] [--turns K] [--json OUT]
 * Prints a JSON report (to --json, or stdout) and a short human-readable summary.
 */
const USAGE =
  'usage: npm run loadtest -- --url ws://127.0.0.1:8080/v1/ws --audio FILE.wav [--sessions N] [--turns K] [--json OUT] [--timeout-ms MS] [--api-key KEY (or env VOICE_AGENT_API_KEY, else the key a local `npm start` generated in data/api-key)] [--transport ws|twilio|realtime|webrtc|sip (twilio: --url ws://127.0.0.1:8080/v1/telephony/twilio, env TWILIO_AUTH_TOKEN signs)] [--metrics http://127.0.0.1:8080/metrics (default: the --url host for HTTP and WebSocket URLs; none for sip:)] [--fixed-phase (every turn the file as it is; by default each turn starts 0–19 ms later within the 20 ms frame, as callers\' words do)]';

interface ServerSample {
  atS: number;
  rssMb: number;
  cpuSeconds: number;
  /** Event-loop delay p99 since the previous scrape, ms. */
  eventLoopLagP99Ms: number;
  sessions: number;
}

/** Load tests and their metrics reads stay on this machine. */
function isLoopbackHost(hostname: string): boolean {
  return ['127.0.0.1', 'localhost', '[::1]'].includes(hostname) || hostname.startsWith('127.');
}

/** Reads the service's own process metrics from /metrics (same host as the WebSocket). */
async function sampleServer(metricsUrl: string | undefined, startedAt: number): Promise<ServerSample | null> {
  if (metricsUrl === undefined) return null;
  try {
    const response = await fetch(metricsUrl, { signal: AbortSignal.timeout(2000) });
    if (!response.ok) return null;
    const text = await response.text();
    const value = (name: string) => metricValue(text, name);
    return {
      atS: Math.round((performance.now() - startedAt) / 100) / 10,
      rssMb: Math.round(value('voice_agent_process_resident_memory_bytes') / 1e5) / 10,
      cpuSeconds: value('voice_agent_process_cpu_seconds_total'),
      eventLoopLagP99Ms: Math.round(value('voice_agent_nodejs_eventloop_lag_p99_seconds') * 10_000) / 10,
      sessions: [...text.matchAll(/^voice_agent_sessions_active\{[^}]*\} ([0-9.]+)/gm)].reduce((n, m) => n + Number(m[1]), 0),
    };
  } catch {
    return null;
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      url: { type: 'string' },
      audio: { type: 'string' },
      sessions: { type: 'string', default: '1' },
      turns: { type: 'string', default: '1' },
      json: { type: 'string' },
      'timeout-ms': { type: 'string', default: '15000' },
      transport: { type: 'string', default: 'ws' },
      'api-key': { type: 'string' },
      duration: { type: 'string' },
      metrics: { type: 'string' },
      'fixed-phase': { type: 'boolean', default: false },
    },
  });
  if (!values.url || !values.audio) {
    console.error(USAGE);
    process.exit(2);
  }
  const sessions = Number(values.sessions);
  // Soak (--duration S): sessions keep taking turns until the time is up; turns is then only a cap.
  const durationS = values.duration !== undefined ? Number(values.duration) : undefined;
  if (durationS !== undefined && (!Number.isFinite(durationS) || durationS < 1 || durationS > 24 * 3600)) {
    console.error('--duration must be 1..86400 seconds');
    process.exit(2);
  }
  const turns = durationS !== undefined ? 1000 : Number(values.turns);
  if (!Number.isInteger(sessions) || sessions < 1 || sessions > 500 || !Number.isInteger(turns) || turns < 1 || turns > 1000) {
    console.error('--sessions must be 1..500 and --turns 1..1000');
    process.exit(2);
  }
  const target = new URL(values.url);
  if (!isLoopbackHost(target.hostname)) {
    console.error(`refusing to load-test ${target.hostname}: only loopback addresses are allowed`);
    process.exit(2);
  }
  if (values.transport !== 'ws' && values.transport !== 'twilio' && values.transport !== 'realtime' && values.transport !== 'webrtc' && values.transport !== 'sip') {
    console.error(
      `unknown --transport ${values.transport}; available: ws, twilio (--url ws://HOST/v1/telephony/twilio), realtime (--url ws://HOST/v1/realtime), webrtc (--url http://HOST/v1/webrtc/offer), sip (--url sip://127.0.0.1:5060)`,
    );
    process.exit(2);
  }
  const apiKey = values['api-key'] ?? process.env.VOICE_AGENT_API_KEY ?? localGeneratedKey();
  const wav = await readWav(values.audio);
  const speech = wav.sampleRate === INTERNAL_SAMPLE_RATE ? wav.samples : await resampleOnce(wav.samples, wav.sampleRate, INTERNAL_SAMPLE_RATE);

  // The service's /metrics is on its HTTP port: the --url host for HTTP and WebSocket transports. A sip: URL names the
  // SIP port, which would take an HTTP request for a malformed SIP message: there, only --metrics says where.
  const metricsUrl = values.metrics ?? (target.protocol === 'sip:' ? undefined : `${target.protocol === 'wss:' || target.protocol === 'https:' ? 'https' : 'http'}://${target.host}/metrics`);
  if (values.metrics !== undefined) {
    const { hostname } = new URL(values.metrics);
    if (!isLoopbackHost(hostname)) {
      console.error(`refusing to read metrics from ${hostname}: only loopback addresses are allowed`);
      process.exit(2);
    }
  }
  const startedAt = performance.now();
  const samples: ServerSample[] = [];
  const first = await sampleServer(metricsUrl, startedAt);
  if (first) samples.push(first);
  const clientCpu0 = process.cpuUsage();

  const report = await runLoadTest({
    createCaller: () =>
      values.transport === 'twilio'
        ? new TwilioCaller(values.url!, { credential: apiKey, authToken: process.env.TWILIO_AUTH_TOKEN })
        : values.transport === 'realtime'
          ? new RealtimeCaller(values.url!, apiKey)
          : values.transport === 'webrtc'
            ? new WebRtcCaller(values.url!, apiKey)
            : values.transport === 'sip'
              ? new SipCaller(values.url!)
              : new WsCaller(values.url!, apiKey),
    speech,
    sessions,
    turns,
    durationMs: durationS !== undefined ? durationS * 1000 : undefined,
    answerTimeoutMs: Number(values['timeout-ms']),
    varyPhase: !values['fixed-phase'],
    onTick: async () => {
      const sample = await sampleServer(metricsUrl, startedAt);
      if (sample) samples.push(sample);
    },
  });
  const last = await sampleServer(metricsUrl, startedAt);
  if (last) samples.push(last);
  const clientCpu = process.cpuUsage(clientCpu0);
  const wallS = report.duration_s;
  const server =
    samples.length >= 2
      ? {
          cpu_percent: Math.round(((samples[samples.length - 1].cpuSeconds - samples[0].cpuSeconds) / wallS) * 1000) / 10,
          rss_mb_start: samples[0].rssMb,
          rss_mb_max: Math.max(...samples.map((s) => s.rssMb)),
          rss_mb_end: samples[samples.length - 1].rssMb,
          // RSS growth from the end of the first fifth (warm-up) to the end: a leak shows here.
          rss_mb_growth_after_warmup: Math.round((samples[samples.length - 1].rssMb - samples[Math.floor(samples.length / 5)].rssMb) * 10) / 10,
          event_loop_lag_p99_ms_max: Math.max(...samples.map((s) => s.eventLoopLagP99Ms).filter(Number.isFinite)),
          timeline: durationS !== undefined ? samples.filter((_, i) => i % 10 === 0 || i === samples.length - 1) : undefined,
        }
      : null;
  const output = {
    url: values.url,
    audio: values.audio,
    transport: values.transport,
    machine: { cpus: os.cpus().length, model: os.cpus()[0]?.model ?? 'unknown', node: process.version },
    ...report,
    server,
    client_cpu_percent: Math.round(((clientCpu.user + clientCpu.system) / 1e6 / wallS) * 1000) / 10,
  };
  const json = JSON.stringify(output, null, 2);
  if (values.json) await writeFile(values.json, json + '\n');
  else console.log(json);

  const v = report.v2v_ms;
  const lines = [
    `sessions ${sessions} × ${durationS !== undefined ? `${durationS} s soak` : `turns ${turns}`}: ${report.turns_completed}/${report.turns_requested} turns completed, ${report.errors} errors, ${report.duration_s} s`,
    `voice-to-voice ms: p50 ${v.p50} p95 ${v.p95} p99 ${v.p99} (n=${v.n})`,
    ...Object.entries(report.stages_ms).map(([name, p]) => `  ${name}: p50 ${p.p50} p95 ${p.p95}`),
    server
      ? `server: cpu ${server.cpu_percent}% rss ${server.rss_mb_start}→${server.rss_mb_end} MB (max ${server.rss_mb_max}, growth after warm-up ${server.rss_mb_growth_after_warmup}), event-loop lag p99 max ${server.event_loop_lag_p99_ms_max} ms`
      : metricsUrl === undefined ? 'server: no --metrics URL given' : 'server: /metrics not reachable',
  ];
  if (report.turns.length > 0) lines.push(`first turn: "${report.turns[0].transcript}" → "${report.turns[0].reply_text}"`);
  for (const message of report.error_messages.slice(0, 5)) lines.push(`error: ${message}`);
  (values.json ? console.log : console.error)(lines.join('\n'));
  process.exit(report.errors > 0 ? 1 : 0);
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});

/**
 * The key `npm start` generated when none was configured (auth.generatedKeyFile), so the README's example works
 * against a service started here with no setup. Only ever read for loopback targets (checked above).
 */
function localGeneratedKey(): string | undefined {
  try {
    const key = readFileSync(path.resolve('data/api-key'), 'utf8').trim();
    return key || undefined;
  } catch {
    return undefined;
  }
}
