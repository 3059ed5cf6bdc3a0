/**
 * Grammar decoders kept ready for a burst of new calls (`grammarSpareDecoders`): each pool fills up to that many after
 * load, a burst of that many calls takes them without a build, and the pool refills once the calls have arrived.
 */
import { existsSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { acousticModel, modelPresent } from '../src/providers/asr/pocketsphinx/grammar.js';
import { DEFAULT_MODEL_DIR, PocketSphinxAsr } from '../src/providers/asr/pocketsphinx/index.js';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { synthesize } from '../loadtest/voices.js';
import { until } from './helpers/until.js';

const englishModel = modelPresent(acousticModel('en', DEFAULT_MODEL_DIR)) && existsSync('/usr/bin/espeak-ng');
const SPARES = 3;

describe.skipIf(!englishModel)('grammar decoders kept ready for new calls', () => {
  const asr = new PocketSphinxAsr({ spareDecoders: 1, grammarSpareDecoders: SPARES, lazyGenericLm: true, grammar: { languages: ['en'] } });
  afterAll(() => asr.close());

  it('fills every grammar pool to grammarSpareDecoders, hands a burst that many at once, and refills', async () => {
    const agent = new RuleBasedAgent();
    await agent.load();
    await asr.setGrammars(agent.grammarSpecs().filter((s) => s.language === 'en'));
    // Both searches, wideband and narrowband: one ready at load, the rest built once no call has arrived for a while.
    await until('every pool holding its spares', () => asr.grammarPoolStats.length === 4 && asr.grammarPoolStats.every((p) => p.idle === SPARES), 20_000);

    const streams = Array.from({ length: SPARES }, () => asr.createStream({ language: 'en', languageFixed: true }));
    try {
      // Each call leased its two wideband decoders on the spot: no call is left waiting for a build.
      const wideband = asr.grammarPoolStats.filter((p) => p.band === 'wideband');
      expect(wideband.map((p) => [p.search, p.idle, p.leased])).toEqual([['grammar', 0, SPARES], ['phone-loop', 0, SPARES]]);
      const pcm = await synthesize('what time is it', { id: 'espeak:en-us', engine: 'espeak', language: 'en', voice: 'en-us' });
      const frame = INTERNAL_SAMPLE_RATE / 50;
      const finals = await Promise.all(streams.map((stream) => {
        for (let i = 0; i < pcm.length; i += frame) stream.push(pcm.subarray(i, i + frame));
        return stream.finalize();
      }));
      expect(finals.map((f) => f.text)).toEqual(Array.from({ length: SPARES }, () => 'what time is it'));
    } finally {
      for (const stream of streams) stream.close();
    }
    // The calls handed their decoders back: the pools hold their spares again, and keep no more than that.
    await until('the decoders handed back', () => asr.grammarPoolStats.every((p) => p.leased === 0 && p.idle === SPARES), 20_000);
  }, 60_000);
});
