/**
 * Redaction of payment data found in what callers say or type, whatever the agent asked: card numbers
 * (13–19 digits passing the Luhn check, written "4111 1111 …", keyed "DTMF: 4 1 1 1 …" or recognised as
 * spoken words "four one one one …" in the five agent languages) and IBANs (ISO 13616, mod-97 check).
 * A match becomes "****" plus its last four characters, as sensitive slots are masked (masking.ts), so a
 * caller or an agent can still tell which card it was. Checksums keep ordinary numbers (dates, amounts,
 * phone numbers) intact: a random 16-digit run passes Luhn one time in ten.
 */

/**
 * 'digits' (off by default) also hides any run of 13 or more digits whatever its checksum: a card number the
 * recogniser got one digit wrong, or an account number. International phone numbers of 13–15 digits go too.
 */
export type RedactKind = 'card' | 'iban' | 'digits';
export const REDACT_KINDS: readonly RedactKind[] = ['card', 'iban'];

/** Spoken digits in en, fr, de, es, it (lower case, accents kept and stripped). */
const DIGIT_WORDS: Record<string, string> = {};
const WORDS_BY_DIGIT: string[][] = [
  ['zero', 'oh', 'zéro', 'null', 'cero'],
  ['one', 'un', 'une', 'eins', 'ein', 'uno', 'una'],
  ['two', 'deux', 'zwei', 'zwo', 'dos', 'due'],
  ['three', 'trois', 'drei', 'tres', 'tre'],
  ['four', 'quatre', 'vier', 'cuatro', 'quattro'],
  ['five', 'cinq', 'fünf', 'funf', 'cinco', 'cinque'],
  ['six', 'sechs', 'seis', 'sei'],
  ['seven', 'sept', 'sieben', 'siete', 'sette'],
  ['eight', 'huit', 'acht', 'ocho', 'otto'],
  ['nine', 'neuf', 'neun', 'nueve', 'nove'],
];
WORDS_BY_DIGIT.forEach((words, digit) => {
  for (const word of words) DIGIT_WORDS[word] = String(digit);
});

interface Token {
  start: number;
  end: number;
  /** The digits this token stands for ('' for a word that is not a number). */
  digits: string;
}

/** Words, digit groups and the gaps between them; a gap of more than spaces, dashes, dots or commas breaks a number. */
function tokens(text: string): Token[][] {
  const runs: Token[][] = [];
  let run: Token[] = [];
  let lastEnd = 0;
  for (const match of text.matchAll(/[\p{L}\p{N}]+/gu)) {
    const start = match.index ?? 0;
    const word = match[0];
    const lower = word.toLowerCase();
    const digits = /^\d+$/.test(word) ? word : (DIGIT_WORDS[lower] ?? '');
    const gap = text.slice(lastEnd, start);
    if (!digits || (run.length > 0 && !/^[\s.,\-/:]*$/.test(gap))) {
      if (run.length > 0) runs.push(run);
      run = [];
    }
    if (digits) run.push({ start, end: start + word.length, digits });
    lastEnd = start + word.length;
  }
  if (run.length > 0) runs.push(run);
  return runs;
}

export function luhnValid(digits: string): boolean {
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let d = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      d *= 2;
      if (d > 9) d -= 9;
    }
    sum += d;
  }
  return digits.length > 0 && sum % 10 === 0;
}

export function ibanValid(iban: string): boolean {
  const compact = iban.replace(/[\s-]/g, '').toUpperCase();
  if (!/^[A-Z]{2}\d{2}[A-Z0-9]{11,30}$/.test(compact)) return false;
  const rearranged = compact.slice(4) + compact.slice(0, 4);
  let remainder = 0;
  for (const ch of rearranged) {
    const value = /\d/.test(ch) ? ch : String(ch.charCodeAt(0) - 55);
    for (const d of value) remainder = (remainder * 10 + Number(d)) % 97;
  }
  return remainder === 1;
}

interface Span {
  start: number;
  end: number;
  last4: string;
}

/** Card numbers: the longest window of consecutive number tokens holding 13–19 digits that passes Luhn. */
function cardSpans(text: string): Span[] {
  const spans: Span[] = [];
  for (const run of tokens(text)) {
    let i = 0;
    while (i < run.length) {
      let best: { j: number; digits: string } | null = null;
      let digits = '';
      for (let j = i; j < run.length && digits.length < 19; j++) {
        digits += run[j].digits;
        if (digits.length > 19) break;
        if (digits.length >= 13 && luhnValid(digits)) best = { j, digits };
      }
      if (best) {
        spans.push({ start: run[i].start, end: run[best.j].end, last4: best.digits.slice(-4) });
        i = best.j + 1;
      } else {
        i++;
      }
    }
  }
  return spans;
}

/** Any run of 13 or more digits, whole. */
function longDigitSpans(text: string): Span[] {
  return tokens(text)
    .map((run) => ({ run, digits: run.map((t) => t.digits).join('') }))
    .filter(({ digits }) => digits.length >= 13)
    .map(({ run, digits }) => ({ start: run[0].start, end: run[run.length - 1].end, last4: digits.slice(-4) }));
}

function ibanSpans(text: string): Span[] {
  const spans: Span[] = [];
  // Country, check digits, then groups of letters and digits, with or without spaces between groups.
  for (const match of text.matchAll(/\b[A-Za-z]{2}\d{2}(?:[ -]?[A-Za-z0-9]){11,30}\b/g)) {
    // The greedy match may run into the next word: try shorter prefixes ending on a character.
    let candidate = match[0];
    while (candidate.replace(/[\s-]/g, '').length >= 15 && !ibanValid(candidate)) candidate = candidate.slice(0, -1).replace(/[\s-]+$/, '');
    if (ibanValid(candidate)) {
      const compact = candidate.replace(/[\s-]/g, '');
      spans.push({ start: match.index ?? 0, end: (match.index ?? 0) + candidate.length, last4: compact.slice(-4) });
    }
  }
  return spans;
}

/** `text` with card numbers and IBANs (as `kinds` says) replaced by "****1234"; the same string when none. */
export function redact(text: string, kinds: readonly RedactKind[] = REDACT_KINDS): string {
  if (kinds.length === 0 || text.length === 0) return text;
  const spans = [
    ...(kinds.includes('card') ? cardSpans(text) : []),
    ...(kinds.includes('iban') ? ibanSpans(text) : []),
    ...(kinds.includes('digits') ? longDigitSpans(text) : []),
  ].sort((a, b) => a.start - b.start || b.end - a.end);
  if (spans.length === 0) return text;
  let out = '';
  let at = 0;
  for (const span of spans) {
    if (span.start < at) continue; // overlapping matches: the first wins
    out += `${text.slice(at, span.start)}****${span.last4}`;
    at = span.end;
  }
  return out + text.slice(at);
}

/**
 * For words still being recognised (partial transcripts): a number cut mid-way does not pass Luhn yet, so
 * any run of six or more digits beyond its first six (the issuer prefix, which PCI DSS allows shown) is hidden.
 */
export function redactPartial(text: string, kinds: readonly RedactKind[] = REDACT_KINDS): string {
  const full = redact(text, kinds);
  if (!kinds.includes('card') && !kinds.includes('digits')) return full;
  const runs = tokens(full);
  let out = '';
  let at = 0;
  for (const run of runs) {
    const digits = run.map((t) => t.digits).join('');
    if (digits.length <= 6) continue;
    out += `${full.slice(at, run[0].start)}${digits.slice(0, 6)}…`;
    at = run[run.length - 1].end;
  }
  return out + full.slice(at);
}
