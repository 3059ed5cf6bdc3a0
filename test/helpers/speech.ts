import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { parseWav } from '../../src/audio/wav.js';
import { resampleOnce } from '../../src/audio/resample.js';
import { INTERNAL_SAMPLE_RATE } from '../../src/audio/format.js';
import { SvoxPicoTts, defaultPicoVoicesDir } from '../../src/providers/tts/svoxpico/index.js';

const run = promisify(execFile);

let pico: Promise<SvoxPicoTts> | null = null;

/** True when SVOX Pico's voice files are here (../shared/models/svox-pico or SVOX_PICO_DIR). */
export function picoAvailable(): boolean {
  return existsSync(path.join(defaultPicoVoicesDir(), 'en-GB_ta.bin'));
}

async function espeak(text: string, voice: string, wpm: number): Promise<Int16Array> {
  const dir = await mkdtemp(path.join(tmpdir(), 'speech-'));
  try {
    const file = path.join(dir, 'speech.wav');
    await run('espeak-ng', ['-v', voice, '-s', String(wpm), '-w', file, text]);
    const wav = parseWav(await readFile(file));
    return await resampleOnce(wav.samples, wav.sampleRate, INTERNAL_SAMPLE_RATE);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function picoSpeech(text: string, voice: string): Promise<Int16Array> {
  pico ??= (async () => {
    const tts = new SvoxPicoTts({});
    await tts.load();
    return tts;
  })();
  const tts = await pico;
  const parts: Int16Array[] = [];
  for await (const chunk of tts.synthesize(text, { language: voice.slice(0, 2), voice })) parts.push(chunk);
  const out = new Int16Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

/** Debian's flite (English only): voices kal, kal16, awb, rms, slt. */
async function flite(text: string, voice: string): Promise<Int16Array> {
  return synthToPcm((file) => run('flite', ['-voice', voice, '-t', text, '-o', file]));
}

/** Debian's Festival (voice_kal_diphone from festvox-kallpc16k): text2wave reads the text on stdin. */
async function festival(text: string): Promise<Int16Array> {
  return synthToPcm(
    (file) =>
      new Promise<void>((resolve, reject) => {
        const child = execFile('text2wave', ['-o', file], (err) => (err ? reject(err) : resolve()));
        child.stdin?.end(text);
      }),
  );
}

async function synthToPcm(synthesize: (file: string) => Promise<unknown>): Promise<Int16Array> {
  const dir = await mkdtemp(path.join(tmpdir(), 'speech-'));
  try {
    const file = path.join(dir, 'speech.wav');
    await synthesize(file);
    const wav = parseWav(await readFile(file));
    return wav.sampleRate === INTERNAL_SAMPLE_RATE ? wav.samples : await resampleOnce(wav.samples, wav.sampleRate, INTERNAL_SAMPLE_RATE);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
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
