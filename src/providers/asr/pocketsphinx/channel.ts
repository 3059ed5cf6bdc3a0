/**
 * Channel-matched front end for telephone audio. A phone line carries nothing above ~3.4 kHz; resampled to the
 * internal 16 kHz it leaves the upper mel filters of a wideband model empty, which moves the cepstral mean far
 * from the model's wideband `-cmninit`. PocketSphinx's live CMN starts each decoder from that initial mean and
 * only adapts at utterance ends, so the first utterances of every phone call were decoded with the wrong mean
 * (measured: "i would like to book a table for two" → "what do you do"; "tomorrow" → "go ahead"). Decoders for
 * narrowband calls therefore start from a narrowband mean instead.
 *
 * This version of the library lets the model's feat.params override a `-cmninit` given on the command line, so
 * the narrowband variant is a directory of links to the model's files with its own feat.params.
 */
import { readdir, readFile, symlink, writeFile, mkdir } from 'node:fs/promises';
import path from 'node:path';

/**
 * Cepstral mean (c0..c12) of 8 kHz telephone speech (G.711 µ-law, resampled to 16 kHz) under the front end
 * `-lowerf 130 -upperf 6800 -nfilt 25 -transform dct -lifter 22`, as PocketSphinx's live CMN converged on it over
 * 33 utterances from seven synthetic voices of two engines (flite, eSpeak NG). The channel, not the speaker or
 * the language, dominates it: the same voices at 16 kHz give 51.4 3.8 8.2 20.6 …
 */
export const NARROWBAND_CMN_INIT = [46.12, 28.29, -26.19, 49.52, -19.97, 0.25, 14.49, -25.59, 17.39, -10.02, 5.36, 14.08, -8.64];

/** The front end NARROWBAND_CMN_INIT was measured with; other models get no narrowband variant. */
const MEASURED_FRONT_END: Record<string, string> = { '-lowerf': '130', '-upperf': '6800', '-nfilt': '25', '-transform': 'dct', '-lifter': '22' };

/** Audio that came in at this rate is narrowband (a phone line: 8 kHz sampling, ≤ 4 kHz of signal). */
export function isNarrowband(sourceSampleRate: number | undefined): boolean {
  return sourceSampleRate !== undefined && sourceSampleRate <= 8000;
}

/**
 * Writes a narrowband variant of the acoustic model in `hmm` under `dir` (links to its files, and a feat.params
 * whose -cmninit is the narrowband mean) and returns its path; undefined when the model's front end is not the
 * one the narrowband mean was measured with.
 */
export async function narrowbandModel(hmm: string, dir: string): Promise<string | undefined> {
  const params = await readFile(path.join(hmm, 'feat.params'), 'utf8');
  const values = new Map<string, string>();
  for (const line of params.split('\n')) {
    const [flag, value] = line.trim().split(/\s+/, 2);
    if (flag?.startsWith('-') && value !== undefined) values.set(flag, value);
  }
  for (const [flag, value] of Object.entries(MEASURED_FRONT_END)) if (values.get(flag) !== value) return undefined;
  values.set('-cmninit', NARROWBAND_CMN_INIT.map((v) => v.toFixed(2)).join(','));
  const out = path.join(dir, `${path.basename(hmm)}-narrowband`);
  await mkdir(out, { recursive: true });
  for (const name of await readdir(hmm)) {
    if (name !== 'feat.params') await symlink(path.resolve(hmm, name), path.join(out, name));
  }
  await writeFile(path.join(out, 'feat.params'), [...values].map(([flag, value]) => `${flag} ${value}`).join('\n') + '\n');
  return out;
}
