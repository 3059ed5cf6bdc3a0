import { FRAME_MS, FRAME_SAMPLES, rmsDbfs } from '../src/audio/format.js';
import type { AgentEvent, LoadCaller } from './caller.js';

export interface LoadTestOptions {
  /** Makes one caller per session (one transport). */
  createCaller: () => LoadCaller;
  /** Caller speech, 16 kHz mono PCM16: one utterance, or several spoken in turn (cycling). */
  speech: Int16Array | readonly Int16Array[];
  sessions: number;
  turns: number;
  /** Soak: keep every session taking turns until this much time has passed (turns is then a cap). */
  durationMs?: number;
  /** Longest wait for an answer after the caller stops, ms. */
  answerTimeoutMs?: number;
  /** Silence streamed between turns after the agent finishes, ms. */
  gapMs?: number;
  /** Frame level above which agent audio counts as sound, dBFS. */
  soundThresholdDbfs?: number;
  /** Sessions are started this far apart so they do not all speak in lock-step, ms. */
  staggerMs?: number;
  /**
   * Start each turn's speech at a different point within a 20 ms frame (0–19 ms more lead silence, varied per turn
   * and session; default true). A caller's words do not start on the frame grid, and a recogniser's running
   * hypothesis can depend on where they fall: one fixed phase measures one draw of that (BENCHMARKS.md "A frame
   * complete with its packet"). False sends the audio file as it is, every turn.
   */
  varyPhase?: boolean;
  /** Called every second with elapsed ms (used to sample server metrics). */
  onTick?: (elapsedMs: number) => void | Promise<void>;
}

export interface TurnResult {
  session: number;
  turn: number;
  transcript: string;
  language: string;
  reply_text: string;
  /** First non-silent agent audio arrival − sending of the last voiced caller frame. */
  v2v_ms: number | null;
  stages: Record<string, number>;
  error?: string;
}

export interface Percentiles {
  p50: number | null;
  p95: number | null;
  p99: number | null;
  mean: number | null;
  min: number | null;
  max: number | null;
  n: number;
}

export interface LoadTestReport {
  sessions: number;
  turns_requested: number;
  turns_completed: number;
  errors: number;
  error_messages: string[];
  v2v_ms: Percentiles;
  stages_ms: Record<string, Percentiles>;
  turns: TurnResult[];
  duration_s: number;
}

export function percentiles(values: number[]): Percentiles {
  const sorted = values.filter((v) => Number.isFinite(v)).sort((a, b) => a - b);
  const n = sorted.length;
  if (n === 0) return { p50: null, p95: null, p99: null, mean: null, min: null, max: null, n };
  const at = (q: number) => sorted[Math.min(n - 1, Math.max(0, Math.ceil(q * n) - 1))];
  const round = (v: number) => Math.round(v * 10) / 10;
  return {
    p50: round(at(0.5)),
    p95: round(at(0.95)),
    p99: round(at(0.99)),
    mean: round(sorted.reduce((a, b) => a + b, 0) / n),
    min: round(sorted[0]),
    max: round(sorted[n - 1]),
    n,
  };
}

/** Index of the last 20 ms frame of `speech` that carries voice (relative to the loudest frame). */
export function lastVoicedFrame(speech: Int16Array): number {
  const frames = Math.ceil(speech.length / FRAME_SAMPLES);
  const levels: number[] = [];
  for (let i = 0; i < frames; i++) levels.push(rmsDbfs(speech.subarray(i * FRAME_SAMPLES, (i + 1) * FRAME_SAMPLES)));
  const peak = Math.max(...levels);
  const threshold = Math.max(-50, peak - 35);
  for (let i = frames - 1; i >= 0; i--) if (levels[i] > threshold) return i;
  return frames - 1;
}

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

/** A turn's extra lead silence, 0–19 ms: consecutive turns step 7 ms through the frame (all 20 phases in 20 turns). */
export function phaseMs(session: number, turn: number): number {
  return (turn * 7 + session * 3) % FRAME_MS;
}

function withPhase(speech: Int16Array, ms: number): Int16Array {
  if (ms === 0) return speech;
  const lead = Math.round((ms * FRAME_SAMPLES) / FRAME_MS);
  const out = new Int16Array(lead + speech.length);
  out.set(speech, lead);
  return out;
}

/** Sends frames at real-time pace, correcting drift against the monotonic clock. */
class FrameClock {
  private next = performance.now();
  async tick(): Promise<number> {
    this.next += FRAME_MS;
    const wait = this.next - performance.now();
    if (wait > 1) await sleep(wait);
    else if (wait < -200) this.next = performance.now(); // fell far behind (overloaded): do not burst
    return performance.now();
  }
}

