/**
 * Music and steady noise are not speech: a held note keeps its spectrum and steady noise its level, speech does
 * neither (src/providers/asr/sustained-sound.ts). Real synthesized speech from every engine the machine has, and
 * melodies and noise made here, on both channels.
 */
import { describe, expect, it } from 'vitest';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { SustainedSoundMeter } from '../src/providers/asr/sustained-sound.js';
import { DEFAULT_MAX_SUSTAINED_SHARE, DEFAULT_MIN_LOUDNESS_SPREAD_DB } from '../src/providers/asr/pocketsphinx/grammar.js';
import { phoneChannel, synthesize, voicesFor } from '../loadtest/voices.js';
import { seededRandom } from '../loadtest/random.js';
import { colouredNoise, melody as makeMelody, type MelodyOptions } from '../loadtest/sounds.js';

/** Held and plucked, harmonics up to the fifth, so they are not the load test's own melodies. */
const melody = (seed: number, options: MelodyOptions): Int16Array =>
  makeMelody(seededRandom(seed), { harmonics: [1, 0.5, 0.3, 0, 0.2], amplitude: 5000, ...options });

function share(pcm: Int16Array): number {
  const meter = new SustainedSoundMeter();
  // In 20 ms frames, as a call feeds it.
  for (let i = 0; i < pcm.length; i += 320) meter.push(pcm.subarray(i, i + 320));
  return meter.share();
}

describe('held-spectrum share', () => {
  it('keeps speech far under the music line, on every engine and both channels', async () => {
    const sentences = { en: ['okay that is all goodbye'], es: ['eso es todo adios'] };
    const shares: string[] = [];
    for (const [language, texts] of Object.entries(sentences)) {
      for (const voice of voicesFor(language)) {
        for (const text of texts) {
          const wide = await synthesize(text, voice);
          for (const [channel, pcm] of [['16k', wide], ['phone', await phoneChannel(wide)]] as const) {
            const s = share(pcm);
            shares.push(`${voice.id} ${channel} ${s.toFixed(2)}`);
            expect(s, `${voice.id} ${channel} "${text}"`).toBeLessThan(DEFAULT_MAX_SUSTAINED_SHARE / 2);
          }
        }
      }
    }
    console.log(`[sustained] speech: ${shares.join(', ')}`);
  }, 120_000);

  it('puts melodies, plucked or held, one voice or two, over it on both channels', async () => {
    const kinds = [
      { noteMs: 250, pluck: true, voices: 1, ms: 2500 },
      { noteMs: 400, pluck: false, voices: 1, ms: 3000 },
      { noteMs: 300, pluck: false, voices: 2, ms: 3000 },
      { noteMs: 180, pluck: true, voices: 2, ms: 2000 },
    ];
    for (const [i, kind] of kinds.entries()) {
      const wide = melody(i + 1, kind);
      for (const [channel, pcm] of [['16k', wide], ['phone', await phoneChannel(wide)]] as const) {
        const s = share(pcm);
        console.log(`[sustained] melody ${JSON.stringify(kind)} ${channel} ${s.toFixed(2)}`);
        expect(s, `${JSON.stringify(kind)} ${channel}`).toBeGreaterThan(DEFAULT_MAX_SUSTAINED_SHARE + 0.15);
      }
    }
  });

  it('cannot tell from a sound too short, and starts again after reset', () => {
    const meter = new SustainedSoundMeter();
    const held = melody(9, { noteMs: 400, pluck: false, voices: 1, ms: 1200 });
    // 100 ms: four windows, three pairs.
    meter.push(held.subarray(0, INTERNAL_SAMPLE_RATE / 10));
    expect(meter.share()).toBe(0);
    meter.push(held.subarray(INTERNAL_SAMPLE_RATE / 10));
    expect(meter.share()).toBeGreaterThan(DEFAULT_MAX_SUSTAINED_SHARE);
    meter.reset();
    expect(meter.share()).toBe(0);
  });
});

describe('loudness spread', () => {
  function spread(pcm: Int16Array): number | undefined {
    const meter = new SustainedSoundMeter();
    for (let i = 0; i < pcm.length; i += 320) meter.push(pcm.subarray(i, i + 320));
    return meter.loudnessSpreadDb();
  }
  const mixUnder = (speech: Int16Array, noise: Int16Array): Int16Array =>
    Int16Array.from(speech, (s, i) => Math.max(-32767, Math.min(32767, s + (noise[i] ?? 0))));

  it('keeps speech well over the steady-noise line, on every engine, both channels, clean and over steady noise', async () => {
    const rand = seededRandom(5);
    const sentences = { en: ['no thanks', 'book a table for four people at seven thirty'], es: ['sí', 'qué hora es'] };
    const seen: number[] = [];
    for (const [language, texts] of Object.entries(sentences)) {
      for (const voice of voicesFor(language)) {
        for (const text of texts) {
          const clean = await synthesize(text, voice);
          // A caller on a noisy line: pink noise about 20 dB under the speech, through the whole turn.
          const noisy = mixUnder(clean, colouredNoise(rand, 'pink', (clean.length * 1000) / INTERNAL_SAMPLE_RATE, 1500));
          for (const [label, wide] of [['clean', clean], ['noisy', noisy]] as const) {
            for (const [channel, pcm] of [['16k', wide], ['phone', await phoneChannel(wide)]] as const) {
              // Undefined: too short to tell (a word under 200 ms), which never makes it noise.
              const s = spread(pcm);
              if (s === undefined) continue;
              expect(s, `${voice.id} ${label} ${channel} "${text}"`).toBeGreaterThan(DEFAULT_MIN_LOUDNESS_SPREAD_DB + 2);
              seen.push(s);
            }
          }
        }
      }
    }
    console.log(`[spread] speech ${Math.min(...seen).toFixed(1)}–${Math.max(...seen).toFixed(1)} dB over ${seen.length} sounds long enough to tell`);
  }, 180_000);

  it('puts steady noise of every colour and level under it, on both channels', async () => {
    const rand = seededRandom(6);
    for (const colour of ['white', 'pink', 'brown'] as const) {
      for (const amplitude of [1500, 5000, 12000]) {
        const wide = colouredNoise(rand, colour, amplitude === 5000 ? 9000 : 1500 + rand() * 1500, amplitude);
        for (const [channel, pcm] of [['16k', wide], ['phone', await phoneChannel(wide)]] as const) {
          const s = spread(pcm);
          console.log(`[spread] ${colour} noise at ${amplitude} ${channel}: ${s?.toFixed(1)} dB`);
          expect(s, `${colour} ${amplitude} ${channel}`).toBeLessThan(DEFAULT_MIN_LOUDNESS_SPREAD_DB - 2);
        }
      }
    }
  });

  it('cannot tell from a sound too short, nor from silence, and starts again after reset', () => {
    const meter = new SustainedSoundMeter();
    const steady = colouredNoise(seededRandom(7), 'pink', 1000, 4000);
    meter.push(new Int16Array(INTERNAL_SAMPLE_RATE));
    expect(meter.loudnessSpreadDb()).toBeUndefined();
    // 150 ms of sound: under ten sounding windows.
    meter.push(steady.subarray(0, (INTERNAL_SAMPLE_RATE * 15) / 100));
    expect(meter.loudnessSpreadDb()).toBeUndefined();
    meter.push(steady.subarray((INTERNAL_SAMPLE_RATE * 15) / 100));
    expect(meter.loudnessSpreadDb()).toBeLessThan(DEFAULT_MIN_LOUDNESS_SPREAD_DB);
    meter.reset();
    expect(meter.loudnessSpreadDb()).toBeUndefined();
  });
});
