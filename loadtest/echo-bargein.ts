/**
 * False barge-in on a line that echoes: a device-WebSocket caller plays the agent's audio as it arrives and
 * returns it on its own line `--loss` dB down and `--delay` ms late, over a -60 dBFS noise floor, as a phone
 * hybrid or a speakerphone does. Each call types one question with a long spoken answer and stays silent:
 * every `response.interrupted` is a false interruption, every `speech.started` a false caller turn, and each gap
 * in the agent's audio a pause the agent made for its own voice. With --talk, the caller also speaks over the
 * answer (a real barge-in, 1.5 s in), which must still interrupt it.
 *
 * Runs the service itself, with the echo guard on and (with --compare) off, on the embedded models.
 *
 *   npx tsx loadtest/echo-bargein.ts [--loss none,15,20,25] [--delay 40,120,200] [--compare] [--talk]
 */
import { FRAME_SAMPLES, rmsDbfs } from '../src/audio/format.js';
import { startLocalService } from './local-service.js';
import { WsCaller } from './ws-caller.js';
import { seededNoise, synthesize, voicesFor } from './voices.js';

const get = (name: string): string | undefined => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
/** "none" is a line without echo (the baseline). */
const list = (value: string | undefined, fallback: number[]): number[] => (value ? value.split(',').map((v) => (v === 'none' ? Infinity : Number(v))) : fallback);
const losses = list(get('loss'), [Infinity, 15, 20, 25]);
const delays = list(get('delay'), [40, 120, 200]);
const talk = process.argv.includes('--talk');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
const QUESTION = 'What can you do for me?';

interface CallResult {
  /** null: no echo on the line. */
  lossDb: number | null;
  delayMs: number;
  replyMs: number;
  falseInterruptions: number;
  falseTurns: number;
  pauses: number;
  /** With --talk: ms from the caller's first word to the agent's interruption (null: never interrupted). */
  bargeInMs: number | null;
}

async function oneCall(url: string, apiKey: string, lossDb: number, delayMs: number, speech: Int16Array | null): Promise<CallResult> {
  const caller = new WsCaller(url, apiKey);
  await caller.connect();
  const playout: Int16Array[] = [];
  let queued = 0;
  caller.onAudio((samples) => {
    playout.push(samples);
    queued += samples.length;
  });
  const events: { at: number; type: string; status?: unknown }[] = [];
  caller.onEvent((e) => events.push({ at: performance.now(), type: e.type, status: e.status }));
  const gain = 10 ** (-lossDb / 20);
  const delayLine = new Int16Array(Math.round((delayMs / 1000) * 16_000) + FRAME_SAMPLES);
  let delayHead = 0;
  const noise = seededNoise(FRAME_SAMPLES * 50, 3, 33); // about -60 dBFS
  /** Take one 20 ms frame of what the caller's speaker plays now. */
  const play = (): Int16Array => {
    const out = new Int16Array(FRAME_SAMPLES);
    let filled = 0;
    while (filled < FRAME_SAMPLES && playout.length > 0) {
      const head = playout[0];
      const n = Math.min(head.length, FRAME_SAMPLES - filled);
      out.set(head.subarray(0, n), filled);
      filled += n;
      if (n === head.length) playout.shift();
      else playout[0] = head.subarray(n);
    }
    queued -= filled;
    return out;
  };
  const start = performance.now();
  let replyStarted: number | null = null;
  let speechFrom: number | null = null;
  let lastAudibleTick = -1;
  let pauses = 0;
  let silentRun = 0;
  let replyDone = false;
  for (let tick = 0; tick < 2000 && !replyDone; tick++) {
    const due = start + tick * 20;
    const wait = due - performance.now();
    if (wait > 0) await sleep(wait);
    if (tick === 25) caller.sendControl({ type: 'input.text', text: QUESTION });
    const played = play();
    const audible = rmsDbfs(played) > -50;
    if (audible) {
      replyStarted ??= performance.now();
      lastAudibleTick = tick;
    }
    // 100 ms with nothing to play before the reply is done: the agent held its audio (or its TTS was late;
    // the line without echo gives that baseline).
    if (replyStarted !== null && !events.some((e) => e.type === 'response.done') && played.every((v) => v === 0)) {
      silentRun++;
      if (silentRun === 5) pauses++;
    } else silentRun = 0;
    // The line: noise, the echo of what played `delayMs` ago, and the caller's own words when talking.
    const frame = new Int16Array(FRAME_SAMPLES);
    for (let k = 0; k < FRAME_SAMPLES; k++) {
      const echoed = delayLine[(delayHead + k) % delayLine.length];
      delayLine[(delayHead + k) % delayLine.length] = played[k];
      let v = noise[(tick % 50) * FRAME_SAMPLES + k] + echoed * gain;
      if (speech && replyStarted !== null && performance.now() - replyStarted > 1500) {
        speechFrom ??= tick;
        v += speech[(tick - speechFrom) * FRAME_SAMPLES + k] ?? 0;
      }
      frame[k] = Math.max(-32768, Math.min(32767, Math.round(v)));
    }
    delayHead = (delayHead + FRAME_SAMPLES) % delayLine.length;
    caller.sendFrame(frame);
    replyDone = events.some((e) => e.type === 'response.done') && playout.length === 0;
  }
  await caller.close();
  const interrupted = events.find((e) => e.type === 'response.interrupted');
  const speechStartedAt = speechFrom === null ? null : start + speechFrom * 20;
  return {
    lossDb: Number.isFinite(lossDb) ? lossDb : null,
    delayMs,
    replyMs: Math.round((lastAudibleTick - (replyStarted === null ? 0 : Math.round((replyStarted - start) / 20))) * 20),
    falseInterruptions: speech ? 0 : events.filter((e) => e.type === 'response.interrupted').length,
    falseTurns: speech ? 0 : events.filter((e) => e.type === 'speech.started').length,
    pauses: speech ? 0 : pauses,
    bargeInMs: speech ? (interrupted && speechStartedAt !== null ? Math.round(interrupted.at - speechStartedAt) : null) : null,
  };
}

