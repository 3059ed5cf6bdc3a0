/**
 * Capacity plots of the media paths: runs one load script once per call count (one after the other, never
 * overlapping) and draws, against the number of calls, the service's CPU per call and the transport's timing
 * p99, as a plain SVG file (no plotting package).
 *
 * --transport ws (default): loadtest/ws-media.ts (device WebSocket); CPU per call, main-thread CPU and event-loop
 * lag p99. With --vad-worker both, each count runs with the Silero VAD in its worker thread and on the main
 * thread, alternately, and both are drawn.
 * --transport sip: loadtest/sip-media.ts --spawn (SIP + PCMU RTP, callers send silence unless --audio, 8 kHz);
 * CPU per call, the agent's RTP interarrival deviation and packet delay variation p99, packet loss.
 * --transport webrtc: loadtest/webrtc-media.ts --spawn (libwebrtc peers sending silence); CPU per call, the
 * callers' inbound RFC 3550 jitter p50/p99 across calls, packet loss.
 *
 *   npx tsx loadtest/plot-capacity.ts --calls 50,100,150,200,300 --audio /tmp/speech.wav \
 *     [--seconds 10] [--speech-every 10] [--vad-worker on|off|both] [--out docs/capacity-ws.svg] [--json runs.json]
 *     [--max-load 3]
 *   npx tsx loadtest/plot-capacity.ts --transport sip --calls 25,50,100,200 [--audio speech-8k.wav] \
 *     [--json docs/capacity-sip.json] [--max-load 3] [--max-total-s 300]        # out: docs/capacity-sip.svg
 *   npx tsx loadtest/plot-capacity.ts --transport webrtc --calls 5,10,20,40 --json docs/capacity-webrtc.json
 *   npx tsx loadtest/plot-capacity.ts --from runs.json [--out docs/capacity-T.svg]   # redraw saved runs (T: theirs)
 *
 * --max-load: on a shared machine, wait (up to 90 s) before each run for the 1-minute load average to fall under
 * this; the load at each run's end is recorded in the JSON and the plot's note either way.
 * --local-asr (sip, webrtc): keep the service's own ASR; by default it is a batch endpoint elsewhere, as in
 * ws-media.ts, so that a call holds no PocketSphinx decoder (the media path alone).
 * --max-total-s: start no further run once this long has passed since the first (the series stops early; the
 * runs done are drawn).
 */
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';

const get = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};

/** Bounds: a plot is at most this many runs of at most this many calls (each run ~10 s plus set-up). */
const MAX_POINTS = 10;
const MAX_CALLS = 1000;

type Transport = 'ws' | 'sip' | 'webrtc';
const transport = (get('transport') ?? 'ws') as Transport;
if (!['ws', 'sip', 'webrtc'].includes(transport)) throw new Error('--transport must be ws, sip or webrtc');
const counts = (get('calls') ?? '50,100,150,200').split(',').map(Number);
if (counts.length === 0 || counts.length > MAX_POINTS || counts.some((n) => !Number.isInteger(n) || n < 1 || n > MAX_CALLS)) {
  throw new Error(`--calls: 1 to ${MAX_POINTS} integers in 1..${MAX_CALLS}, comma-separated`);
}
const seconds = Number(get('seconds') ?? 10);
if (!(seconds > 0 && seconds <= 60)) throw new Error('--seconds must be in (0, 60]');
const audio = get('audio');
const speechEvery = get('speech-every') ?? '10';
const mode = get('vad-worker') ?? 'both';
if (!['on', 'off', 'both'].includes(mode)) throw new Error('--vad-worker must be on, off or both');
const fromFile = get('from');
/** The SVG's path: --out, or docs/capacity-TRANSPORT.svg for the runs' transport. */
const outFileFor = (t: Transport) => get('out') ?? `docs/capacity-${t}.svg`;
const jsonFile = get('json');
const maxLoad = get('max-load') === undefined ? Infinity : Number(get('max-load'));
const maxTotalS = Number(get('max-total-s') ?? 600);
const MAX_LOAD_WAIT_MS = 90_000;
/** sip and webrtc: ASR elsewhere (as ws-media.ts by default) unless --local-asr: no PocketSphinx decoder per call. */
const asrArgs = process.argv.includes('--local-asr') ? [] : ['--asr-elsewhere'];

