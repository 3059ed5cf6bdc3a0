/**
 * G.711 µ-law (PCMU) and A-law (PCMA): one byte per sample, 8 kHz in telephony.
 * The companding itself is alawmulaw's; these wrappers only pin the types at our edge.
 */
import alawmulaw from 'alawmulaw';

/** PCM16 → µ-law bytes. */
export function encodeMulaw(pcm: Int16Array): Uint8Array {
  return alawmulaw.mulaw.encode(pcm);
}

/** µ-law bytes → PCM16. */
export function decodeMulaw(bytes: Uint8Array): Int16Array {
  return alawmulaw.mulaw.decode(bytes);
}

/** PCM16 → A-law bytes. */
export function encodeAlaw(pcm: Int16Array): Uint8Array {
  return alawmulaw.alaw.encode(pcm);
}

/** A-law bytes → PCM16. */
export function decodeAlaw(bytes: Uint8Array): Int16Array {
  return alawmulaw.alaw.decode(bytes);
}
