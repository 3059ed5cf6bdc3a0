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

export type NoiseColour = 'white' | 'pink' | 'brown';

/** Steady noise: white, pink (Paul Kellet's three-pole filter, -3 dB/octave) or brown (leaky integrator, -6 dB/octave). */
export function colouredNoise(rand: () => number, colour: NoiseColour, ms: number, amplitude: number): Int16Array {
  const n = (ms * INTERNAL_SAMPLE_RATE) / 1000;
  const out = new Int16Array(Math.trunc(n));
  let b0 = 0, b1 = 0, b2 = 0, brown = 0;
  // One draw per sample and one more for a fractional length, as the out-of-domain sets have always been drawn: a
  // seed gives the same sounds as in the measurements recorded before this helper existed.
  for (let i = 0; i < n; i++) {
    const w = rand() * 2 - 1;
    let v = w;
    if (colour === 'pink') {
      b0 = 0.99765 * b0 + w * 0.099046;
      b1 = 0.963 * b1 + w * 0.2965164;
      b2 = 0.57 * b2 + w * 1.0526913;
      v = (b0 + b1 + b2 + w * 0.1848) / 3;
    } else if (colour === 'brown') {
      brown = (brown + 0.02 * w) / 1.02;
      v = brown * 3.5;
    }
    out[i] = Math.max(-32767, Math.min(32767, Math.round(v * amplitude)));
  }
  return out;
}