async function run(guard: boolean, speech: Int16Array | null): Promise<{ guard: boolean; calls: CallResult[] }> {
  const service = await startLocalService({ turn: { echoGuard: { enabled: guard, maxDelayMs: 600, marginDb: 5 } } }, { logLevel: get('log-level') });
  const calls: CallResult[] = [];
  try {
    for (const lossDb of losses) for (const delayMs of delays) calls.push(await oneCall(service.wsUrl, service.apiKey, lossDb, delayMs, speech));
  } finally {
    await service.stop();
  }
  return { guard, calls };
}

async function main(): Promise<void> {
  const voice = voicesFor('en').find((v) => v.engine !== 'pico') ?? voicesFor('en')[0];
  const speech = talk && voice ? await synthesize('Stop, I would like to book a table for two please.', voice, 0) : null;
  if (speech) {
    // A caller at a normal level on the line: about -26 dBFS while talking.
    const gain = 10 ** ((-26 - rmsDbfs(speech)) / 20);
    for (let i = 0; i < speech.length; i++) speech[i] = Math.max(-32768, Math.min(32767, Math.round(speech[i] * gain)));
  }
  const runs = [await run(true, speech)];
  if (process.argv.includes('--compare')) runs.push(await run(false, speech));
  const summary = runs.map(({ guard, calls }) => ({
    echoGuard: guard,
    calls: calls.length,
    falseInterruptions: calls.reduce((s, c) => s + c.falseInterruptions, 0),
    falseTurns: calls.reduce((s, c) => s + c.falseTurns, 0),
    pauses: calls.reduce((s, c) => s + c.pauses, 0),
    ...(speech ? { bargeInsMissed: calls.filter((c) => c.bargeInMs === null).length, bargeInMs: calls.map((c) => c.bargeInMs) } : {}),
    perCall: calls,
  }));
  console.log(JSON.stringify({ mode: speech ? 'caller talks over the answer' : 'caller silent', voice: speech ? voice?.id : null, runs: summary }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
