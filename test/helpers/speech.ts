import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { INTERNAL_SAMPLE_RATE } from '../../src/audio/format.js';
import { defaultPicoVoicesDir } from '../../src/providers/tts/svoxpico/index.js';
import { picoPcm, viaWavFile } from '../../loadtest/voices.js';

const run = promisify(execFile);

/** True when SVOX Pico's voice files are here (../shared/models/svox-pico or SVOX_PICO_DIR). */
export function picoAvailable(): boolean {
  return existsSync(path.join(defaultPicoVoicesDir(), 'en-GB_ta.bin'));
}

function espeak(text: string, voice: string, wpm: number): Promise<Int16Array> {
  return viaWavFile((file) => run('espeak-ng', ['-v', voice, '-s', String(wpm), '-w', file, text]));
}

function picoSpeech(text: string, voice: string): Promise<Int16Array> {
  return picoPcm(text, voice.slice(0, 2), voice);
}

/** Debian's flite (English only): voices kal, kal16, awb, rms, slt. */
async function flite(text: string, voice: string): Promise<Int16Array> {
  return viaWavFile((file) => run('flite', ['-voice', voice, '-t', text, '-o', file]));
}

/** Debian's Festival (voice_kal_diphone from festvox-kallpc16k): text2wave reads the text on stdin. */
async function festival(text: string): Promise<Int16Array> {
  return viaWavFile(
    (file) =>
      new Promise<void>((resolve, reject) => {
        const child = execFile('text2wave', ['-o', file], (err) => (err ? reject(err) : resolve()));
        child.stdin?.end(text);
      }),
  );
}

export type SpeechEngine = 'pico' | 'espeak' | 'flite' | 'festival';

/**
 * The default caller voice: SVOX Pico's British voice when its files are installed (a different speaker from the
 * agent's American one), else Debian's flite (male US voice "rms"), which `npm run setup -- --test` installs on any
 * machine. Both are recognised well by PocketSphinx; eSpeak NG's formant voice is not.
 */
export function defaultEngine(): SpeechEngine {
  return picoAvailable() ? 'pico' : 'flite';
}

/**
 * Real synthetic caller speech for tests, 16 kHz mono PCM16, with silence around it. `voice` is the engine's
 * own voice name (pico: en-GB, en-US, es-ES…; espeak: en-us, es…; flite: rms, slt, awb, kal); Festival has one.
 */
export async function speak(
  text: string,
  options: { engine?: SpeechEngine; voice?: string; wpm?: number; padMs?: number } = {},
): Promise<Int16Array> {
  const engine = options.engine ?? defaultEngine();
  let pcm: Int16Array;
  switch (engine) {
    case 'pico':
      pcm = await picoSpeech(text, options.voice ?? 'en-GB');
      break;
    case 'espeak':
      pcm = await espeak(text, options.voice ?? 'en-us', options.wpm ?? 150);
      break;
    case 'flite':
      pcm = await flite(text, options.voice ?? 'rms');
      break;
    case 'festival':
      pcm = await festival(text);
      break;
  }
  const pad = Math.round(((options.padMs ?? 300) * INTERNAL_SAMPLE_RATE) / 1000);
  const out = new Int16Array(pcm.length + 2 * pad);
  out.set(pcm, pad);
  return out;
}
