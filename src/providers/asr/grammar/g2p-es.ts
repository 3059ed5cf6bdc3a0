/**
 * Rule-based Spanish grapheme-to-phoneme for words missing from the model's dictionary.
 * Spanish spelling is close to phonemic, so a handful of context rules give the CMU Sphinx Spanish
 * model's phones (Castilian: c/z before e/i → "z"; "x" is /ks/ as a single model phone).
 * Phone set of cmusphinx-es-5.2: a b ch d e f g gn i j k l ll m n o p r rr s t u x y z.
 */
const VOWELS = new Set(['a', 'e', 'i', 'o', 'u']);

/** Strips accents except ñ (kept as its own letter) and ü (meaningful after g). */
function normalise(word: string): string {
  return word
    .toLowerCase()
    .replace(/ñ/g, '\u0001')
    .replace(/ü/g, '\u0002')
    .normalize('NFD')
    .replace(/\p{M}+/gu, '')
    .replace(/\u0001/g, 'ñ')
    .replace(/\u0002/g, 'ü');
}

/** Phones for one Spanish word, or undefined when it has letters the rules do not know. */
export function spanishG2p(word: string): string[] | undefined {
  const w = normalise(word);
  if (!/^[a-zñü]+$/.test(w)) return undefined;
  const out: string[] = [];
  for (let i = 0; i < w.length; i++) {
    const c = w[i];
    const next = w[i + 1] ?? '';
    const prev = i > 0 ? w[i - 1] : '';
    const frontVowel = next === 'e' || next === 'i';
    switch (c) {
      case 'a': case 'e': case 'i': case 'o': case 'u':
        out.push(c);
        break;
      case 'ü':
        out.push('u');
        break;
      case 'c':
        if (next === 'h') {
          out.push('ch');
          i++;
        } else out.push(frontVowel ? 'z' : 'k');
        break;
      case 'q':
        out.push('k');
        // "que", "qui": the u is silent.
        if (next === 'u') i++;
        break;
      case 'g':
        if (frontVowel) out.push('j');
        else {
          out.push('g');
          // "gue", "gui": silent u.
          if (next === 'u' && (w[i + 2] === 'e' || w[i + 2] === 'i')) i++;
        }
        break;
      case 'l':
        if (next === 'l') {
          out.push('ll');
          i++;
        } else out.push('l');
        break;
      case 'r':
        if (next === 'r') {
          out.push('rr');
          i++;
        } else out.push(i === 0 || prev === 'l' || prev === 'n' || prev === 's' ? 'rr' : 'r');
        break;
      case 'h':
        break; // silent
      case 'ñ':
        out.push('gn');
        break;
      case 'v':
        out.push('b');
        break;
      case 'w':
        out.push('u');
        break;
      case 'y':
        // Consonant before a vowel, the vowel /i/ elsewhere ("hoy", "y").
        out.push(VOWELS.has(next) ? 'y' : 'i');
        break;
      case 'z':
        out.push('z');
        break;
      case 'k': case 'b': case 'd': case 'f': case 'j': case 'm': case 'n': case 'p': case 's': case 't': case 'x':
        out.push(c);
        break;
      default:
        return undefined;
    }
  }
  return out.length > 0 ? out : undefined;
}

/**
 * The same words as most Spanish speakers say them. The model's dictionary (and `spanishG2p`) spells Castilian
 * "distinción" (c/z before e/i → "z", /θ/) and keeps "ll" apart from "y"; in the Americas and the Canaries c/z
 * is "s" (seseo), and almost everywhere "ll" is said as "y" (yeísmo). Each pronunciation gains those readings,
 * alone and together, so a caller from Bogotá or Madrid is heard against their own sounds.
 */
export function spanishDialectVariants(pronunciations: readonly (readonly string[])[]): string[][] {
  const out: string[][] = [];
  const seen = new Set<string>();
  const add = (phones: string[]): void => {
    const key = phones.join(' ');
    if (seen.has(key)) return;
    seen.add(key);
    out.push(phones);
  };
  for (const p of pronunciations) add([...p]);
  for (const p of pronunciations) {
    const yeismo = p.map((ph) => (ph === 'll' ? 'y' : ph));
    const seseo = p.map((ph) => (ph === 'z' ? 's' : ph));
    add(yeismo);
    add(seseo);
    add(seseo.map((ph) => (ph === 'll' ? 'y' : ph)));
  }
  return out;
}
