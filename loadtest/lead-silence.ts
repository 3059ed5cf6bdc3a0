/**
 * How the grammar recogniser's verdict on the same words moves with the silence around them: the sentences are
 * synthesized once per voice, then decoded with each LEAD/TRAIL (ms of silence before and after), 16 kHz and through
 * the phone channel. The recogniser's confidence is a likelihood ratio per frame, silence included, so the pre-roll
 * and the endpoint are part of its calibration (BENCHMARKS.md, "A soft first word").
 *
 *   npx tsx loadtest/lead-silence.ts [--set off-topic|in-domain] [--pads 160/120,360/120,300/300] [--gate 0.7] [--trace]
 *
 * Prints one JSON object: per pad, how many were heard as a sentence of a grammar, how many as an intent at the gate,
 * and their mean confidence.
 */
import { parseArgs } from 'node:util';
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { PocketSphinxAsr } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrFinal } from '../src/providers/asr/types.js';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { phoneChannel, synthesize, voicesFor } from './voices.js';

const { values } = parseArgs({
  options: {
    set: { type: 'string', default: 'off-topic' },
    pads: { type: 'string', default: '160/120,360/120,160/300,300/300' },
    gate: { type: 'string', default: '0.7' },
    trace: { type: 'boolean', default: false },
  },
});
const SETS: Record<string, string[]> = {
  'off-topic': ['the weather in the mountains was lovely last summer', 'i am looking for the train station near the old bridge',
    'could you explain the theory of relativity in simple words', 'my car broke down on the motorway yesterday',
    'i think the football match was cancelled', 'please send the invoice to my accountant', 'the children are playing in the garden',
    'which train goes to the airport', 'i lost my keys somewhere in the kitchen', 'the meeting moved to next thursday',
    'how much does a new laptop cost', 'my sister lives in another city', 'turn left after the bridge'],
  'in-domain': ['what time is it', 'book a table for two tomorrow at eight', 'when are you open', 'that is all thank you',
    'can i speak to a person please', 'yes please', 'no thanks'],
};
const texts = SETS[values.set];
if (!texts) throw new Error(`--set must be one of ${Object.keys(SETS).join(', ')}`);
const pads = values.pads.split(',').map((p) => p.split('/').map(Number) as [number, number]);
const gate = Number(values.gate);

const agent = new RuleBasedAgent({});
await agent.load();
const asr = new PocketSphinxAsr({ spareDecoders: 1, maxIdleDecoders: 2, grammar: { narrowband: true } });
await asr.setGrammars(agent.grammarSpecs().filter((s) => ['en', 'es'].includes(s.language)));

async function decode(pcm: Int16Array, sourceSampleRate: number): Promise<AsrFinal> {
  const stream = asr.createStream({ language: 'en', sourceSampleRate });
  try {
    for (let i = 0; i < pcm.length; i += 320) stream.push(pcm.subarray(i, i + 320));
    return await stream.finalize();
  } finally {
    stream.close();
  }
}

const tallies = pads.map(() => ({ n: 0, inGrammar: 0, atGate: 0, confidence: 0 }));
for (const voice of voicesFor('en')) {
  for (const text of texts) {
    const words = await synthesize(text, voice, 0);
    for (const [p, [lead, trail]] of pads.entries()) {
      const padded = new Int16Array(words.length + ((lead + trail) * INTERNAL_SAMPLE_RATE) / 1000);
      padded.set(words, (lead * INTERNAL_SAMPLE_RATE) / 1000);
      for (const [channel, pcm, rate] of [['16k', padded, 16000], ['phone', await phoneChannel(padded), 8000]] as const) {
        const final = await decode(pcm, rate);
        const t = tallies[p];
        t.n++;
        if (!final.inGrammar) continue;
        t.inGrammar++;
        t.confidence += final.confidence ?? 0;
        if (agent.classify(final.text, final.language) && (final.confidence ?? 0) >= gate) t.atGate++;
        if (values.trace) console.error(`${voice.id} ${channel} ${lead}/${trail} ${JSON.stringify(text)} → ${JSON.stringify(final.text)} @${(final.confidence ?? 0).toFixed(2)}`);
      }
    }
  }
}
await asr.close();
console.log(JSON.stringify({
  set: values.set, gate,
  pads: Object.fromEntries(pads.map(([lead, trail], p) => {
    const t = tallies[p];
    return [`${lead}/${trail}`, { n: t.n, inGrammar: t.inGrammar, intentAtGate: t.atGate, meanConfidence: t.inGrammar ? Math.round((1000 * t.confidence) / t.inGrammar) / 1000 : null }];
  })),
}, null, 2));
process.exit(0);
