import { DEFAULT_LEXICON, yesNo } from '../providers/llm/rules/lexicon.js';
import { words } from '../providers/llm/rules/values.js';

/**
 * Whether the caller's first turn after the consent line refuses the recording: a "no" in any agent language
 * ("no", "non", "nein"…), a request not to record ("don't record me", "ne pas enregistrer"), or 9 on the keypad
 * (the consent line says so). Anything else, silence included, lets the recording go on (opt-out consent, as
 * the consent line announces it); docs/compliance.md says when opt-in is needed instead.
 */
export function refusesRecording(text: string, language: string): boolean {
  if (/^DTMF:\s*9$/.test(text.trim())) return true;
  const ws = words(text);
  if (yesNo(ws, language, DEFAULT_LEXICON) === 'no') return true;
  return /\b(record|enregistr|aufnehm|aufzeichn|grab|registr)/i.test(text) && /\b(no|not|don'?t|ne|pas|nicht|kein|non)\b/i.test(text);
}
