/**
 * Masking of sensitive caller turns (card numbers, PINs, dates of birth): what transcripts, events, call
 * records, logs and model backends see instead of the words.
 */
import { maskValue } from './tools.js';
import type { InputMeta } from './types.js';

/** "my pin is 1 2 3 4" → "****"; a long number keeps its last four digits ("****5678") so the caller can tell it. */
export function maskSecret(text: string): string {
  return maskValue(text);
}

/** A sensitive answer is never repeated back, not even a doubtful hearing of it: its input without `heardAs`. */
export function withoutHeardAs(input: InputMeta): InputMeta {
  const { heardAs: _doubtful, ...kept } = input;
  return kept;
}
