/**
 * Device WebSocket media-path benchmark: N concurrent `/v1/ws` sessions (PCM16 16 kHz) against a service this
 * script starts, each sending 20 ms frames in real time: a low noise floor (-55 dBFS RMS, so the VAD sees real
 * input, not digital zeros) with, given --audio, that utterance every --speech-every seconds (callers staggered).
 * Reports the service's own CPU (from /proc/PID/stat, so the callers' CPU is not counted), CPU per call, RSS,
 * event-loop lag p99, errors, and whether the VAD keeps up: utterances detected (speech.started per utterance sent)
 * and the time from the utterance's first / last voiced frame sent to speech.started / speech.stopped.
 *
 * The service's ASR is a batch endpoint on a closed port (ASR and LLM elsewhere); --local-asr keeps the configured one.
 *
 *   npx tsx loadtest/ws-media.ts --calls 50 --seconds 15 [--audio speech.wav --speech-every 20] [--local-asr] [--vad-worker on|off]
 *     [--noise-dbfs -50|none] [--vad-quiet off|DBFS]
 *
 * --vad-worker sets providers.vad.worker (default: the service's own default). --noise-dbfs sets the floor's RMS
 * level (default: ±100 uniform, -55 dBFS; none = digital silence between utterances). --vad-quiet sets providers.vad.quietWindowDbfs
 * (off = null: every window inferred; default: the service's own). The main thread's own CPU is
 * reported apart (/proc/PID/task/PID/stat): it carries every call's audio, so it is the one that must not saturate.
 */
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { loadavg, tmpdir } from 'node:os';
import path from 'node:path';
import { FRAME_SAMPLES, rmsDbfs } from '../src/audio/format.js';
import { parseWav } from '../src/audio/wav.js';
import { WsCaller } from './ws-caller.js';
import { seededNoise, seededNoiseAtDbfs } from './voices.js';
import { processCpuS, processRssMb } from './proc-stat.js';
import { ASR_ELSEWHERE, TTS_ELSEWHERE, vadQuietOption } from './local-service.js';
import { metricValue } from './prometheus.js';

const get = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const calls = Number(get('calls') ?? 20);
const seconds = Number(get('seconds') ?? 15);
const audioFile = get('audio');
const speechEveryS = Number(get('speech-every') ?? 20);
const vadWorker = get('vad-worker');
if (vadWorker !== undefined && vadWorker !== 'on' && vadWorker !== 'off') throw new Error('--vad-worker must be on or off');
/** --noise-dbfs: the floor's RMS level; none: digital silence; absent: seededNoise's ±100 (-55 dBFS), as before it existed. */
const noiseArg = get('noise-dbfs');
const lineNoise = (samples: number): Int16Array =>
  noiseArg === undefined ? seededNoise(samples, 7) : noiseArg === 'none' ? new Int16Array(samples) : seededNoiseAtDbfs(samples, 7, Number(noiseArg));
const vadQuiet = vadQuietOption(get('vad-quiet'));
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const percentile = (sorted: number[], p: number) => (sorted.length === 0 ? NaN : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))]);

/**
 * From one /metrics scrape: the event-loop lag p99 since the previous scrape, ms, and the VAD's batching totals
 * (NaN when unreachable or absent).
 */
async function scrape(port: number): Promise<{ lagP99Ms: number; vadBatches: number; vadWindows: number; vadQuietSkipped: number; vadBehindS: number }> {
  let text = '';
  try {
    text = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(2000) })).text();
  } catch {
    // unreachable: every figure NaN
  }
  return {
    lagP99Ms: metricValue(text, 'voice_agent_nodejs_eventloop_lag_p99_seconds') * 1000,
    vadBatches: metricValue(text, 'voice_agent_vad_batches'),
    vadWindows: metricValue(text, 'voice_agent_vad_batch_windows'),
    vadQuietSkipped: metricValue(text, 'voice_agent_vad_quiet_windows_skipped'),
    vadBehindS: metricValue(text, 'voice_agent_vad_behind_seconds'),
  };
}

