/** Sounds that are not speech, for out-of-domain sets and tests. */
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { concatPcm } from '../src/audio/framer.js';

export interface MelodyOptions {
  /** Length of each note, ms. */
  noteMs: number;
  /** Plucked (each note decays) or held (organ-like, flat with short ramps). */
  pluck: boolean;
  /** Notes sounding at once (1: a melody, 2: two-note chords). */
  voices: number;
  /** Total length, ms (whole notes). */
  ms: number;
  /** Relative amplitudes of the harmonics, from the fundamental up. */
  harmonics?: readonly number[];
  amplitude?: number;
}

/** Notes drawn from two octaves of semitones above 220 Hz, with harmonics: a crude synthetic melody. */
export function melody(rand: () => number, options: MelodyOptions): Int16Array {
  const harmonics = options.harmonics ?? [1, 0.5, 0.25];
  const amplitude = options.amplitude ?? 6000;
  const n = Math.round((options.noteMs * INTERNAL_SAMPLE_RATE) / 1000);
  const parts: Int16Array[] = [];
  for (let t = 0; t < options.ms; t += options.noteMs) {
    const freqs = Array.from({ length: options.voices }, () => 220 * 2 ** (Math.floor(rand() * 24) / 12));
    const note = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const envelope = options.pluck ? Math.exp(-i / (n / 3)) : Math.min(1, i / 160, (n - i) / 160);
      let v = 0;
      for (const f of freqs) {
        const x = (2 * Math.PI * f * i) / INTERNAL_SAMPLE_RATE;
        for (let h = 0; h < harmonics.length; h++) v += harmonics[h] * Math.sin((h + 1) * x);
      }
      note[i] = Math.round((amplitude * envelope * v) / options.voices);
    }
    parts.push(note);
  }
  return concatPcm(parts);
}
