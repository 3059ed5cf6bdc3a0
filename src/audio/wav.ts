/**
 * WAV read (PCM 8/16/24/32-bit, IEEE float 32/64, G.711 µ/A-law, WAVE_FORMAT_EXTENSIBLE; mixed to
 * mono PCM16) and write (mono PCM16).
 *
 * A small chunk walker rather than wavefile: it skips unknown chunks (LIST, fact, bext…), tolerates
 * the placeholder sizes streaming writers leave behind (0 / 0xFFFFFFFF, data running past EOF) and
 * converts straight to Int16 without wavefile's per-sample Float64 round trip.
 */
import { readFile, writeFile } from 'node:fs/promises';
import { decodeAlaw, decodeMulaw } from './g711.js';

export interface WavData {
  sampleRate: number;
  /** Channel count in the file; `samples` is always the mono mix. */
  channels: number;
  samples: Int16Array;
}

export class WavFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'WavFormatError';
  }
}

const WAVE_FORMAT_PCM = 0x0001;
const WAVE_FORMAT_IEEE_FLOAT = 0x0003;
const WAVE_FORMAT_ALAW = 0x0006;
const WAVE_FORMAT_MULAW = 0x0007;
const WAVE_FORMAT_EXTENSIBLE = 0xfffe;

function fourcc(view: DataView, off: number): string {
  return String.fromCharCode(view.getUint8(off), view.getUint8(off + 1), view.getUint8(off + 2), view.getUint8(off + 3));
}

function clip16(v: number): number {
  const r = Math.round(v);
  return r > 32767 ? 32767 : r < -32768 ? -32768 : r;
}

/** Parse a WAV file held in memory. Throws WavFormatError on anything it cannot read. */
export function parseWav(bytes: Uint8Array): WavData {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (bytes.length < 12) throw new WavFormatError('WAV: file shorter than a RIFF header');
  const riff = fourcc(view, 0);
  if (riff !== 'RIFF') {
    throw new WavFormatError(
      riff === 'RIFX' || riff === 'RF64' ? `WAV: ${riff} container is not supported` : 'WAV: not a RIFF file',
    );
  }
  if (fourcc(view, 8) !== 'WAVE') throw new WavFormatError('WAV: RIFF form is not WAVE');

  let fmt: { tag: number; channels: number; sampleRate: number; bits: number } | null = null;
  let dataOff = -1;
  let dataLen = 0;
  // The RIFF size field is ignored on purpose: streaming writers often leave it wrong.
  let off = 12;
  while (off + 8 <= bytes.length) {
    const id = fourcc(view, off);
    const size = view.getUint32(off + 4, true);
    const body = off + 8;
    if (id === 'fmt ') {
      if (size < 16 || body + 16 > bytes.length) throw new WavFormatError('WAV: truncated fmt chunk');
      let tag = view.getUint16(body, true);
      if (tag === WAVE_FORMAT_EXTENSIBLE) {
        // The real format is the first two bytes of the SubFormat GUID (cbSize ≥ 22).
        if (size < 40 || body + 26 > bytes.length) throw new WavFormatError('WAV: truncated WAVE_FORMAT_EXTENSIBLE');
        tag = view.getUint16(body + 24, true);
      }
      fmt = {
        tag,
        channels: view.getUint16(body + 2, true),
        sampleRate: view.getUint32(body + 4, true),
        bits: view.getUint16(body + 14, true),
      };
    } else if (id === 'data') {
      dataOff = body;
      // 0 or 0xFFFFFFFF (or anything past EOF) means "until end of file".
      dataLen = size === 0 || body + size > bytes.length ? bytes.length - body : size;
      if (fmt !== null) break;
    }
    // Chunks are word-aligned: odd sizes carry a pad byte.
    off = body + size + (size & 1);
  }
  if (fmt === null) throw new WavFormatError('WAV: no fmt chunk');
  if (dataOff < 0) throw new WavFormatError('WAV: no data chunk');
  const { tag, channels, sampleRate, bits } = fmt;
  if (channels < 1) throw new WavFormatError('WAV: zero channels');
  if (sampleRate < 1) throw new WavFormatError('WAV: zero sample rate');

  const bytesPerSample = bits / 8;
  const supported =
    (tag === WAVE_FORMAT_PCM && [8, 16, 24, 32].includes(bits)) ||
    (tag === WAVE_FORMAT_IEEE_FLOAT && (bits === 32 || bits === 64)) ||
    ((tag === WAVE_FORMAT_ALAW || tag === WAVE_FORMAT_MULAW) && bits === 8);
  if (!supported) throw new WavFormatError(`WAV: unsupported format tag 0x${tag.toString(16)} with ${bits} bits`);
  const blockAlign = bytesPerSample * channels;
  const frames = Math.floor(dataLen / blockAlign);

  // One decoded value per interleaved sample, in the int16 scale.
  let read: (i: number) => number;
  const base = dataOff;
  if (tag === WAVE_FORMAT_ALAW || tag === WAVE_FORMAT_MULAW) {
    const raw = bytes.subarray(base, base + frames * channels);
    const pcm = tag === WAVE_FORMAT_ALAW ? decodeAlaw(raw) : decodeMulaw(raw);
    read = (i) => pcm[i];
  } else if (tag === WAVE_FORMAT_IEEE_FLOAT) {
    read = bits === 32 ? (i) => view.getFloat32(base + i * 4, true) * 32768 : (i) => view.getFloat64(base + i * 8, true) * 32768;
  } else if (bits === 8) {
    read = (i) => (view.getUint8(base + i) - 128) << 8; // 8-bit WAV is unsigned
  } else if (bits === 16) {
    read = (i) => view.getInt16(base + i * 2, true);
  } else if (bits === 24) {
    read = (i) => {
      const p = base + i * 3;
      const v = view.getUint8(p) | (view.getUint8(p + 1) << 8) | (view.getInt8(p + 2) << 16);
      return v / 256;
    };
  } else {
    read = (i) => view.getInt32(base + i * 4, true) / 65536;
  }

  const samples = new Int16Array(frames);
  if (channels === 1) {
    for (let f = 0; f < frames; f++) samples[f] = clip16(read(f));
  } else {
    for (let f = 0; f < frames; f++) {
      let sum = 0;
      for (let c = 0; c < channels; c++) sum += read(f * channels + c);
      samples[f] = clip16(sum / channels);
    }
  }
  return { sampleRate, channels, samples };
}

