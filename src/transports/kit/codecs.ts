/**
 * A call's wire codecs: one decoder (wire → internal 16 kHz PCM16) and one encoder (back), rebuilt when the
 * client changes its formats. A rebuild is all or nothing (a half-built pair never decodes a frame), and
 * `close()` frees whatever exists, also a pair that finished building after the call ended.
 */
import { createInboundDecoder, createOutboundEncoder, type CodecSpec, type InboundDecoder, type OutboundEncoder } from '../../audio/codec.js';

export class EdgeCodecs {
  private decoder: InboundDecoder | null = null;
  private encoder: OutboundEncoder | null = null;
  private closed = false;

  /** Build (or rebuild) the pair; throws CodecSpecError for a codec/rate this service does not speak. */
  async use(input: CodecSpec, output: CodecSpec): Promise<void> {
    const decoder = await createInboundDecoder(input);
    let encoder: OutboundEncoder;
    try {
      encoder = await createOutboundEncoder(output);
    } catch (err) {
      decoder.close();
      throw err;
    }
    if (this.closed) {
      decoder.close();
      encoder.close();
      return;
    }
    this.decoder?.close();
    this.encoder?.close();
    this.decoder = decoder;
    this.encoder = encoder;
  }

  get ready(): boolean {
    return this.decoder !== null && this.encoder !== null;
  }

  get input(): CodecSpec | null {
    return this.decoder?.spec ?? null;
  }

  get output(): CodecSpec | null {
    return this.encoder?.spec ?? null;
  }

  /** One wire payload → internal PCM (any length; a Framer cuts frames). Throws on an undecodable payload. */
  decode(payload: Uint8Array): Int16Array {
    if (!this.decoder) throw new Error('codecs are not built');
    return this.decoder.decode(payload);
  }

  /** Internal PCM (one 20 ms frame) → one wire payload. */
  encode(samples: Int16Array): Uint8Array {
    if (!this.encoder) throw new Error('codecs are not built');
    return this.encoder.encode(samples);
  }

  close(): void {
    this.closed = true;
    this.decoder?.close();
    this.encoder?.close();
    this.decoder = null;
    this.encoder = null;
  }
}
