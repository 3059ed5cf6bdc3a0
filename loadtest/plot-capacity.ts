/**
 * Capacity plot of the device-WebSocket media path: runs loadtest/ws-media.ts once per call count (one after the
 * other, never overlapping) and draws, against the number of calls, the service's CPU per call and its event-loop
 * lag p99, as a plain SVG file (no plotting package). With --vad-worker both, each count runs with the Silero VAD
 * in its worker thread and on the main thread, alternately, and both are drawn.
 *
 *   npx tsx loadtest/plot-capacity.ts --calls 50,100,150,200,300 --audio /tmp/speech.wav \
 *     [--seconds 10] [--speech-every 10] [--vad-worker on|off|both] [--out docs/capacity-ws.svg] [--json runs.json]
 *     [--max-load 3]
 *   npx tsx loadtest/plot-capacity.ts --from runs.json [--out docs/capacity-ws.svg]   # redraw saved runs
 *
 * --max-load: on a shared machine, wait (up to 90 s) before each run for the 1-minute load average to fall under
 * this; the load at each run's end is recorded in the JSON and the plot's note either way.
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
const outFile = get('out') ?? 'docs/capacity-ws.svg';
const jsonFile = get('json');
const maxLoad = get('max-load') === undefined ? Infinity : Number(get('max-load'));
const MAX_LOAD_WAIT_MS = 90_000;

/** What the plot reads from one ws-media.ts report. */
interface Run {
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

function runOnce(calls: number, vadWorker: 'on' | 'off'): Promise<Run> {
  const args = ['--import', 'tsx', 'loadtest/ws-media.ts', '--calls', String(calls), '--seconds', String(seconds), '--vad-worker', vadWorker];
  if (audio) args.push('--audio', audio, '--speech-every', speechEvery);
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      if (code !== 0) return reject(new Error(`ws-media.ts --calls ${calls} --vad-worker ${vadWorker} exited with ${code}`));
      try {
        const r = JSON.parse(out.slice(out.indexOf('{'))) as {
          calls: number;
          serverCpuPercent: number;
          serverCpuPercentPerCall: number;
          serverMainThreadCpuPercent: number;
          eventLoopLagP99Ms: number;
          loadAverage1m: number;
          utterances: { sent: number; detected: number; onsetToSpeechStartedMs: { p50: number; p99: number }; endToSpeechStoppedMs: { p50: number; p99: number } } | null;
          clientSendLatenessMs: { p99: number };
        };
        resolve({
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
        });
      } catch (err) {
        reject(new Error(`ws-media.ts printed no report: ${String(err)}`));
      }
    });
  });
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
function chart(x0: number, y0: number, w: number, h: number, title: string, yLabel: string, xMax: number, series: Series[]): string {
  const yMaxData = Math.max(1e-9, ...series.flatMap((s) => s.points.map((p) => p[1])).filter(Number.isFinite));
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
  series.forEach((s, i) => {
    const pts = s.points.filter((p) => Number.isFinite(p[1])).sort((a, b) => a[0] - b[0]);
    parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" points="${pts.map((p) => `${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join(' ')}"/>`);
    for (const p of pts) parts.push(`<circle cx="${X(p[0]).toFixed(1)}" cy="${Y(p[1]).toFixed(1)}" r="3.5" fill="${s.color}"/>`);
    parts.push(`<rect x="${x0 + 12}" y="${y0 + 8 + i * 18}" width="12" height="3" fill="${s.color}"/>`);
    parts.push(`<text x="${x0 + 30}" y="${y0 + 13 + i * 18}">${esc(s.name)}</text>`);
  });
  return parts.join('\n');
}

function render(runs: Run[]): string {
  const modes = (['off', 'on'] as const).filter((m) => runs.some((r) => r.vadWorker === m));
  const xMax = Math.max(...runs.map((r) => r.calls)) * 1.05;
  const colors = { on: '#1f77b4', off: '#d62728' };
  const label = { on: 'VAD in a worker thread', off: 'VAD on the main thread' };
  const seriesOf = (pick: (r: Run) => number): Series[] =>
    modes.map((m) => ({ name: label[m], color: colors[m], points: runs.filter((r) => r.vadWorker === m).map((r) => [r.calls, pick(r)] as [number, number]) }));
  const W = 720;
  const loads = runs.map((r) => r.loadAverage1m);
  const note = `ws-media.ts, ${seconds} s per run${audio ? `, speech every ${speechEvery} s` : ''}; load average ${Math.min(...loads).toFixed(1)}–${Math.max(...loads).toFixed(1)} during the runs`;
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="940" viewBox="0 0 ${W} 940" font-family="sans-serif" font-size="12">`,
    `<rect width="100%" height="100%" fill="white"/>`,
    chart(80, 40, W - 120, 220, 'Service CPU per call (% of one core, all threads)', '% of a core', xMax, seriesOf((r) => r.cpuPerCall)),
    chart(80, 340, W - 120, 220, 'Main (event-loop) thread CPU (% of one core)', '% of a core', xMax, seriesOf((r) => r.mainThreadCpu)),
    chart(80, 640, W - 120, 220, 'Event-loop lag p99 (ms)', 'ms', xMax, seriesOf((r) => r.lagP99Ms)),
    `<text x="${W / 2}" y="926" text-anchor="middle" fill="#555">${esc(note)}</text>`,
    '</svg>',
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  if (fromFile) {
    writeFileSync(outFile, render(JSON.parse(readFileSync(fromFile, 'utf8')) as Run[]));
    console.log(JSON.stringify({ out: outFile, from: fromFile }));
    return;
  }
  const modes: Array<'on' | 'off'> = mode === 'both' ? ['off', 'on'] : [mode as 'on' | 'off'];
  const runs: Run[] = [];
  for (const calls of counts) {
    // Alternate the modes at each count, so a change in the machine's other load hits both alike.
    for (const m of modes) {
      const waitUntil = performance.now() + MAX_LOAD_WAIT_MS;
      while (loadavg()[0] >= maxLoad && performance.now() < waitUntil) await new Promise((r) => setTimeout(r, 5000));
      const r = await runOnce(calls, m);
      console.error(`calls ${calls} vad worker ${m}: CPU/call ${r.cpuPerCall} %, lag p99 ${r.lagP99Ms} ms, load ${r.loadAverage1m}`);
      runs.push(r);
    }
  }
  writeFileSync(outFile, render(runs));
  if (jsonFile) writeFileSync(jsonFile, JSON.stringify(runs, null, 2));
  console.log(JSON.stringify({ out: outFile, runs }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
