/**
 * Masking of sensitive caller turns (card numbers, PINs, dates of birth): what transcripts, events, call
 * records, logs and model backends see instead of the words.
 */
import { maskValue } from './tools.js';

/** "my pin is 1 2 3 4" → "****"; a long number keeps its last four digits ("****5678") so the caller can tell it. */
export function maskSecret(text: string): string {
  return maskValue(text);
}
