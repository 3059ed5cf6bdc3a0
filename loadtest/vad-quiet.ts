/**
 * What skipping quiet windows (providers.vad.quietWindowDbfs) does to Silero's decisions: each voice says a few
 * sentences after gaps of 0.4–8 s, then a click, a 1 kHz tone, a DTMF pair and two bursts of noise follow gaps of
 * 4 s; the gaps and the sounds' surroundings are digital silence or a noise floor at the given levels. The same
 * audio goes through Silero with quiet windows skipped and with every window inferred, and a Silero-style
 * hysteresis (0.5 up, 0.35 down) marks speech. Against where the words really are:
 *
 *   npx tsx loadtest/vad-quiet.ts [--levels=none,-65,-50,-40] [--colours white,pink,brown] [--quiet=-60] [--over-floor 3|off] [--settle 16]
 *
 * Prints one JSON object: per floor level and way, windows skipped, utterances missed, onsets on a non-speech sound
 * or in a gap (false alarms), how many 20 ms frames after the words' start speech was marked, and how many after
 * their end it was over (p50 / p90 / mean).
 */
import { parseArgs } from 'node:util';
import { FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { SileroVad } from '../src/providers/vad/silero/index.js';
import { DEFAULT_QUIET_WINDOWS, type QuietWindows } from '../src/providers/vad/quiet-windows.js';
import { seededNoise, synthesize, voicesFor } from './voices.js';
import { colouredNoise, type NoiseColour } from './sounds.js';
import { seededRandom } from './random.js';

const { values } = parseArgs({
  options: {
    levels: { type: 'string', default: 'none,-65,-50,-40' },
    quiet: { type: 'string', default: String(DEFAULT_QUIET_WINDOWS.levelDbfs) },
    'over-floor': { type: 'string', default: String(DEFAULT_QUIET_WINDOWS.overFloorDb) },
    settle: { type: 'string', default: String(DEFAULT_QUIET_WINDOWS.settleWindows) },
    colours: { type: 'string', default: 'white,pink,brown' },
  },
});
const SR = INTERNAL_SAMPLE_RATE;
const SENTENCES: Record<string, string[]> = {
  en: ['what time is it', 'I would like to book a table for four people on friday at eight', 'yes', 'stop', 'five'],
  es: ['qué hora es', 'quiero reservar una mesa para cuatro personas el viernes', 'sí', 'hasta luego', 'cinco'],
};
const GAPS_MS = [4000, 8000, 400, 5000, 700];

/** Speech segments by hysteresis: [first frame, frame where it fell under 0.35]. */
function segments(probs: number[]): [number, number][] {
  const out: [number, number][] = [];
  let start = -1;
  probs.forEach((p, i) => {
    if (start < 0 && p >= 0.5) start = i;
    else if (start >= 0 && p < 0.35) {
      out.push([start, i]);
      start = -1;
    }
  });
  if (start >= 0) out.push([start, probs.length]);
  return out;
}

/** The non-speech sounds, each after a 4 s gap. */
function sounds(): Int16Array[] {
  const click = new Int16Array(SR / 100);
  click[0] = 20_000;
  click[1] = -15_000;
  const tone = Int16Array.from({ length: SR / 2 }, (_, k) => Math.round(3000 * Math.sin((2 * Math.PI * 1000 * k) / SR)));
  const dtmf = Int16Array.from({ length: SR / 5 }, (_, k) => Math.round(2000 * (Math.sin((2 * Math.PI * 697 * k) / SR) + Math.sin((2 * Math.PI * 1209 * k) / SR))));
  return [click, tone, dtmf, seededNoise((SR * 3) / 10, 99, 1500), seededNoise(SR, 98, 300)];
}

interface Tally {
  windows: number;
  skipped: number;
  utterances: number;
  missed: number;
  falseAlarms: number;
  onsetFrames: number[];
  /** Frames from the words' end to where the hysteresis ended the segment that started in them. */
  offsetFrames: number[];
}

async function probabilities(vad: SileroVad, audio: Int16Array): Promise<{ probs: number[]; skipped: number; windows: number }> {
  const stream = vad.createStream();
  const probs: number[] = [];
  for (let at = 0; at + FRAME_SAMPLES <= audio.length; at += FRAME_SAMPLES) probs.push(await stream.process(audio.subarray(at, at + FRAME_SAMPLES)));
  stream.close();
  return { probs, skipped: stream.stats.skippedQuietWindows, windows: stream.stats.windows + stream.stats.skippedQuietWindows };
}

async function main(): Promise<void> {
  const overFloor = values['over-floor'];
  const quiet: QuietWindows = { ...DEFAULT_QUIET_WINDOWS, levelDbfs: Number(values.quiet), overFloorDb: overFloor === 'off' ? null : Number(overFloor), settleWindows: Number(values.settle) };
  const ways = { skipping: new SileroVad({ worker: false, quietWindows: quiet }), everyWindow: new SileroVad({ worker: false, quietWindows: null }) };
  await Promise.all(Object.values(ways).map((v) => v.load()));
  const voices = [...voicesFor('en'), ...voicesFor('es')];
  const speech = new Map<string, Int16Array[]>();
  for (const v of voices) speech.set(v.id, await Promise.all(SENTENCES[v.language].map((s) => synthesize(s, v, 0))));
  const result: Record<string, Record<string, unknown>> = {};
  const rand = seededRandom(1);
  const floors = values.levels.split(',').flatMap((level): { level: string; colour: NoiseColour | null }[] => (level === 'none' ? [{ level, colour: null }] : values.colours.split(',').map((colour) => ({ level, colour: colour as NoiseColour }))));
  for (const { level, colour } of floors) {
    /** The line's noise at `level` dBFS RMS in `colour` (none: digital silence). */
    const floor = (samples: number): Int16Array => {
      if (colour === null) return new Int16Array(samples);
      const raw = colouredNoise(rand, colour, (samples * 1000) / SR, 10_000);
      const rms = Math.sqrt(raw.reduce((a, v) => a + v * v, 0) / raw.length);
      const gain = (32768 * 10 ** (Number(level) / 20)) / rms;
      return Int16Array.from(raw, (v) => Math.round(v * gain));
    };
    const over = (x: Int16Array): Int16Array => {
      const n = floor(x.length);
      return Int16Array.from(x, (v, i) => Math.max(-32768, Math.min(32767, v + n[i])));
    };
    const row: Record<string, Tally> = {};
    for (const v of voices) {
      const parts: Int16Array[] = [];
      const words: [number, number][] = [];
      let at = 0;
      const push = (x: Int16Array): [number, number] => {
        parts.push(x);
        const span: [number, number] = [at / FRAME_SAMPLES, (at + x.length) / FRAME_SAMPLES];
        at += x.length;
        return span;
      };
      speech.get(v.id)!.forEach((s, i) => {
        push(floor(Math.round((GAPS_MS[i % GAPS_MS.length] * SR) / 1000)));
        words.push(push(over(s)));
      });
      for (const s of sounds()) {
        push(floor(SR * 4));
        push(over(s));
      }
      push(floor(SR * 2));
      const audio = new Int16Array(at);
      let o = 0;
      for (const p of parts) {
        audio.set(p, o);
        o += p.length;
      }
      for (const [way, vad] of Object.entries(ways)) {
        const r = await probabilities(vad, audio);
        const t = (row[way] ??= { windows: 0, skipped: 0, utterances: 0, missed: 0, falseAlarms: 0, onsetFrames: [], offsetFrames: [] });
        t.windows += r.windows;
        t.skipped += r.skipped;
        const segs = segments(r.probs);
        for (const [start, end] of words) {
          t.utterances++;
          const hit = segs.find(([s]) => s >= start - 2 && s < end);
          if (hit) {
            t.onsetFrames.push(hit[0] - start);
            // The last segment that starts within the words ends the utterance.
            const last = segs.filter(([s]) => s >= start - 2 && s < end).at(-1)!;
            t.offsetFrames.push(last[1] - end);
          } else t.missed++;
        }
        // Any onset that does not start within a sentence (a sound, or a gap) is a false alarm.
        t.falseAlarms += segs.filter(([s]) => !words.some(([start, end]) => s >= start - 2 && s < end)).length;
      }
    }
    const key = colour === null ? 'digital silence' : `${colour} ${level} dBFS`;
    result[key] = {};
    for (const [way, t] of Object.entries(row)) {
      const r2 = (x: number) => Math.round(x * 100) / 100;
      const summary = (frames: number[]) => {
        const d = [...frames].sort((a, b) => a - b);
        return { p50: r2(d[Math.floor(d.length / 2)]), p90: r2(d[Math.floor(d.length * 0.9)]), mean: r2(d.reduce((a, b) => a + b, 0) / d.length) };
      };
      const { onsetFrames, offsetFrames, ...counts } = t;
      result[key][way] = { ...counts, onsetFrames: summary(onsetFrames), offsetFrames: summary(offsetFrames) };
    }
  }
  await Promise.all(Object.values(ways).map((v) => v.close()));
  console.log(JSON.stringify({ quiet, voices: voices.map((v) => v.id), levels: result }, null, 2));
}

await main();
