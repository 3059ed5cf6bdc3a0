import { describe, expect, it } from 'vitest';
import { FRAME_MS, FRAME_SAMPLES } from '../../src/audio/format.js';
import { DEFAULT_ECHO_GUARD, EchoGuard } from '../../src/session/echo-guard.js';

/** A deterministic speech-like signal: noise in syllables of varying loudness, with pauses between words. */
function talker(seconds: number, seed: number, levelDb: number): Int16Array {
  let state = seed;
  const random = (): number => {
    state = (state * 16807) % 2147483647;
    return state / 2147483647;
  };
  const out = new Int16Array(Math.round(seconds * 16000));
  let i = 0;
  while (i < out.length) {
    const syllable = Math.round((0.08 + random() * 0.17) * 16000);
    const pause = random() < 0.25 ? Math.round((0.1 + random() * 0.2) * 16000) : 0;
    const amplitude = 32768 * 10 ** ((levelDb - 12 * random()) / 20) * Math.sqrt(3);
    for (let k = 0; k < syllable && i < out.length; k++, i++) {
      const envelope = Math.sin((Math.PI * k) / syllable);
      out[i] = Math.round((random() * 2 - 1) * amplitude * envelope);
    }
    i += pause;
  }
  return out;
}

const frame = (pcm: Int16Array, n: number): Int16Array => pcm.subarray(n * FRAME_SAMPLES, (n + 1) * FRAME_SAMPLES);

/**
 * Plays `agent` to the guard frame by frame and returns, per frame, the caller's line: the agent's echo
 * `lossDb` down and `delayMs` late, the caller's own `speech` (if any), and a little line noise.
 */
function line(agent: Int16Array, options: { lossDb: number | null; delayMs: number; speech?: Int16Array; speechFrom?: number }) {
  const guard = new EchoGuard(DEFAULT_ECHO_GUARD);
  const frames = Math.floor(agent.length / FRAME_SAMPLES);
  const noise = talker(frames * FRAME_MS / 1000, 99, -65);
  const gain = options.lossDb === null ? 0 : 10 ** (-options.lossDb / 20);
  const delay = Math.round((options.delayMs / 1000) * 16000);
  const verdicts: { echo: boolean; callerSpeaking: boolean; agentActive: boolean }[] = [];
  for (let n = 0; n < frames; n++) {
    const atMs = 1000 + n * FRAME_MS;
    guard.agentAudio(frame(agent, n), atMs);
    const caller = new Int16Array(FRAME_SAMPLES);
    let speaking = false;
    for (let k = 0; k < FRAME_SAMPLES; k++) {
      const i = n * FRAME_SAMPLES + k;
      let v = noise[i] + (i >= delay ? agent[i - delay] * gain : 0);
      if (options.speech && options.speechFrom !== undefined && n >= options.speechFrom) {
        const s = options.speech[i - options.speechFrom * FRAME_SAMPLES] ?? 0;
        if (s !== 0) speaking = true;
        v += s;
      }
      caller[k] = Math.max(-32768, Math.min(32767, Math.round(v)));
    }
    const agentActive = frame(agent, Math.max(0, n - Math.round(options.delayMs / FRAME_MS))).some((s) => Math.abs(s) > 1000);
    verdicts.push({ echo: guard.callerFrame(caller, atMs), callerSpeaking: speaking, agentActive });
  }
  return { verdicts, guard };
}

describe('echo guard', () => {
  for (const lossDb of [15, 20, 25]) {
    for (const delayMs of [40, 120, 200]) {
      it(`finds the echo path and holds back the agent's own voice (${lossDb} dB down, ${delayMs} ms late)`, () => {
        const agent = talker(8, 7, -18);
        const { verdicts, guard } = line(agent, { lossDb, delayMs });
        // After the first two seconds of agent speech the path is known…
        expect(guard.path?.delayMs).toBeGreaterThanOrEqual(delayMs - FRAME_MS);
        expect(guard.path?.delayMs).toBeLessThanOrEqual(delayMs + FRAME_MS);
        expect(guard.path?.lossDb).toBeGreaterThan(lossDb - 3);
        // …and (almost) every loud echo frame after that is called echo, not the caller.
        const later = verdicts.slice(100).filter((v) => v.agentActive);
        const missed = later.filter((v) => !v.echo).length;
        expect(missed / later.length).toBeLessThan(0.05);
      });
    }
  }

  it('lets the caller through when they talk over the agent', () => {
    const agent = talker(8, 7, -18);
    const speech = talker(2, 31, -24);
    const { verdicts } = line(agent, { lossDb: 20, delayMs: 120, speech, speechFrom: 200 });
    const talking = verdicts.slice(200, 300).filter((v, i) => v.callerSpeaking && Math.abs(frame(speech, i)[80] ?? 0) > 800);
    expect(talking.length).toBeGreaterThan(20);
    const heldBack = talking.filter((v) => v.echo).length;
    expect(heldBack / talking.length).toBeLessThan(0.1);
  });

  it('holds nothing back on a line without echo (a headset, a browser that cancels its own)', () => {
    const agent = talker(6, 7, -18);
    const speech = talker(2, 31, -30);
    const { verdicts, guard } = line(agent, { lossDb: null, delayMs: 0, speech, speechFrom: 150 });
    expect(verdicts.slice(150).filter((v) => v.callerSpeaking && v.echo).length).toBe(0);
    // Line noise may fit a "path" (a steady level) but never one that hides speech.
    if (guard.path) expect(guard.path.lossDb).toBeGreaterThan(30);
  });

  it('is off when configured off', () => {
    const guard = new EchoGuard({ ...DEFAULT_ECHO_GUARD, enabled: false });
    const agent = talker(3, 7, -18);
    for (let n = 0; n < 150; n++) {
      guard.agentAudio(frame(agent, n), n * FRAME_MS);
      expect(guard.callerFrame(frame(agent, Math.max(0, n - 3)), n * FRAME_MS)).toBe(false);
    }
  });
});