/** What the plot reads from one ws-media.ts report (runs saved before --transport have no `transport`). */
interface WsRun {
  transport?: 'ws';
  calls: number;
  vadWorker: 'on' | 'off';
  cpuPerCall: number;
  cpu: number;
  mainThreadCpu: number;
  lagP99Ms: number;
  loadAverage1m: number;
  detected: number | null;
  sent: number | null;
  onsetToSpeechStartedMs: { p50: number; p99: number } | null;
  endToSpeechStoppedMs: { p50: number; p99: number } | null;
  clientSendLatenessP99Ms: number;
}

/** What the plot reads from one sip-media.ts --spawn report. */
interface SipRun {
  transport: 'sip';
  calls: number;
  cpuPerCall: number;
  cpu: number;
  /** Absent in runs saved before sip-media.ts reported it. */
  mainThreadCpu?: number;
  rssMb: number;
  interarrivalP99Ms: number;
  pdvP99Ms: number;
  rfc3550JitterMedianMs: number;
  rfc3550JitterMaxMs: number;
  lossPercent: number;
  clientSendLatenessP99Ms: number;
  loadAverage1m: number;
}

/** What the plot reads from one webrtc-media.ts --spawn report. */
interface WebRtcRun {
  transport: 'webrtc';
  calls: number;
  connected: number;
  cpuPerCall: number;
  cpu: number;
  rssMbPerCall: number;
  jitterP50Ms: number;
  jitterP99Ms: number;
  lossPercent: number;
  loadAverage1m: number;
}

type Run = WsRun | SipRun | WebRtcRun;

/** Runs one load script to its end and returns its report: the JSON object its stdout ends with. */
function runScript(script: string, args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', script, ...args], { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`${script} ${args.join(' ')} exited with ${code}`));
      // The report is pretty-printed: it starts on a line holding "{" alone (a log line never does).
      const at = out.search(/^\{$/m);
      try {
        resolve(JSON.parse(out.slice(at)));
      } catch (err) {
        reject(new Error(`${script} printed no report: ${String(err)}`));
      }
    });
  });
}

async function runWs(calls: number, vadWorker: 'on' | 'off'): Promise<WsRun> {
  const args = ['--calls', String(calls), '--seconds', String(seconds), '--vad-worker', vadWorker];
  if (audio) args.push('--audio', audio, '--speech-every', speechEvery);
  const r = (await runScript('loadtest/ws-media.ts', args)) as {
    calls: number;
    serverCpuPercent: number;
    serverCpuPercentPerCall: number;
    serverMainThreadCpuPercent: number;
    eventLoopLagP99Ms: number;
    loadAverage1m: number;
    utterances: { sent: number; detected: number; onsetToSpeechStartedMs: { p50: number; p99: number }; endToSpeechStoppedMs: { p50: number; p99: number } } | null;
    clientSendLatenessMs: { p99: number };
  };
  return {
    calls: r.calls,
    vadWorker,
    cpuPerCall: r.serverCpuPercentPerCall,
    cpu: r.serverCpuPercent,
    mainThreadCpu: r.serverMainThreadCpuPercent,
    lagP99Ms: r.eventLoopLagP99Ms,
    loadAverage1m: r.loadAverage1m,
    detected: r.utterances?.detected ?? null,
    sent: r.utterances?.sent ?? null,
    onsetToSpeechStartedMs: r.utterances?.onsetToSpeechStartedMs ?? null,
    endToSpeechStoppedMs: r.utterances?.endToSpeechStoppedMs ?? null,
    clientSendLatenessP99Ms: r.clientSendLatenessMs.p99,
  };
}

async function runSip(calls: number): Promise<SipRun> {
  const args = ['--spawn', '--calls', String(calls), '--seconds', String(seconds), ...asrArgs];
  if (audio) args.push('--audio', audio, '--gap', speechEvery);
  // sip-media.ts prints its timings as fixed-point strings.
  const r = (await runScript('loadtest/sip-media.ts', args)) as {
    calls: number;
    packetsReceived: number;
    packetsExpected: number;
    interarrivalDeviationMs: { p99: string };
    packetDelayVariationMs: { p99: string };
    rfc3550JitterMs: { median: string; max: string };
    clientSendLatenessMs: { p99: string };
    serverCpuPercent: number;
    serverCpuPercentPerCall: number;
    serverMainThreadCpuPercent: number;
    serverRssMb: number;
    loadAverage1m: number;
  };
  return {
    transport: 'sip',
    calls: r.calls,
    cpuPerCall: r.serverCpuPercentPerCall,
    cpu: r.serverCpuPercent,
    mainThreadCpu: r.serverMainThreadCpuPercent,
    rssMb: r.serverRssMb,
    interarrivalP99Ms: Number(r.interarrivalDeviationMs.p99),
    pdvP99Ms: Number(r.packetDelayVariationMs.p99),
    rfc3550JitterMedianMs: Number(r.rfc3550JitterMs.median),
    rfc3550JitterMaxMs: Number(r.rfc3550JitterMs.max),
    // A packet or so per call more than expected is the counting window's edges, not a negative loss.
    lossPercent: Math.max(0, Math.round((1 - r.packetsReceived / Math.max(1, r.packetsExpected)) * 1000) / 10),
    clientSendLatenessP99Ms: Number(r.clientSendLatenessMs.p99),
    loadAverage1m: r.loadAverage1m,
  };
}