/** Read and parse a WAV file. */
export async function readWav(path: string): Promise<WavData> {
  const buf = await readFile(path);
  try {
    return parseWav(buf);
  } catch (err) {
    if (err instanceof WavFormatError) throw new WavFormatError(`${err.message} (${path})`);
    throw err;
  }
}

/** Serialise mono PCM16 as a canonical 44-byte-header WAV. */
export function encodeWav(samples: Int16Array, sampleRate: number): Uint8Array {
  if (!Number.isInteger(sampleRate) || sampleRate < 1) throw new RangeError(`encodeWav: bad sample rate ${sampleRate}`);
  const dataBytes = samples.length * 2;
  const out = new Uint8Array(44 + dataBytes);
  const v = new DataView(out.buffer);
  const ascii = (off: number, s: string): void => {
    for (let i = 0; i < 4; i++) v.setUint8(off + i, s.charCodeAt(i));
  };
  ascii(0, 'RIFF');
  v.setUint32(4, 36 + dataBytes, true);
  ascii(8, 'WAVE');
  ascii(12, 'fmt ');
  v.setUint32(16, 16, true);
  v.setUint16(20, WAVE_FORMAT_PCM, true);
  v.setUint16(22, 1, true);
  v.setUint32(24, sampleRate, true);
  v.setUint32(28, sampleRate * 2, true);
  v.setUint16(32, 2, true);
  v.setUint16(34, 16, true);
  ascii(36, 'data');
  v.setUint32(40, dataBytes, true);
  for (let i = 0; i < samples.length; i++) v.setInt16(44 + i * 2, samples[i], true);
  return out;
}

/** Write mono PCM16 to a WAV file. */
export async function writeWav(path: string, samples: Int16Array, sampleRate: number): Promise<void> {
  await writeFile(path, encodeWav(samples, sampleRate));
}