async function main(): Promise<void> {
  const port = 30_000 + Math.floor(Math.random() * 5000);
  const apiKey = randomBytes(16).toString('hex');
  const file = path.join(tmpdir(), `ws-media-${process.pid}.json`);
  writeFileSync(
    file,
    JSON.stringify({
      host: '127.0.0.1',
      port,
      // fatal: with ASR elsewhere every speech turn logs an ASR error; errors are counted from the callers' events.
      logLevel: 'fatal',
      store: { path: ':memory:' },
      limits: { maxSessionsPerKey: 1000, maxSessions: 0 },
      // ASR runs elsewhere (the media path alone): a batch endpoint only contacted when a turn ends, here a closed
      // loopback port, so a speech turn ends in an ASR error (counted) instead of local decoding.
      providers: {
        ...(process.argv.includes('--local-asr') ? {} : { asr: ASR_ELSEWHERE, tts: TTS_ELSEWHERE }),
        ...(vadWorker === undefined && vadQuiet === undefined
          ? {}
          : {
              vad: {
                provider: 'silero',
                ...(vadWorker === undefined ? {} : { worker: vadWorker === 'on' }),
                ...(vadQuiet === undefined ? {} : { quietWindowDbfs: vadQuiet }),
              },
            }),
      },
      auth: { apiKeyHashes: [createHash('sha256').update(apiKey).digest('hex')], tokenTtlS: 300, required: true, generatedKeyFile: null },
    }),
  );
  // e.g. WS_MEDIA_NODE_FLAGS="--cpu-prof --cpu-prof-dir=/tmp/prof" for a profile of the service under this load.
  const extra = process.env.WS_MEDIA_NODE_FLAGS ? process.env.WS_MEDIA_NODE_FLAGS.split(' ') : [];
  const child = spawn(process.execPath, [...extra, '--import', 'tsx', 'src/main.ts', '--config', file], { stdio: ['ignore', 'inherit', 'inherit'] });
  const url = `ws://127.0.0.1:${port}/v1/ws`;
  const callers: WsCaller[] = [];
  try {
    const speech = audioFile ? parseWav(readFileSync(audioFile)) : null;
    if (speech && speech.sampleRate !== 16_000) throw new Error('--audio must be 16 kHz mono PCM16');
    const loopFrames = speech ? Math.round((speechEveryS * 1000) / 20) : 250;
    // One loop per caller: noise, with the utterance mixed in at the start of the loop.
    const loop = lineNoise(loopFrames * FRAME_SAMPLES);
    if (speech) for (let i = 0; i < Math.min(speech.samples.length, loop.length); i++) loop[i] = Math.max(-32768, Math.min(32767, loop[i] + speech.samples[i]));
    // The utterance's first and last voiced frames within the loop (-1: no speech).
    let firstVoiced = -1;
    let lastVoiced = -1;
    if (speech) {
      for (let f = 0; (f + 1) * FRAME_SAMPLES <= speech.samples.length && f < loopFrames; f++) {
        if (rmsDbfs(speech.samples.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES)) > -40) {
          if (firstVoiced < 0) firstVoiced = f;
          lastVoiced = f;
        }
      }
    }
    const deadline = performance.now() + 120_000;
    while (callers.length < calls) {
      const c = new WsCaller(url, apiKey);
      try {
        await c.connect();
        callers.push(c);
      } catch (err) {
        if (performance.now() > deadline) throw err;
        await sleep(callers.length === 0 ? 1000 : 50);
      }
    }
    const arrivals: number[][] = callers.map(() => []);
    callers.forEach((c, i) => c.onAudio((_samples, at) => arrivals[i].push(at)));
    // By code: with ASR elsewhere (the default) each speech turn ends in asr_failed; anything else is a fault.
    const errors: Record<string, number> = {};
    const onsetSentAt: Array<number | null> = callers.map(() => null);
    const endSentAt: Array<number | null> = callers.map(() => null);
    const startedMs: number[] = [];
    const stoppedMs: number[] = [];
    let utterancesSent = 0;
    callers.forEach((c, i) =>
      c.onEvent((e) => {
        const now = performance.now();
        if (e.type === 'error') errors[String(e.code)] = (errors[String(e.code)] ?? 0) + 1;
        if (e.type === 'speech.started' && onsetSentAt[i] !== null) {
          startedMs.push(now - onsetSentAt[i]!);
          onsetSentAt[i] = null;
        }
        if (e.type === 'speech.stopped' && endSentAt[i] !== null) {
          stoppedMs.push(now - endSentAt[i]!);
          endSentAt[i] = null;
        }
      }),
    );
    console.error(`${callers.length} sessions up; streaming ${seconds} s`);
    await sleep(1000);
    // The lag histogram restarts at each scrape: this one drops the start-up (model loading, connections).
    const before = await scrape(port);
    const cpu0 = processCpuS(child.pid!);
    // The main thread's id is the process id.
    const mainCpu0 = processCpuS(child.pid!, child.pid!);
    const start = performance.now();
    let rssMax = 0;
    const late: number[] = [];
    for (let tick = 0; performance.now() - start < seconds * 1000; tick++) {
      const due = start + tick * 20;
      const wait = due - performance.now();
      if (wait > 0) await sleep(wait);
      late.push(performance.now() - due);
      callers.forEach((c, i) => {
        // Stagger the callers across the loop so their speech does not all come at once.
        const f = (tick + Math.floor((i * loopFrames) / callers.length)) % loopFrames;
        c.sendFrame(loop.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES));
        if (f === firstVoiced) {
          onsetSentAt[i] = performance.now();
          utterancesSent++;
        }
        if (f === lastVoiced) endSentAt[i] = performance.now();
      });
      if (tick % 50 === 0) rssMax = Math.max(rssMax, processRssMb(child.pid!));
    }
    const wallS = (performance.now() - start) / 1000;
    const cpuS = processCpuS(child.pid!) - cpu0;
    const mainCpuS = processCpuS(child.pid!, child.pid!) - mainCpu0;
    const deviations: number[] = [];
    for (const a of arrivals) {
      const w = a.filter((t) => t - start > 1000);
      for (let i = 1; i < w.length; i++) deviations.push(Math.abs(w[i] - w[i - 1] - 20));
    }
    deviations.sort((x, y) => x - y);
    late.sort((x, y) => x - y);
    // Let the last utterances' events arrive, then read the service's event-loop lag.
    await sleep(1500);
    startedMs.sort((x, y) => x - y);
    stoppedMs.sort((x, y) => x - y);
    const after = await scrape(port);
    const eventLoopLagP99Ms = after.lagP99Ms;
    const f = (n: number) => Math.round(n * 100) / 100;
    console.log(
      JSON.stringify(
        {
          calls: callers.length,
          seconds: f(wallS),
          speech: audioFile ? { file: audioFile, everyS: speechEveryS } : null,
          serverCpuPercent: f((cpuS / wallS) * 100),
          serverCpuPercentPerCall: f((cpuS / wallS / callers.length) * 100),
          serverMainThreadCpuPercent: f((mainCpuS / wallS) * 100),
          vadWorker: vadWorker ?? 'default',
          loadAverage1m: loadavg()[0],
          serverRssMbMax: f(rssMax),
          eventLoopLagP99Ms: f(eventLoopLagP99Ms),
          // Calls sharing one Silero inference, on average over the run (its last 1.5 s of quiet included).
          vadMeanBatch: f((after.vadWindows - before.vadWindows) / (after.vadBatches - before.vadBatches)),
          noiseFloorDbfs: noiseArg ?? -55,
          vadQuiet: vadQuiet === undefined ? 'default' : (vadQuiet ?? 'off'),
          // Of all windows the callers' audio made, the share not inferred (quiet, three seconds into a silence).
          vadQuietSkippedShare: f(
            (after.vadQuietSkipped - before.vadQuietSkipped) /
              (after.vadQuietSkipped - before.vadQuietSkipped + after.vadWindows - before.vadWindows),
          ),
          // Seconds of the run the VAD was behind real time (its quiet lines then skip the model sooner).
          vadBehindS: f(after.vadBehindS - before.vadBehindS),
          utterances: speech
            ? {
                sent: utterancesSent,
                detected: startedMs.length,
                onsetToSpeechStartedMs: { p50: f(percentile(startedMs, 50)), p99: f(percentile(startedMs, 99)) },
                endToSpeechStoppedMs: { n: stoppedMs.length, p50: f(percentile(stoppedMs, 50)), p99: f(percentile(stoppedMs, 99)) },
              }
            : null,
          agentFrames: deviations.length,
          agentInterarrivalDeviationMs: { p50: f(percentile(deviations, 50)), p99: f(percentile(deviations, 99)) },
          clientSendLatenessMs: { p50: f(percentile(late, 50)), p99: f(percentile(late, 99)) },
          errors,
        },
        null,
        2,
      ),
    );
  } finally {
    await Promise.all(callers.map((c) => c.close().catch(() => undefined)));
    child.kill('SIGINT');
    // Give the service time to shut down (and write a --cpu-prof profile).
    await new Promise<void>((r) => {
      const t = setTimeout(r, 10_000);
      child.once('exit', () => {
        clearTimeout(t);
        r();
      });
    });
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