async function runWebRtc(calls: number): Promise<WebRtcRun> {
  // webrtc-media.ts runs at least 5 s; its callers always send silence (the media path alone). DTX off: with it, the
  // silent agent stream is a few sparse packets and its RFC 3550 jitter no longer shows the event loop falling behind.
  const r = (await runScript('loadtest/webrtc-media.ts', ['--spawn', '--calls', String(calls), '--seconds', String(Math.max(5, seconds)), '--opus-dtx', 'off', ...asrArgs])) as {
    calls: number;
    connected: number;
    inbound_jitter_ms: { p50: number | null; p99: number | null };
    packets_received: number;
    packets_lost: number;
    server_cpu_percent: number;
    server_cpu_percent_per_call: number;
    server_rss_mb_per_call: number;
    load_average_1m: number;
  };
  return {
    transport: 'webrtc',
    calls: r.calls,
    connected: r.connected,
    cpuPerCall: r.server_cpu_percent_per_call,
    cpu: r.server_cpu_percent,
    rssMbPerCall: r.server_rss_mb_per_call,
    jitterP50Ms: r.inbound_jitter_ms.p50 ?? NaN,
    jitterP99Ms: r.inbound_jitter_ms.p99 ?? NaN,
    lossPercent: Math.round((r.packets_lost / Math.max(1, r.packets_lost + r.packets_received)) * 1000) / 10,
    loadAverage1m: r.load_average_1m,
  };
}

/** A dashed horizontal line: the level the issue asks a curve to stay under. */
interface Goal {
  y: number;
  label: string;
}

interface Series {
  name: string;
  color: string;
  points: Array<[number, number]>;
}

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** A 1-2-5 step giving about `n` ticks over [0, max]. */
function niceStep(max: number, n = 5): number {
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  return [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? raw;
}

/** One line chart (axes from 0) as SVG elements, placed at (x0, y0) with size w × h. */
function chart(x0: number, y0: number, w: number, h: number, title: string, yLabel: string, xMax: number, series: Series[], goal?: Goal): string {
  // An all-zero panel (no packet lost) gets a 0..1 axis, not one scaled to nothing.
  const yMaxData = Math.max(0, goal?.y ?? 0, ...series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite)) || 1;
  const yStep = niceStep(yMaxData);
  const yMax = Math.ceil(yMaxData / yStep) * yStep;
  const xStep = niceStep(xMax);
  const X = (x: number) => x0 + (x / xMax) * w;
  const Y = (y: number) => y0 + h - (y / yMax) * h;
  const parts: string[] = [`<text x="${x0 + w / 2}" y="${y0 - 12}" text-anchor="middle" font-weight="bold">${esc(title)}</text>`];
  for (let y = 0; y <= yMax + 1e-9; y += yStep) {
    parts.push(`<line x1="${X(0)}" y1="${Y(y)}" x2="${X(xMax)}" y2="${Y(y)}" stroke="#ddd"/>`);
    parts.push(`<text x="${X(0) - 6}" y="${Y(y) + 4}" text-anchor="end">${+y.toPrecision(6)}</text>`);
  }
  for (let x = 0; x <= xMax + 1e-9; x += xStep) {
    parts.push(`<line x1="${X(x)}" y1="${Y(0)}" x2="${X(x)}" y2="${Y(0) + 4}" stroke="#333"/>`);
    parts.push(`<text x="${X(x)}" y="${Y(0) + 18}" text-anchor="middle">${x}</text>`);
  }
  parts.push(`<line x1="${X(0)}" y1="${Y(0)}" x2="${X(xMax)}" y2="${Y(0)}" stroke="#333"/>`);
  parts.push(`<line x1="${X(0)}" y1="${Y(0)}" x2="${X(0)}" y2="${Y(yMax)}" stroke="#333"/>`);
  parts.push(`<text x="${X(xMax / 2)}" y="${Y(0) + 36}" text-anchor="middle">concurrent calls</text>`);
  parts.push(`<text transform="translate(${x0 - 48} ${y0 + h / 2}) rotate(-90)" text-anchor="middle">${esc(yLabel)}</text>`);
  if (goal) {
    parts.push(`<line x1="${X(0)}" y1="${Y(goal.y)}" x2="${X(xMax)}" y2="${Y(goal.y)}" stroke="#555" stroke-dasharray="6 4"/>`);
    parts.push(`<text x="${X(xMax) - 4}" y="${Y(goal.y) - 4}" text-anchor="end" fill="#555">${esc(goal.label)}</text>`);
  }
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) parts.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    parts.push(`<rect x="${x0 + 12}" y="${y0 + 8 + i * 18}" width="12" height="3" fill="${s.color}"/>`);
    parts.push(`<text x="${x0 + 30}" y="${y0 + 13 + i * 18}">${esc(s.name)}</text>`);
  });
  return parts.join('\n');
}

