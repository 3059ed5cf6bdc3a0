/**
 * How much of a sound holds one spectrum from frame to frame: the share of consecutive frames (64 ms windows,
 * 20 ms apart, of the sounding part) whose magnitude spectra below 4 kHz are near-identical (cosine ≥ 0.997).
 *
 * Speech never holds still: the formants move and the pitch glides, so even diphone synthesizers' steadiest vowels
 * give at most 0.01–0.02 (eSpeak NG, SVOX Pico, Festival and flite, both channels; test/asr-sustained-sound.test.ts).
 * A held note does not change its spectrum while it sounds: synthetic melodies, plucked or held, one voice or a
 * two-note chord, give 0.54–0.87. A grammar decoder fits such a melody to a sentence at a speech-like phone rate and
 * a high likelihood ("that's all" at 0.96), which is how music on a line could hang up a call; this measure tells it
 * apart before any action. The window is long enough (15.6 Hz bins) that two notes of a chord do not beat inside
 * one bin; the band stops at 4 kHz so a telephone channel (nothing above it) reads the same as wideband audio.
 *
 * The same windows also give the sound's loudness spread: how far its level (300 Hz–4 kHz, where a phone line carries
 * speech) moves, in dB, the larger of the 10th-to-90th percentile range and the loudest window over the median. Speech
 * rises and falls with its syllables; steady noise does not. The grammar can fit steady noise to a short sentence with
 * a confident score ("that's all" at 0.77 on pink noise through the phone channel), so a sound this flat is not speech
 * either. Measured (white, pink and brown noise at five levels up to 9 s; four synthesizers, clean and over steady
 * noise; both channels): noise at most 2.9 dB, speech at least 10.5 dB. The percentile range alone fails a short word
 * in noise (the noise is most of the sound); the peak alone fails clean speech whose vowels are its median.
 */
import FFT from 'fft.js';
import { INTERNAL_SAMPLE_RATE } from '../../audio/format.js';

const WINDOW = 1024;
const HOP = INTERNAL_SAMPLE_RATE / 50;
const TOP_BIN = Math.floor((4000 * WINDOW) / INTERNAL_SAMPLE_RATE);
/** The level's band starts at 300 Hz: below it, rumble and brown noise swing the level more than speech's syllables do. */
const LEVEL_BOTTOM_BIN = Math.ceil((300 * WINDOW) / INTERNAL_SAMPLE_RATE);
/** Spectra this similar (cosine of magnitudes) are "the same sound held". */
const SAME_SPECTRUM = 0.997;
/** Frames this far below the loudest one (30 dB) are the pauses around the sound, not the sound. */
const SOUNDING = 1e-3;

const hann = Float64Array.from({ length: WINDOW }, (_, i) => 0.5 - 0.5 * Math.cos((2 * Math.PI * i) / (WINDOW - 1)));

export class SustainedSoundMeter {
  private readonly fft = new FFT(WINDOW);
  private readonly frame = new Float64Array(WINDOW);
  private readonly spectrum: number[] = this.fft.createComplexArray() as number[];
  private readonly pending = new Int16Array(WINDOW);
  private filled = 0;
  /** This frame's and the previous frame's magnitudes (swapped, not reallocated, per frame). */
  private magnitude = new Float64Array(TOP_BIN);
  private previous = new Float64Array(TOP_BIN);
  /** 0 until a frame has been analysed (and for silence): no pair to compare with. */
  private previousEnergy = 0;
  /** Per pair of consecutive frames: the quieter frame's energy and whether the two spectra are the same. */
  private readonly pairs: Array<{ energy: number; same: boolean }> = [];
  private loudest = 0;
  /** Every analysed window's energy from 300 Hz to 4 kHz, for the loudness spread. */
  private readonly levels: number[] = [];

  push(pcm: Int16Array): void {
    let offset = 0;
    while (offset < pcm.length) {
      const take = Math.min(WINDOW - this.filled, pcm.length - offset);
      this.pending.set(pcm.subarray(offset, offset + take), this.filled);
      this.filled += take;
      offset += take;
      if (this.filled === WINDOW) {
        this.analyse();
        // Slide by one hop: keep the window's tail as the next window's head.
        this.pending.copyWithin(0, HOP);
        this.filled = WINDOW - HOP;
      }
    }
  }

  /** Share of the sounding frame pairs that hold one spectrum (0 with fewer than 5 pairs: too short to tell). */
  share(): number {
    const floor = this.loudest * SOUNDING;
    let sounding = 0;
    let same = 0;
    for (const p of this.pairs) {
      if (p.energy < floor) continue;
      sounding++;
      if (p.same) same++;
    }
    return sounding < 5 ? 0 : same / sounding;
  }

  /**
   * How far the sounding windows' levels (within 30 dB of the loudest) move, in dB: the larger of the 10th-to-90th
   * percentile range and the loudest over the median. Undefined under 10 such windows (200 ms): too short to tell.
   */
  loudnessSpreadDb(): number | undefined {
    let loudest = 0;
    for (const level of this.levels) loudest = Math.max(loudest, level);
    const floor = loudest * SOUNDING;
    const sounding = this.levels.filter((level) => level > 0 && level >= floor).sort((a, b) => a - b);
    if (sounding.length < 10) return undefined;
    const at = (q: number): number => sounding[Math.min(sounding.length - 1, Math.floor(q * sounding.length))];
    return 10 * Math.log10(Math.max(at(0.9) / at(0.1), loudest / at(0.5)));
  }

  reset(): void {
    this.filled = 0;
    this.previousEnergy = 0;
    this.pairs.length = 0;
    this.levels.length = 0;
    this.loudest = 0;
  }

  private analyse(): void {
    for (let i = 0; i < WINDOW; i++) this.frame[i] = this.pending[i] * hann[i];
    this.fft.realTransform(this.spectrum, this.frame);
    const magnitude = this.magnitude;
    let energy = 0;
    let level = 0;
    for (let k = 1; k < TOP_BIN; k++) {
      const re = this.spectrum[2 * k];
      const im = this.spectrum[2 * k + 1];
      const power = re * re + im * im;
      magnitude[k] = Math.sqrt(power);
      energy += power;
      if (k >= LEVEL_BOTTOM_BIN) level += power;
    }
    if (energy > 0 && this.previousEnergy > 0) {
      let dot = 0;
      for (let k = 1; k < TOP_BIN; k++) dot += magnitude[k] * this.previous[k];
      this.pairs.push({ energy: Math.min(energy, this.previousEnergy), same: dot / Math.sqrt(energy * this.previousEnergy) >= SAME_SPECTRUM });
    }
    this.loudest = Math.max(this.loudest, energy);
    this.levels.push(level);
    this.magnitude = this.previous;
    this.previous = magnitude;
    this.previousEnergy = energy;
  }
}
