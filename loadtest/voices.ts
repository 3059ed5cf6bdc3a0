/**
 * Synthetic callers for ASR measurements and tests: several voices from several engines, all returned as
 * 16 kHz mono PCM16, plus the telephone channel (µ-law 8 kHz round trip through the service's own codecs).
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { createInboundDecoder, createOutboundEncoder } from '../src/audio/codec.js';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { concatPcm } from '../src/audio/framer.js';
import { resampleOnce } from '../src/audio/resample.js';
import { parseWav } from '../src/audio/wav.js';
import { SvoxPicoTts, defaultPicoVoicesDir } from '../src/providers/tts/svoxpico/index.js';

const run = promisify(execFile);

export type Engine = 'espeak' | 'pico' | 'festival' | 'flite';

export interface Voice {
  /** Stable label for reports, e.g. "espeak:en-us+m3". */
  id: string;
  engine: Engine;
  language: string;
  /** Engine-specific voice name. */
  voice: string;
}

function hasCommand(cmd: string): boolean {
  return ['/usr/bin', '/usr/local/bin', '/bin'].some((d) => existsSync(path.join(d, cmd)));
}

export function picoAvailable(): boolean {
  return existsSync(path.join(defaultPicoVoicesDir(), 'en-GB_ta.bin'));
}

/** Every voice available on this machine for a language (at least eSpeak when espeak-ng is installed). */
export function voicesFor(language: string): Voice[] {
  const out: Voice[] = [];
  const espeak = (v: string): void => void out.push({ id: `espeak:${v}`, engine: 'espeak', language, voice: v });
  if (hasCommand('espeak-ng')) {
    if (language === 'en') ['en-us', 'en-gb+f2', 'en-us+m3'].forEach(espeak);
    if (language === 'es') ['es', 'es+f2', 'es-419+m3'].forEach(espeak);
  }
  if (picoAvailable()) {
    const pico = (v: string): void => void out.push({ id: `pico:${v}`, engine: 'pico', language, voice: v });
    if (language === 'en') ['en-US', 'en-GB'].forEach(pico);
    if (language === 'es') pico('es-ES');
  }
  if (language === 'en' && hasCommand('text2wave') && existsSync('/usr/share/festival/voices/english/kal_diphone')) {
    out.push({ id: 'festival:kal', engine: 'festival', language, voice: 'voice_kal_diphone' });
  }
  if (language === 'en' && hasCommand('flite')) out.push({ id: 'flite:slt', engine: 'flite', language, voice: 'slt' });
  return out;
}

let pico: Promise<SvoxPicoTts> | undefined;

/** Runs a synthesizer that writes a WAV file and returns its speech at 16 kHz. */
export async function viaWavFile(make: (file: string) => Promise<unknown>): Promise<Int16Array> {
  const dir = await mkdtemp(path.join(tmpdir(), 'voice-'));
  try {
    const file = path.join(dir, 'out.wav');
    await make(file);
    const wav = parseWav(await readFile(file));
    return await resampleOnce(wav.samples, wav.sampleRate, INTERNAL_SAMPLE_RATE);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** SVOX Pico's speech for `text` at 16 kHz, as it comes (peaks at 0 dBFS); one engine for the process. */
export async function picoPcm(text: string, language: string, voice: string): Promise<Int16Array> {
  pico ??= (async () => {
    const tts = new SvoxPicoTts({});
    await tts.load();
    return tts;
  })();
  const tts = await pico;
  const parts: Int16Array[] = [];
  for await (const chunk of tts.synthesize(text, { language, voice })) parts.push(chunk);
  return concatPcm(parts);
}

/** Speech for `text`, 16 kHz, with `padMs` of silence on each side. */
export async function synthesize(text: string, voice: Voice, padMs = 300): Promise<Int16Array> {
  let pcm: Int16Array;
  switch (voice.engine) {
    case 'espeak':
      pcm = await viaWavFile((f) => run('espeak-ng', ['-v', voice.voice, '-s', '150', '-w', f, text]));
      break;
    case 'festival':
      pcm = await viaWavFile(async (f) => {
        const child = execFile('text2wave', ['-eval', `(${voice.voice})`, '-o', f]);
        child.stdin?.end(text);
        await new Promise<void>((resolve, reject) => {
          child.on('error', reject);
          child.on('close', (code) => (code === 0 ? resolve() : reject(new Error(`text2wave exited ${code}`))));
        });
      });
      break;
    case 'flite':
      pcm = await viaWavFile((f) => run('flite', ['-voice', voice.voice, '-t', text, '-o', f]));
      break;
    case 'pico': {
      pcm = await picoPcm(text, voice.language, voice.voice);
      // Pico peaks at 0 dBFS: about -3 dB like the agent's own output.
      for (let i = 0; i < pcm.length; i++) pcm[i] = Math.round(pcm[i] * 0.7);
      break;
    }
  }
  const pad = Math.round((padMs * INTERNAL_SAMPLE_RATE) / 1000);
  const out = new Int16Array(pcm.length + 2 * pad);
  out.set(pcm, pad);
  return out;
}

/** The telephone channel: 16 kHz → µ-law 8 kHz → 16 kHz, 20 ms at a time, as a SIP/Twilio call carries it. */
export async function phoneChannel(pcm: Int16Array): Promise<Int16Array> {
  const encoder = await createOutboundEncoder({ codec: 'pcmu', sampleRate: 8000 });
  const decoder = await createInboundDecoder({ codec: 'pcmu', sampleRate: 8000 });
  try {
    const frame = INTERNAL_SAMPLE_RATE / 50;
    const parts: Int16Array[] = [];
    for (let i = 0; i < pcm.length; i += frame) {
      const chunk = new Int16Array(frame);
      chunk.set(pcm.subarray(i, i + frame));
      parts.push(decoder.decode(encoder.encode(chunk)));
    }
    return concatPcm(parts);
  } finally {
    encoder.close();
    decoder.close();
  }
}

/** Deterministic noise (mulberry32), ±`amplitude`: 100 is a quiet line's floor, -55 dBFS RMS (uniform: RMS = peak / √3). */
export function seededNoise(samples: number, seed: number, amplitude = 100): Int16Array {
  let s = seed;
  const out = new Int16Array(samples);
  for (let i = 0; i < samples; i++) {
    s = (s + 0x6d2b79f5) | 0;
    let t = Math.imul(s ^ (s >>> 15), 1 | s);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    out[i] = Math.round(((((t ^ (t >>> 14)) >>> 0) / 4294967296) * 2 - 1) * amplitude);
  }
  return out;
}

/** seededNoise at an RMS level in dBFS. */
export function seededNoiseAtDbfs(samples: number, seed: number, levelDbfs: number): Int16Array {
  if (!(levelDbfs < 0)) throw new RangeError(`a noise level must be under 0 dBFS, got ${levelDbfs}`);
  return seededNoise(samples, seed, Math.round(32768 * 10 ** (levelDbfs / 20) * Math.sqrt(3)));
}
