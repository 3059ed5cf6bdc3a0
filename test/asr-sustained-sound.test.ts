/**
 * Music is not speech: a held note keeps its spectrum, speech never does (src/providers/asr/sustained-sound.ts).
 * Real synthesized speech from every engine the machine has, and melodies made here, on both channels.
 */
import { describe, expect, it } from 'vitest';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { SustainedSoundMeter } from '../src/providers/asr/sustained-sound.js';
import { DEFAULT_MAX_SUSTAINED_SHARE } from '../src/providers/asr/pocketsphinx/grammar.js';
import { phoneChannel, synthesize, voicesFor } from '../loadtest/voices.js';
import { seededRandom } from '../loadtest/random.js';
import { melody as makeMelody, type MelodyOptions } from '../loadtest/sounds.js';

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
