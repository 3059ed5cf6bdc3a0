/**
 * Mono Opus encode/decode via @discordjs/opus (native libopus).
 *
 * The binding's single `OpusEncoder(rate, channels)` object holds both an encoder and a decoder,
 * created lazily; we use one object per direction so state never mixes.
 *
 * Binding limits worth knowing (checked against its node-opus.cc):
 * - `encode()` with a PCM length that is not a legal Opus frame size aborts the whole process
 *   (a failed napi throw → FATAL ERROR), so OpusEncoder validates the length before calling it.
 * - `decode()` throws a TypeError on corrupt data; OpusDecoder rethrows it as OpusDecodeError.
 * - No FEC decode (decode_fec is hard-wired to 0). PLC exists: an empty packet runs libopus
 *   concealment, but always for its maximum frame (5760 samples); see OpusDecoder.conceal().
 */
import opus from '@discordjs/opus';

export type OpusSampleRate = 16_000 | 48_000;

const SUPPORTED_RATES: readonly number[] = [16_000, 48_000];

/** Legal Opus frame durations in ms (2.5 … 60). */
const FRAME_DURATIONS_MS = [2.5, 5, 10, 20, 40, 60] as const;

// libopus CTL request codes (opus_defines.h); the binding only exposes the raw numbers.
const OPUS_SET_APPLICATION = 4000;
const OPUS_APPLICATION_VOIP = 2048;
const OPUS_SET_COMPLEXITY = 4010;
const OPUS_SET_INBAND_FEC = 4012;
const OPUS_SET_PACKET_LOSS_PERC = 4014;
const OPUS_SET_SIGNAL = 4024;
const OPUS_SIGNAL_VOICE = 3001;

/** A packet libopus rejected. Callers catch this per packet and carry on (e.g. conceal()). */
export class OpusDecodeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OpusDecodeError';
  }
}

export class OpusEncodeError extends Error {
  constructor(message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'OpusEncodeError';
  }
}

function assertRate(rate: number): asserts rate is OpusSampleRate {
  if (!SUPPORTED_RATES.includes(rate)) {
    throw new RangeError(`Opus: sample rate must be 16000 or 48000, got ${rate}`);
  }
}

/** View the binding's PCM16LE Buffer as samples (copying only if it is misaligned). */
function bufferToInt16(buf: Buffer): Int16Array {
  if (buf.byteOffset % 2 === 0) return new Int16Array(buf.buffer, buf.byteOffset, buf.length >> 1);
  const copy = new Uint8Array(buf);
  return new Int16Array(copy.buffer, 0, copy.length >> 1);
}

export class OpusDecoder {
  readonly sampleRate: OpusSampleRate;
  private readonly codec: opus.OpusEncoder;

  /** Any Opus packet decodes at either rate: libopus resamples internally, whatever the sender used. */
  constructor(sampleRate: OpusSampleRate = 48_000) {
    assertRate(sampleRate);
    this.sampleRate = sampleRate;
    this.codec = new opus.OpusEncoder(sampleRate, 1);
  }

  /** Decode one packet to PCM16 at `sampleRate`. Throws OpusDecodeError on a corrupt packet. */
  decode(packet: Uint8Array): Int16Array {
    if (packet.length === 0) {
      // The binding would silently run PLC for 120 ms+; make that an explicit choice.
      throw new OpusDecodeError('Opus: empty packet (use conceal() for a lost packet)');
    }
    const input = Buffer.isBuffer(packet) ? packet : Buffer.from(packet.buffer, packet.byteOffset, packet.byteLength);
    try {
      return bufferToInt16(this.codec.decode(input));
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new OpusDecodeError(`Opus: cannot decode ${packet.length}-byte packet: ${msg}`, { cause: err });
    }
  }

  /**
   * Packet loss concealment for one missing packet: `durationMs` of audio extrapolated from the
   * decoder state. The binding can only conceal its maximum frame (120 ms at 48 kHz, 360 ms at
   * 16 kHz) at once, so the first `durationMs` is kept; the decoder's state has moved further on,
   * which only makes the fade-out of a longer gap come a little early.
   */
  conceal(durationMs = 20): Int16Array {
    const samples = Math.round((durationMs * this.sampleRate) / 1000);
    try {
      const plc = bufferToInt16(this.codec.decode(Buffer.alloc(0)));
      return plc.slice(0, Math.min(samples, plc.length));
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new OpusDecodeError(`Opus: concealment failed: ${msg}`, { cause: err });
    }
  }
}

export interface OpusEncoderOptions {
  /** Bits per second. Default 24000: transparent for 16 kHz speech. */
  bitrate?: number;
  /** 0–10. Default 5: about 40 % cheaper than 10 for little audible loss on speech. */
  complexity?: number;
  /** Expected loss in percent; >0 enables in-band FEC for receivers that can use it. Default 0. */
  packetLossPercent?: number;
}

export class OpusEncoder {
  readonly sampleRate: OpusSampleRate;
  private readonly codec: opus.OpusEncoder;
  private readonly legalSizes: readonly number[];

  constructor(sampleRate: OpusSampleRate = 48_000, options: OpusEncoderOptions = {}) {
    assertRate(sampleRate);
    this.sampleRate = sampleRate;
    this.legalSizes = FRAME_DURATIONS_MS.map((ms) => (ms * sampleRate) / 1000);
    this.codec = new opus.OpusEncoder(sampleRate, 1);
    const complexity = options.complexity ?? 5;
    const loss = options.packetLossPercent ?? 0;
    try {
      // Application must be set before the first frame; VOIP favours intelligibility.
      this.codec.applyEncoderCTL(OPUS_SET_APPLICATION, OPUS_APPLICATION_VOIP);
      this.codec.applyEncoderCTL(OPUS_SET_SIGNAL, OPUS_SIGNAL_VOICE);
      this.codec.applyEncoderCTL(OPUS_SET_COMPLEXITY, complexity);
      this.codec.applyEncoderCTL(OPUS_SET_PACKET_LOSS_PERC, loss);
      this.codec.applyEncoderCTL(OPUS_SET_INBAND_FEC, loss > 0 ? 1 : 0);
      this.codec.setBitrate(options.bitrate ?? 24_000);
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new OpusEncodeError(`Opus: invalid encoder options ${JSON.stringify(options)}: ${msg}`, { cause: err });
    }
  }

  /** Samples per packet for a frame of `ms` at this encoder's rate. */
  frameSamples(ms = 20): number {
    return (ms * this.sampleRate) / 1000;
  }

  /** Encode exactly one frame (2.5/5/10/20/40/60 ms of mono PCM16) into one packet. */
  encode(pcm: Int16Array): Uint8Array {
    if (!this.legalSizes.includes(pcm.length)) {
      throw new OpusEncodeError(
        `Opus: ${pcm.length} samples is not an Opus frame at ${this.sampleRate} Hz (legal: ${this.legalSizes.join(', ')})`,
      );
    }
    const input = Buffer.from(pcm.buffer, pcm.byteOffset, pcm.byteLength);
    try {
      return new Uint8Array(this.codec.encode(input));
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      throw new OpusEncodeError(`Opus: encode failed: ${msg}`, { cause: err });
    }
  }
}