async function runSession(index: number, options: LoadTestOptions, results: TurnResult[], errors: string[]): Promise<void> {
  const answerTimeoutMs = options.answerTimeoutMs ?? 15_000;
  const gapMs = options.gapMs ?? 400;
  const threshold = options.soundThresholdDbfs ?? -45;
  const caller = options.createCaller();
  const silence = new Int16Array(FRAME_SAMPLES);
  const utterances = options.speech instanceof Int16Array ? [options.speech] : options.speech;

  let firstSoundMs: number | null = null;
  let listening = false;
  let lastAudioMs = 0;
  let events: AgentEvent[] = [];
  caller.onAudio((samples, arrival) => {
    // Some transports (WebRTC) stream silence between replies: only sound counts as the agent talking.
    if (rmsDbfs(samples) <= threshold) return;
    lastAudioMs = arrival;
    if (listening && firstSoundMs === null) firstSoundMs = arrival;
  });
  caller.onEvent((event) => {
    events.push(event);
    if (event.type === 'error') errors.push(`session ${index}: ${String(event.code)}: ${String(event.message)}`);
  });

  try {
    await caller.connect();
  } catch (err) {
    errors.push(`session ${index}: connect failed: ${(err as Error).message}`);
    return;
  }
  const clock = new FrameClock();
  try {
    const stopAt = options.durationMs ? performance.now() + options.durationMs : Infinity;
    for (let turn = 1; turn <= options.turns && performance.now() < stopAt; turn++) {
      events = [];
      firstSoundMs = null;
      listening = false;
      let lastVoicedSentMs = 0;
      const speech = withPhase(utterances[(turn - 1) % utterances.length], options.varyPhase === false ? 0 : phaseMs(index, turn));
      const lastVoiced = lastVoicedFrame(speech);
      const frameCount = Math.ceil(speech.length / FRAME_SAMPLES);
      for (let f = 0; f < frameCount; f++) {
        const frame = new Int16Array(FRAME_SAMPLES);
        frame.set(speech.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES));
        await clock.tick();
        caller.sendFrame(frame);
        if (f === lastVoiced) {
          lastVoicedSentMs = performance.now();
          listening = true;
        }
      }
      // Keep the line open with silence, as a real device does, until the answer has been played.
      const deadline = performance.now() + answerTimeoutMs;
      let done = false;
      while (performance.now() < deadline) {
        await clock.tick();
        caller.sendFrame(silence);
        // An interrupted reply is not the answer: the service cut it off because it took the caller's next words as
        // the same turn (continuation), and the answer to the whole turn follows.
        done = events.some((e) => e.type === 'response.done' && e.status !== 'interrupted');
        if (done && performance.now() - lastAudioMs > 300) break;
      }
      const final = events.find((e) => e.type === 'transcript.final' && typeof e.text === 'string' && e.text !== '');
      const reply = events.find((e) => e.type === 'response.done' && e.status !== 'interrupted');
      const metrics = events.find((e) => e.type === 'turn.metrics');
      const stages = ((metrics?.metrics as { stages?: Record<string, number> } | undefined)?.stages ?? {}) as Record<string, number>;
      const result: TurnResult = {
        session: index,
        turn,
        transcript: typeof final?.text === 'string' ? final.text : '',
        language: typeof final?.language === 'string' ? final.language : '',
        reply_text: typeof reply?.text === 'string' ? reply.text : '',
        v2v_ms: firstSoundMs !== null ? Math.round((firstSoundMs - lastVoicedSentMs) * 10) / 10 : null,
        stages,
      };
      if (!done) result.error = 'no response.done before timeout';
      else if (result.v2v_ms === null) result.error = 'no agent audio';
      if (result.error) errors.push(`session ${index} turn ${turn}: ${result.error}`);
      results.push(result);
      for (let t = 0; t < gapMs; t += FRAME_MS) {
        await clock.tick();
        caller.sendFrame(silence);
      }
    }
  } finally {
    await caller.close();
  }
}

/** Run `sessions` callers concurrently, each speaking `turns` times; returns the report. */
export async function runLoadTest(options: LoadTestOptions): Promise<LoadTestReport> {
  const started = performance.now();
  const results: TurnResult[] = [];
  const errors: string[] = [];
  const staggerMs = options.staggerMs ?? 137;
  let ticking = true;
  const ticker = (async () => {
    while (ticking) {
      await sleep(1000);
      if (ticking) await options.onTick?.(performance.now() - started);
    }
  })();
  await Promise.all(
    Array.from({ length: options.sessions }, async (_, i) => {
      await sleep(i * staggerMs);
      await runSession(i, options, results, errors);
    }),
  );
  ticking = false;
  await ticker;
  results.sort((a, b) => a.session - b.session || a.turn - b.turn);
  const stageNames = new Set(results.flatMap((r) => Object.keys(r.stages)));
  const stages_ms: Record<string, Percentiles> = {};
  for (const name of stageNames) stages_ms[name] = percentiles(results.map((r) => r.stages[name]).filter((v): v is number => typeof v === 'number'));
  const completed = results.filter((r) => !r.error);
  return {
    sessions: options.sessions,
    turns_requested: options.durationMs ? results.length : options.sessions * options.turns,
    turns_completed: completed.length,
    errors: errors.length,
    error_messages: errors.slice(0, 50),
    v2v_ms: percentiles(completed.map((r) => r.v2v_ms).filter((v): v is number => v !== null)),
    stages_ms,
    turns: results,
    duration_s: Math.round((performance.now() - started) / 100) / 10,
  };
}
