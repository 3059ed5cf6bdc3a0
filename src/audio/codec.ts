/**
 * Edge codecs: what transports use to turn wire payloads into internal 16 kHz PCM16 and back.
 * One decoder and one encoder per call; both are stateful (resampler history, Opus state).
 */
import { INTERNAL_SAMPLE_RATE } from './format.js';
import { decodeAlaw, decodeMulaw, encodeAlaw, encodeMulaw } from './g711.js';
import { OpusDecoder, OpusEncoder, type OpusEncoderOptions } from './opus.js';
import { StreamingResampler, type ResamplerQuality } from './resample.js';

export type EdgeCodecName = 'pcm16' | 'pcmu' | 'pcma' | 'opus';
export type EdgeSampleRate = 8000 | 16000 | 24000 | 48000;

export interface CodecSpec {
  codec: EdgeCodecName;
  sampleRate: EdgeSampleRate;
}

export interface InboundDecoder {
  readonly spec: CodecSpec;
  /**
   * One wire payload → internal 16 kHz PCM16 of whatever length it yields (feed it to a Framer).
   * May be shorter than the payload's duration at first: the resampler holds a few ms of look-ahead.
   */
  decode(payload: Uint8Array): Int16Array;
  close(): void;
}

export interface OutboundEncoder {
  readonly spec: CodecSpec;
  /**
   * Internal 16 kHz PCM16 (normally one 20 ms frame) → one wire payload. For opus the input must be
   * a legal Opus frame (20 ms is); for resampled PCM the payload size varies by a sample or so.
   */
  encode(frame: Int16Array): Uint8Array;
  close(): void;
}

export interface CodecOptions {
  resamplerQuality?: ResamplerQuality;
  opus?: OpusEncoderOptions;
}

export class CodecSpecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecSpecError';
  }
}

const RATES: Record<EdgeCodecName, readonly EdgeSampleRate[]> = {
  pcm16: [8000, 16000, 24000, 48000],
  pcmu: [8000],
  pcma: [8000],
  opus: [16000, 48000],
};

function isCodecName(v: unknown): v is EdgeCodecName {
  return typeof v === 'string' && Object.prototype.hasOwnProperty.call(RATES, v);
}

/** Check an untrusted spec (e.g. from a client's start message); throws CodecSpecError. */
export function validateCodecSpec(spec: unknown): CodecSpec {
  if (typeof spec !== 'object' || spec === null) throw new CodecSpecError('codec spec must be an object');
  const codec: unknown = Reflect.get(spec, 'codec');
  const sampleRate: unknown = Reflect.get(spec, 'sampleRate');
  if (!isCodecName(codec)) {
    throw new CodecSpecError(`unsupported codec ${JSON.stringify(codec)}; expected one of ${Object.keys(RATES).join(', ')}`);
  }
  const allowed = RATES[codec];
  if (typeof sampleRate !== 'number' || !allowed.some((r) => r === sampleRate)) {
    throw new CodecSpecError(
      `unsupported sample rate ${JSON.stringify(sampleRate)} for ${codec}; expected ${allowed.join(' or ')}`,
    );
  }
  return { codec, sampleRate: sampleRate as EdgeSampleRate };
}

/** Little-endian bytes → samples, carrying an odd trailing byte over to the next payload. */
class Pcm16LeReader {
  private carry = -1;

  read(bytes: Uint8Array): Int16Array {
    const start = this.carry >= 0 ? 1 : 0;
    const total = bytes.length + start;
    const out = new Int16Array(total >> 1);
    let i = 0;
    let o = 0;
    if (start === 1 && bytes.length > 0) {
      out[o++] = ((this.carry | (bytes[0] << 8)) << 16) >> 16;
      i = 1;
      this.carry = -1;
    }
    for (; i + 1 < bytes.length; i += 2) out[o++] = ((bytes[i] | (bytes[i + 1] << 8)) << 16) >> 16;
    if (i < bytes.length) this.carry = bytes[i];
    return out;
  }
}

function int16ToLeBytes(pcm: Int16Array): Uint8Array {
  const out = new Uint8Array(pcm.length * 2);
  for (let i = 0, o = 0; i < pcm.length; i++, o += 2) {
    const s = pcm[i];
    out[o] = s & 0xff;
    out[o + 1] = (s >> 8) & 0xff;
  }
  return out;
}

export async function createInboundDecoder(spec: CodecSpec, options: CodecOptions = {}): Promise<InboundDecoder> {
  const valid = validateCodecSpec(spec);
  if (valid.codec === 'opus') {
    // libopus decodes any packet straight at 16 kHz whatever the sender's rate: no resampler needed.
    const dec = new OpusDecoder(INTERNAL_SAMPLE_RATE);
    return { spec: valid, decode: (payload) => dec.decode(payload), close: () => {} };
  }
  const resampler = await StreamingResampler.create(valid.sampleRate, INTERNAL_SAMPLE_RATE, {
    quality: options.resamplerQuality,
  });
  const pcmReader = new Pcm16LeReader();
  const toPcm: (payload: Uint8Array) => Int16Array =
    valid.codec === 'pcmu' ? decodeMulaw : valid.codec === 'pcma' ? decodeAlaw : (p) => pcmReader.read(p);
  return {
    spec: valid,
    decode: (payload) => resampler.process(toPcm(payload)),
    close: () => resampler.destroy(),
  };
}

export async function createOutboundEncoder(spec: CodecSpec, options: CodecOptions = {}): Promise<OutboundEncoder> {
  const valid = validateCodecSpec(spec);
  if (valid.codec === 'opus') {
    // Encoding at 16 kHz: our audio has nothing above 8 kHz, and any Opus decoder plays it at 48 kHz.
    const enc = new OpusEncoder(INTERNAL_SAMPLE_RATE, options.opus);
    return { spec: valid, encode: (frame) => enc.encode(frame), close: () => {} };
  }
  const resampler = await StreamingResampler.create(INTERNAL_SAMPLE_RATE, valid.sampleRate, {
    quality: options.resamplerQuality,
  });
  const fromPcm: (pcm: Int16Array) => Uint8Array =
    valid.codec === 'pcmu' ? encodeMulaw : valid.codec === 'pcma' ? encodeAlaw : int16ToLeBytes;
  return {
    spec: valid,
    encode: (frame) => fromPcm(resampler.process(frame)),
    close: () => resampler.destroy(),
  };
}

/** Every codec/rate pair an edge codec speaks, as 'codec/rate' ('pcm16/16000', 'opus/48000'). */
export function supportedFormats(): string[] {
  return Object.entries(RATES).flatMap(([codec, rates]) => rates.map((rate) => `${codec}/${rate}`));
}
