/**
 * A grammar decoder's running hypothesis as the turn detector hears it: the words, and whether they end a sentence.
 * With a garbage loop (`grammar.garbageWeight`) the same words can go from "garbage still after them" to a whole
 * sentence; the partial must be sent again then, or the detector keeps waiting the incomplete endpoint.
 */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG } from '../src/config.js';
import { GARBAGE_PREFIX, compileGrammar, loadDictionary } from '../src/providers/asr/grammar/compile.js';
import type { GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import { DEFAULT_MODEL_DIR, partialFromHypothesis, samePartial } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrPartial } from '../src/providers/asr/types.js';
import { TurnDetector } from '../src/session/turn-detector.js';

const EN_DICT = path.join(DEFAULT_MODEL_DIR, 'cmudict-en-us.dict');

const spec: GrammarSpec = {
  language: 'en',
  sentences: ['what time is it', 'a table for {party_size}', 'a table for {party_size} at {time}'],
  slots: { party_size: ['two', 'three'], time: ['eight', 'nine'] },
  expectations: {},
};

/** What the decoder stream sends for a run of hypotheses: each one unless it tells the same as the last one sent. */
function sent(hypotheses: string[], grammar: Parameters<typeof partialFromHypothesis>[2]): AsrPartial[] {
  const out: AsrPartial[] = [];
  let last: AsrPartial | undefined;
  for (const h of hypotheses) {
    const p = partialFromHypothesis(h, 'en', grammar);
    if (p === undefined || samePartial(p, last)) continue;
    last = p;
    out.push(p);
  }
  return out;
}

describe('partial verdicts of a grammar decoder', () => {
  it.skipIf(!existsSync(EN_DICT))('sends the same words again when garbage after them goes away, and the detector stops waiting', async () => {
    const grammar = await compileGrammar(spec, await loadDictionary(EN_DICT), { garbageWeight: 0.05 });
    const g1 = `${GARBAGE_PREFIX}ah`;
    const partials = sent(['what time', 'what time', `what time is it ${g1}`, `what time is it ${g1}`, 'what time is it', 'what time is it'], grammar);
    expect(partials.map((p) => [p.text, p.complete])).toEqual([
      ['what time', false],
      ['what time is it', false],
      ['what time is it', true],
    ]);

    const detector = new TurnDetector(DEFAULT_CONFIG.turn);
    for (const p of partials.slice(0, 2)) detector.setComplete(p.complete, p.continuable);
    expect(detector.sentenceIncomplete).toBe(true);
    detector.setComplete(partials[2].complete, partials[2].continuable);
    expect(detector.sentenceIncomplete).toBe(false);
  });

  it.skipIf(!existsSync(EN_DICT))('tells a whole sentence that can go on from one that cannot, and a prefix from both', async () => {
    const grammar = await compileGrammar(spec, await loadDictionary(EN_DICT));
    expect(partialFromHypothesis('a table for', 'en', grammar)).toEqual({ text: 'a table for', language: 'en', complete: false });
    expect(partialFromHypothesis(' a table for two ', 'en', grammar)).toEqual({ text: 'a table for two', language: 'en', complete: true, continuable: true });
    expect(partialFromHypothesis('a table for two at nine', 'en', grammar)).toEqual({ text: 'a table for two at nine', language: 'en', complete: true, continuable: false });
    // Fillers and silences are not words; nothing else heard is no partial.
    expect(partialFromHypothesis('<sil> [NOISE]', 'en', grammar)).toBeUndefined();
    expect(sent(['a table for two', 'a table for two at', 'a table for two at nine'], grammar).map((p) => p.continuable)).toEqual([true, undefined, false]);
  });

  it('passes an open-vocabulary hypothesis through with no verdict', () => {
    expect(partialFromHypothesis('  hello there ', 'en', undefined)).toEqual({ text: 'hello there', language: 'en' });
    expect(partialFromHypothesis('   ', 'en', undefined)).toBeUndefined();
    expect(samePartial({ text: 'hello', language: 'en' }, { text: 'hello', language: 'en' })).toBe(true);
  });
});