interface Panel {
  title: string;
  yLabel: string;
  series: Series[];
  goal?: Goal;
}

/** Panels stacked one above the other, sharing the calls axis, with a note under them. */
function renderPanels(panels: Panel[], xMax: number, note: string): string {
  const W = 720;
  const H = 40 + panels.length * 300;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    ...panels.map((p, i) => chart(80, 40 + i * 300, W - 120, 220, p.title, p.yLabel, xMax, p.series, p.goal)),
    `<text x="${W / 2}" y="${H - 14}" text-anchor="middle" fill="#555">${esc(note)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

const loadNote = (runs: Run[]) => {
  const loads = runs.map((r) => r.loadAverage1m);
  return `load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} during the runs`;
};
const xMaxOf = (runs: Run[]) => Math.max(...runs.map((r) => r.calls)) * 1.05;
const line = <R extends Run>(name: string, color: string, runs: R[], pick: (r: R) => number): Series => ({
  name,
  color,
  points: runs.map((r) => [r.calls, pick(r)] as [number, number]),
});

function renderWs(runs: WsRun[]): string {
  const modes = (['off', 'on'] as const).filter((m) => runs.some((r) => r.vadWorker === m));
  const colors = { on: '#1f77b4', off: '#d62728' };
  const label = { on: 'VAD in a worker thread', off: 'VAD on the main thread' };
  const seriesOf = (pick: (r: WsRun) => number): Series[] =>
    modes.map((m) => line(label[m], colors[m], runs.filter((r) => r.vadWorker === m), pick));
  const note = `ws-media.ts, ${seconds} s per run${audio ? `, speech every ${speechEvery} s` : ''}; ${loadNote(runs)}`;
  return renderPanels(
    [
      { title: 'Service CPU per call (% of one core, all threads)', yLabel: '% of a core', series: seriesOf((r) => r.cpuPerCall) },
      { title: 'Main (event-loop) thread CPU (% of one core)', yLabel: '% of a core', series: seriesOf((r) => r.mainThreadCpu) },
      { title: 'Event-loop lag p99 (ms)', yLabel: 'ms', series: seriesOf((r) => r.lagP99Ms) },
    ],
    xMaxOf(runs),
    note,
  );
}

/** Issue 12's bar for the phone and browser paths. */
const JITTER_GOAL: Goal = { y: 20, label: 'goal: p99 < 20 ms' };

function renderSip(runs: SipRun[]): string {
  const note = `sip-media.ts --spawn${asrArgs.length ? ' --asr-elsewhere' : ''}, ${seconds} s per run, callers ${audio ? `say ${audio} every ${speechEvery} s` : 'send silence'}; ${loadNote(runs)}`;
  return renderPanels(
    [
      { title: 'SIP: service CPU per call (% of one core, all threads)', yLabel: '% of a core', series: [line('CPU per call', '#1f77b4', runs, (r) => r.cpuPerCall)] },
      {
        title: "Agent's RTP at the caller, p99 (ms)",
        yLabel: 'ms',
        series: [
          line('interarrival deviation from 20 ms', '#d62728', runs, (r) => r.interarrivalP99Ms),
          line('packet delay variation (RFC 5481)', '#2ca02c', runs, (r) => r.pdvP99Ms),
        ],
        goal: JITTER_GOAL,
      },
      { title: "Agent's RTP packets lost (%)", yLabel: '%', series: [line('lost', '#7f7f7f', runs, (r) => r.lossPercent)] },
    ],
    xMaxOf(runs),
    note,
  );
}

function renderWebRtc(runs: WebRtcRun[]): string {
  const note = `webrtc-media.ts --spawn --opus-dtx off${asrArgs.length ? ' --asr-elsewhere' : ''}, ${Math.max(5, seconds)} s per run, callers send silence; ${loadNote(runs)}`;
  return renderPanels(
    [
      { title: 'WebRTC: service CPU per call (% of one core, all threads)', yLabel: '% of a core', series: [line('CPU per call', '#1f77b4', runs, (r) => r.cpuPerCall)] },
      {
        title: 'Inbound jitter at the callers (RFC 3550, libwebrtc), across calls (ms)',
        yLabel: 'ms',
        series: [line('p99', '#d62728', runs, (r) => r.jitterP99Ms), line('p50', '#ff7f0e', runs, (r) => r.jitterP50Ms)],
        goal: JITTER_GOAL,
      },
      { title: "Agent's packets lost (%)", yLabel: '%', series: [line('lost', '#7f7f7f', runs, (r) => r.lossPercent)] },
    ],
    xMaxOf(runs),
    note,
  );
}

/** Saved runs name their transport; the ws runs saved before that do not. */
const transportOf = (r: Run): Transport => r.transport ?? 'ws';

function render(runs: Run[]): string {
  const kind = transportOf(runs[0]);
  if (runs.some((r) => transportOf(r) !== kind)) throw new Error('runs of more than one transport');
  if (kind === 'sip') return renderSip(runs as SipRun[]);
  if (kind === 'webrtc') return renderWebRtc(runs as WebRtcRun[]);
  return renderWs(runs as WsRun[]);
}

const summary = (r: Run): string =>
  r.transport === 'sip'
    ? `PDV p99 ${r.pdvP99Ms} ms, interarrival p99 ${r.interarrivalP99Ms} ms, loss ${r.lossPercent} %`
    : r.transport === 'webrtc'
      ? `jitter p99 ${r.jitterP99Ms} ms, ${r.connected} connected, loss ${r.lossPercent} %`
      : `vad worker ${r.vadWorker}: lag p99 ${r.lagP99Ms} ms`;

async function main(): Promise<void> {
  if (fromFile) {
    const saved = JSON.parse(readFileSync(fromFile, 'utf8')) as Run[];
    const out = outFileFor(transportOf(saved[0]));
    writeFileSync(out, render(saved));
    console.log(JSON.stringify({ out, from: fromFile }));
    return;
  }
  const outFile = outFileFor(transport);
  // Only the device WebSocket has the VAD-thread alternative to compare.
  const modes: Array<'on' | 'off'> = mode === 'both' ? ['off', 'on'] : [mode as 'on' | 'off'];
  const jobs: Array<(calls: number) => Promise<Run>> =
    transport === 'sip' ? [runSip] : transport === 'webrtc' ? [runWebRtc] : modes.map((m) => (calls: number) => runWs(calls, m));
  const runs: Run[] = [];
  const failed: string[] = [];
  const began = performance.now();
  series: for (const calls of counts) {
    // Alternate the modes at each count, so a change in the machine's other load hits both alike.
    for (const job of jobs) {
      if (performance.now() - began > maxTotalS * 1000) {
        console.error(`--max-total-s ${maxTotalS} reached: no run from ${calls} calls on`);
        break series;
      }
      const waitUntil = performance.now() + MAX_LOAD_WAIT_MS;
      while (loadavg()[0] >= maxLoad && performance.now() < waitUntil) await new Promise((r) => setTimeout(r, 5000));
      let r: Run;
      try {
        r = await job(calls);
      } catch (err) {
        // A run that fails (a caller could not connect, the service did not start) ends the series: the runs done
        // are still drawn and saved, and the failure is in the output.
        failed.push(`${calls} calls: ${(err as Error).message}`);
        console.error(`run at ${calls} calls failed, series stopped: ${(err as Error).message}`);
        break series;
      }
      console.error(`${transportOf(r)} calls ${calls}: CPU/call ${r.cpuPerCall} %, ${summary(r)}, load ${r.loadAverage1m}`);
      runs.push(r);
    }
  }
  if (runs.length === 0) throw new Error(`no run succeeded: ${failed.join('; ')}`);
  writeFileSync(outFile, render(runs));
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify(runs, null, 2));
  console.log(JSON.stringify({ out: outFile, runs, failed }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
