import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { parseClientMessage, ProtocolError } from '../src/transports/client-messages.js';
import { createInboundDecoder, validateCodecSpec, CodecSpecError } from '../src/audio/codec.js';
import { parseWav, WavFormatError, encodeWav } from '../src/audio/wav.js';
import { OpusDecodeError } from '../src/audio/opus.js';

/** Every parser that reads bytes from the network either returns a value or throws its own typed error. */
describe('fuzzing the network-facing parsers', () => {
  it('device control messages: arbitrary text and JSON never escape as anything but ProtocolError', () => {
    const jsonish = fc.oneof(
      fc.string(),
      fc.json(),
      fc.record({ type: fc.constantFrom('session.update', 'input.commit', 'input.text', 'input.dtmf', 'ping', 'response.cancel', 'x'), audio: fc.anything(), text: fc.anything(), digit: fc.anything(), language: fc.anything(), id: fc.anything() }).map((o) => JSON.stringify(o)),
    );
    fc.assert(
      fc.property(jsonish, (text) => {
        try {
          const message = parseClientMessage(text);
          expect(typeof message.type).toBe('string');
        } catch (err) {
          expect(err).toBeInstanceOf(ProtocolError);
        }
      }),
      { numRuns: 2000 },
    );
  });

  it('codec specs from clients: only CodecSpecError for bad ones', () => {
    fc.assert(
      fc.property(fc.anything(), (spec) => {
        try {
          validateCodecSpec(spec);
        } catch (err) {
          expect(err).toBeInstanceOf(CodecSpecError);
        }
      }),
      { numRuns: 1000 },
    );
  });

  it('inbound audio decoders: random payloads decode or throw a decode error, never crash', async () => {
    const decoders = await Promise.all(
      [
        { codec: 'pcm16', sampleRate: 16000 },
        { codec: 'pcm16', sampleRate: 48000 },
        { codec: 'pcmu', sampleRate: 8000 },
        { codec: 'pcma', sampleRate: 8000 },
        { codec: 'opus', sampleRate: 48000 },
      ].map((spec) => createInboundDecoder(validateCodecSpec(spec))),
    );
    fc.assert(
      fc.property(fc.integer({ min: 0, max: decoders.length - 1 }), fc.uint8Array({ maxLength: 2000 }), (which, payload) => {
        try {
          const pcm = decoders[which].decode(payload);
          expect(pcm).toBeInstanceOf(Int16Array);
        } catch (err) {
          expect(err).toBeInstanceOf(OpusDecodeError);
        }
      }),
      { numRuns: 1500 },
    );
    for (const decoder of decoders) decoder.close();
  });

  it('WAV files: random and corrupted files parse or throw WavFormatError', () => {
    const valid = encodeWav(new Int16Array(800).map((_, i) => Math.round(Math.sin(i / 5) * 8000)), 16000);
    const corrupted = fc.tuple(fc.integer({ min: 0, max: valid.length - 1 }), fc.integer({ min: 0, max: 255 }), fc.integer({ min: 0, max: valid.length })).map(([at, byte, cut]) => {
      const copy = valid.slice(0, Math.max(cut, 1));
      if (at < copy.length) copy[at] = byte;
      return copy;
    });
    fc.assert(
      fc.property(fc.oneof(fc.uint8Array({ maxLength: 512 }), corrupted), (bytes) => {
        try {
          const wav = parseWav(bytes);
          expect(wav.samples).toBeInstanceOf(Int16Array);
        } catch (err) {
          expect(err).toBeInstanceOf(WavFormatError);
        }
      }),
      { numRuns: 2000 },
    );
  });
});
