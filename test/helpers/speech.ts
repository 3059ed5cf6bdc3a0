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

/**
 * Real synthetic caller speech for tests, 16 kHz mono PCM16, with silence around it.
 * Engine 'pico' (default when its voice files exist) speaks with the British Pico voice, a different
 * speaker from the agent's American one, which PocketSphinx recognises far better than eSpeak's
 * formant voice; 'espeak' uses Debian's espeak-ng.
 */
export async function speak(
  text: string,
  options: { engine?: 'pico' | 'espeak'; voice?: string; wpm?: number; padMs?: number } = {},
): Promise<Int16Array> {
  const engine = options.engine ?? (picoAvailable() ? 'pico' : 'espeak');
  const pcm = engine === 'pico' ? await picoSpeech(text, options.voice ?? 'en-GB') : await espeak(text, options.voice ?? 'en-us', options.wpm ?? 150);
  const pad = Math.round(((options.padMs ?? 300) * INTERNAL_SAMPLE_RATE) / 1000);
  const out = new Int16Array(pcm.length + 2 * pad);
  out.set(pcm, pad);
  return out;
}
