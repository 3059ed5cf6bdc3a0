/**
 * Grammar decoding: GrammarSpecs compiled to JSGF + a small dictionary, decoded by PocketSphinx on real
 * synthetic speech (eSpeak NG; SVOX Pico / festival / flite when present), English always (Debian model),
 * Spanish when ../shared/models/pocketsphinx-es (or POCKETSPHINX_ES_DIR) has its model.
 */
import { SentenceMatcher } from '../src/providers/asr/grammar/sentence-matcher.js';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { FRAME_MS, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { concatPcm } from '../src/audio/framer.js';
import { DEFAULT_CONFIG } from '../src/config.js';
import { TurnDetector } from '../src/session/turn-detector.js';
import { compileGrammar, loadDictionary, parseDictionary, sentenceWords } from '../src/providers/asr/grammar/compile.js';
import { grammarSource } from '../src/providers/asr/grammar/from-rules.js';
import { spanishDialectVariants, spanishG2p } from '../src/providers/asr/grammar/g2p-es.js';
import type { GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import { acousticModel, chooseLanguage, DEFAULT_FOCUS_CONFIDENCE, DEFAULT_SPANISH_MODEL_DIR, GrammarStream, LanguageBelief, modelPresent, sentenceConfidence } from '../src/providers/asr/pocketsphinx/grammar.js';
import { DEFAULT_MODEL_DIR, PocketSphinxAsr } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrFinal, AsrPartial, AsrStream } from '../src/providers/asr/types.js';
import { ScriptedLlm } from '../src/providers/llm/scripted.js';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { phoneChannel, synthesize, voicesFor, type Voice } from '../loadtest/voices.js';
import { colouredNoise, melody } from '../loadtest/sounds.js';
import { seededRandom } from '../loadtest/random.js';

const EN_DICT = `${DEFAULT_MODEL_DIR}/cmudict-en-us.dict`;
const englishModel = modelPresent(acousticModel('en', DEFAULT_MODEL_DIR)) && existsSync('/usr/bin/espeak-ng');
const esDir = process.env.POCKETSPHINX_ES_DIR ?? DEFAULT_SPANISH_MODEL_DIR;
const spanishModel = modelPresent(acousticModel('es', esDir));
const SPANISH_SKIP = `Spanish model not present at ${esDir} (set POCKETSPHINX_ES_DIR or provide ../shared/models/pocketsphinx-es)`;

/** Best voice here for a language: Pico when its files exist (closest to a person), else eSpeak. */
function voice(language: string): Voice {
  const all = voicesFor(language);
  return all.find((v) => v.engine === 'pico') ?? all[0];
}

/** The grammars the service compiles: the rules agent's own grammarSpecs() (config/agent-rules.json). */
async function agentSpecs(languages?: readonly string[]): Promise<GrammarSpec[]> {
  const agent = new RuleBasedAgent();
  await agent.load();
  return agent.grammarSpecs().filter((s) => !languages || languages.includes(s.language));
}

async function decode(stream: AsrStream, pcm: Int16Array): Promise<AsrFinal> {
  const frame = INTERNAL_SAMPLE_RATE / 50;
  for (let i = 0; i < pcm.length; i += frame) stream.push(pcm.subarray(i, i + frame));
  return stream.finalize();
}

/** The same, with the decoders caught up every 100 ms, as a call's are: partials come while the caller speaks. */
async function decodePaced(stream: GrammarStream, pcm: Int16Array): Promise<AsrFinal> {
  const frame = INTERNAL_SAMPLE_RATE / 50;
  for (let i = 0, n = 1; i < pcm.length; i += frame, n++) {
    stream.push(pcm.subarray(i, i + frame));
    if (n % 5 === 0) await stream.idle();
  }
  return stream.finalize();
}

const small: GrammarSpec = {
  language: 'en',
  sentences: ['what time is it', 'a table for {party_size} at {time}', '{party_size} people', 'that s all', 'zzyzxq blorft'],
  slots: { party_size: ['two', 'three', 'four'], time: ['eight', 'eight pm', 'half past seven'] },
  expectations: { 'book.party_size': ['{party_size} people'] },
};

describe('grammar compiler', () => {
  it.skipIf(!existsSync(EN_DICT))('expands slots, joins clitics, drops sentences with unknown English words, and matches whole sentences', async () => {
    const g = await compileGrammar(small, await loadDictionary(EN_DICT));
    expect(g.jsgf).toMatch(/<slot_time> = eight \| \(eight pm\) \| \(half past seven\);/);
    expect(g.jsgf).toContain("that's all");
    expect(g.dropped).toEqual(['zzyzxq blorft']);
    expect(g.missing).toEqual([{ word: 'zzyzxq', resolution: 'dropped' }]);
    // Only the grammar's words (and the garbage phones), not 130k entries.
    const words = g.dict.trim().split('\n').map((l) => l.split(' ')[0]);
    expect(words).toContain('half');
    expect(new Set(words.map((w) => w.replace(/\(\d+\)$/, ''))).size).toBeLessThan(20);
    expect(g.isComplete('a table for four at half past seven')).toBe(true);
    expect(g.isComplete('a table for four at')).toBe(false);
    expect(g.isComplete('a table for')).toBe(false);
    expect(g.isComplete('four people')).toBe(true);
    expect(g.expectationJsgf['book.party_size']).toMatch(/\/20\/ <s2>/);
    expect(sentenceWords('gbg_ah what time gbg_t is it <sil>')).toEqual(['what', 'time', 'is', 'it']);
  });

  it('tells a whole sentence that can go on with more values from one that cannot, and from a strict prefix', () => {
    const parse = (t: string) => t.split(' ').map((w) => (w.startsWith('{') ? { slot: w.slice(1, -1) } : { word: w }));
    const m = new SentenceMatcher(
      ['a table for {party_size}', 'a table for {party_size} at {time}', 'goodbye', 'goodbye see you', '{time}'].map(parse),
      new Map([['party_size', [['two'], ['four']]], ['time', [['eight'], ['eight', 'pm'], ['half', 'past', 'seven']]]]),
    );
    expect(m.standing('a table for')).toBe('prefix');
    expect(m.standing('a table for two')).toBe('continuable'); // "… at eight" may follow
    expect(m.standing('a table for two at')).toBe('prefix');
    expect(m.standing('a table for two at eight')).toBe('continuable'); // "eight pm"
    expect(m.standing('a table for two at eight pm')).toBe('complete');
    expect(m.standing('a table for two at half past')).toBe('prefix');
    expect(m.standing('a table for two at half past seven')).toBe('complete');
    // Only words that add no value may follow: ending there loses nothing.
    expect(m.standing('goodbye')).toBe('complete');
    expect(m.standing('half past seven')).toBe('complete');
    expect(m.standing('a table for six')).toBe('none');
    expect(m.standing('')).toBe('none');
  });

  it('derives Spanish pronunciations by rule', () => {
    expect(spanishG2p('adiós')).toEqual(['a', 'd', 'i', 'o', 's']);
    expect(spanishG2p('reservar')).toEqual(['rr', 'e', 's', 'e', 'r', 'b', 'a', 'r']);
    expect(spanishG2p('guerra')).toEqual(['g', 'e', 'rr', 'a']);
    expect(spanishG2p('quisiera')).toEqual(['k', 'i', 's', 'i', 'e', 'r', 'a']);
    expect(spanishG2p('llamo')).toEqual(['ll', 'a', 'm', 'o']);
    expect(spanishG2p('mañana')).toEqual(['m', 'a', 'gn', 'a', 'n', 'a']);
    expect(spanishG2p('cerveza')).toEqual(['z', 'e', 'r', 'b', 'e', 'z', 'a']);
    expect(spanishG2p('hoy')).toEqual(['o', 'i']);
    expect(spanishG2p('agente')).toEqual(['a', 'j', 'e', 'n', 't', 'e']);
    expect(spanishG2p('pingüino')).toEqual(['p', 'i', 'n', 'g', 'u', 'i', 'n', 'o']);
    expect(spanishG2p('x-ray')).toBeUndefined();
  });

  it('adds the seseo and yeísmo readings of a Spanish word, once each, the dictionary\'s first', () => {
    expect(spanishDialectVariants([['z', 'i', 'n', 'k', 'o']])).toEqual([['z', 'i', 'n', 'k', 'o'], ['s', 'i', 'n', 'k', 'o']]);
    expect(spanishDialectVariants([['ll', 'a', 'm', 'o']])).toEqual([['ll', 'a', 'm', 'o'], ['y', 'a', 'm', 'o']]);
    // "calzoncillo": both, alone and together.
    const both = spanishDialectVariants([spanishG2p('calzoncillo')!]).map((p) => p.join(''));
    expect(both).toEqual(['kalzonzillo', 'kalzonziyo', 'kalsonsillo', 'kalsonsiyo']);
    // Nothing to vary: the word as it was.
    expect(spanishDialectVariants([['m', 'e', 's', 'a']])).toEqual([['m', 'e', 's', 'a']]);
  });

  it.skipIf(!spanishModel)('agrees with the Spanish model dictionary on most of its words', async () => {
    const dict = await loadDictionary(acousticModel('es', esDir).dict);
    let n = 0;
    let same = 0;
    let i = 0;
    for (const [word, prons] of dict) {
      // Every 10th word: thousands of words, a fixed sample.
      if (i++ % 10 !== 0 || !/^[a-zñáéíóúü]+$/.test(word)) continue;
      n++;
      const g = spanishG2p(word)?.join(' ');
      if (prons.some((p) => p.join(' ') === g)) same++;
    }
    console.log(`[asr-grammar] Spanish G2P agrees with es.dict on ${same}/${n} words`);
    expect(n).toBeGreaterThan(1000);
    expect(same / n).toBeGreaterThan(0.85);
  });

  it.skipIf(!spanishModel)('compiles the rules agent Spanish phrases, filling words missing from the dictionary by rule', async () => {
    const [es] = await agentSpecs(['es']);
    const g = await compileGrammar(es, await loadDictionary(acousticModel('es', esDir).dict));
    expect(g.dropped).toEqual([]);
    const g2p = g.missing.filter((m) => m.resolution === 'g2p').map((m) => m.word);
    expect(g2p).toEqual(expect.arrayContaining(['reservar']));
    expect(g.dict).toMatch(/^reservar rr e s e r b a r$/m);
    // Phrases and numbers keep their accents ("adiós", "dieciséis"): the dictionary spells them so, and a caller's
    // stress follows them.
    expect(g2p).not.toContain('adiós');
    expect(g.dict).toMatch(/^adiós a d i o s$/m);
    expect(g.dict).toMatch(/^dieciséis d i e z i s e i s$/m);
    // A Latin American caller's "gracias" and "me llamo" are in the dictionary too; with the option off, only Castile's.
    expect(g.dict).toMatch(/^gracias g r a z i a s$/m);
    expect(g.dict).toMatch(/^gracias\(\d\) g r a s i a s$/m);
    expect(g.dict).toMatch(/^llamo\(\d\) y a m o$/m);
    const castilian = await compileGrammar(es, await loadDictionary(acousticModel('es', esDir).dict), { spanishDialects: false });
    expect(castilian.dict).not.toMatch(/^gracias\(\d\)/m);
  });

  it('builds specs from the rules file through a RuleBasedAgent when the LLM cannot describe itself', async () => {
    const text = { en: 'x', fr: 'x' };
    const rules = {
      version: 1, languages: ['en', 'fr'], defaultLanguage: 'en', fallback: text, toolError: text, toolDone: text,
      domain: { openingHours: { open: '11:00', close: '22:00' } },
      names: ['Anna'],
      intents: [
        { name: 'bye', phrases: { en: ["That's all!"], fr: ['au revoir'] }, reply: { en: 'bye', fr: 'salut' } },
        {
          name: 'book_appointment', phrases: { en: ['a table'], fr: ['une table'] }, tool: { name: 'book', arguments: {} }, reply: text,
          slots: [
            { name: 'party_size', type: 'number', min: 1, max: 12, prompt: text },
            { name: 'time', type: 'time', prompt: text },
            { name: 'name', type: 'name', prompt: text },
          ],
        },
      ],
    };
    const dir = mkdtempSync(path.join(tmpdir(), 'rules-'));
    try {
      const rulesPath = path.join(dir, 'rules.json');
      writeFileSync(rulesPath, JSON.stringify(rules));
      // A model backend is no VocabularySource: the grammar comes from an agent loaded from the rules file.
      const llm = new ScriptedLlm(() => ({ text: 'ok' }));
      const specs = await grammarSource(llm, { rulesPath, names: { en: ['Zoe'] } });
      expect(specs.map((s) => s.language)).toEqual(['en', 'fr']);
      const [en] = specs;
      expect(en.sentences).toContain("that's all");
      expect(en.sentences).toContain('a table for {party_size} at {time}');
      expect(en.slots.name).toEqual(['anna', 'zoe']);
      expect(en.slots.time).toEqual(expect.arrayContaining(['eight pm', 'half past seven', "eight o'clock"]));
      expect(Object.keys(en.expectations ?? {})).toContain('book_appointment.time');
      // The same specs as the agent's own when it is the LLM, filtered by language.
      const agent = new RuleBasedAgent({ rulesPath });
      const own = await grammarSource(agent, { languages: ['fr'] });
      expect(own).toEqual(agent.grammarSpecs().filter((s) => s.language === 'fr'));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  const policy = { evidenceScale: 1.5, switchProbability: 0.3, prior: 0.5, coveragePenalty: 4, expectedCoverage: 0.8, switchFloor: -3.6, firstSwitchFloor: -3.6, minArticulationRate: 5 };
  /** A lane: its LLR (undefined: no sentence at all), whether it kept its sentence, and the share of speech explained. */
  const lane = (language: string, llr: number | undefined, inGrammar = true, speechCoverage = 1) =>
    ({ language, text: 'x', inGrammar, coverage: 1, scorePerFrame: 0, llr, speechCoverage });
  /** Turns of one call in order, from the default language 'en'; the language each ends in. */
  const call = (...turns: ReturnType<typeof lane>[][]): string[] => {
    const belief = new LanguageBelief(['en', 'es'], 'en', policy);
    let current = 'en';
    return turns.map((lanes) => (current = chooseLanguage(lanes, current, belief, policy).language));
  };

  it('follows the caller’s language turn by turn, and keeps it on weak evidence', () => {
    // The call's default wins a close first turn; a clear one in another language takes it.
    expect(call([lane('en', -2.1), lane('es', -2)])).toEqual(['en']);
    expect(call([lane('en', -3), lane('es', -2)])).toEqual(['es']);
    expect(call([lane('en', undefined, false), lane('es', -2.5)])).toEqual(['es']);
    // The turn is answered by the chosen language's sentence, or not understood in it.
    const belief = new LanguageBelief(['en', 'es'], 'en', policy);
    expect(chooseLanguage([lane('en', undefined, false), lane('es', undefined, false)], 'en', belief, policy)).toEqual({ language: 'en', lane: undefined });
    expect(chooseLanguage([lane('en', -3.9, false), lane('es', -2)], 'en', belief, policy).lane?.language).toBe('es');
    // A foreign language forced onto a sentence below the floor never moves the call.
    expect(call([lane('en', undefined, false), lane('es', -3.7, false)])).toEqual(['en']);
    expect(call([lane('en', -5, false), lane('es', -3.8, false)], [lane('en', -5, false), lane('es', -3.8, false)])).toEqual(['en', 'en']);
  });

  it('is never locked in a language by earlier turns: one clear turn moves the call, a marginal one does not', () => {
    const english = [lane('en', -1.2), lane('es', -3.8)];
    // A misheard first turn (the wrong language clearly ahead) costs that turn, not the call.
    expect(call([lane('en', -1.8), lane('es', -3.7)], [lane('en', -3.8, false), lane('es', -2.2)], [lane('en', -3.5), lane('es', -2.4)])).toEqual(['en', 'es', 'es']);
    // Five turns of English hold no more than one: a clear Spanish turn moves the call…
    expect(call(english, english, english, english, english, [lane('en', -3.6), lane('es', -1.6)]).at(-1)).toBe('es');
    // …a marginal one (0.4 better) does not.
    expect(call(english, english, [lane('en', -2.4), lane('es', -2)]).at(-1)).toBe('en');
  });

  it('leaves the belief as it is after a turn that only the call\'s language decoded', () => {
    const belief = new LanguageBelief(['en', 'es'], 'en', policy);
    belief.observe(new Map([['en', -1.5], ['es', -3]]));
    const after = belief.odds();
    // Spanish decoded with no sentence is evidence against it; Spanish resting is none, and the belief does not age.
    for (let turn = 0; turn < 5; turn++) belief.observe(new Map([['en', -1]]), new Set(['en']));
    expect(belief.odds()).toEqual(after);
    belief.observe(new Map([['en', -1]]), new Set(['en', 'es']));
    expect(belief.odds().en).toBeGreaterThan(after.en);
  });

  it('does not let a short sentence padded out with fillers beat one that explains the whole utterance', () => {
    // Measured on a Spanish line through the phone channel: English "well hello" (28 % of the speech) vs the
    // Spanish sentence (95 %); the raw LLR alone picks English.
    const turn = [lane('en', -2.83, true, 0.28), lane('es', -3.04, true, 0.95)];
    expect(call(turn)).toEqual(['es']);
    const belief = new LanguageBelief(['en', 'es'], 'en', policy);
    expect(chooseLanguage(turn, 'en', belief, { ...policy, coveragePenalty: 0 }).language).toBe('en');
  });

  it('is not sure of a sentence stretched over steady noise or fitted into a fraction of the sound', () => {
    const policy = { coveragePenalty: 4, expectedCoverage: 0.8, minArticulationRate: 5 };
    const calibration = { mid: -3, scale: 0.3 };
    const lane = (llr: number, speechCoverage: number, wordPhones: number, wordFrames: number) =>
      ({ language: 'en', text: 'x', inGrammar: true, coverage: 1, scorePerFrame: 0, llr, speechCoverage, wordPhones, wordFrames });
    // Measured: "okay goodbye" spoken (8 phones/s, all of the speech), pink noise as "thanks" (5 phones over 2.9 s),
    // synthetic music through the phone channel as "no" (31 % of what the phone loop took for speech).
    expect(sentenceConfidence(lane(-1.99, 1, 8, 96), policy, calibration)).toBeGreaterThan(0.9);
    expect(sentenceConfidence(lane(-0.36, 1, 5, 290), policy, calibration)).toBeLessThan(0.5);
    expect(sentenceConfidence(lane(-1.67, 0.31, 2, 40), policy, calibration)).toBeLessThan(0.5);
  });

  it('parses alternate pronunciations', () => {
    expect(parseDictionary('read R IY D\nread(2) R EH D\n').get('read')).toEqual([['R', 'IY', 'D'], ['R', 'EH', 'D']]);
  });
});

describe.skipIf(!englishModel)('grammar decoding on synthetic speech', () => {
  let asr: PocketSphinxAsr;
  let agent: RuleBasedAgent;
  const intent = (final: AsrFinal): string | undefined => agent.classify(final.text, final.language)?.intent.name;

  beforeAll(async () => {
    agent = new RuleBasedAgent();
    await agent.load();
    asr = new PocketSphinxAsr({ spareDecoders: 1, lazyGenericLm: true });
    const t0 = performance.now();
    await asr.setGrammars(await agentSpecs());
    console.log(`[asr-grammar] setGrammars ${Math.round(performance.now() - t0)} ms, languages ${asr.languages.join(',')}`);
  }, 60_000);

  afterAll(async () => {
    await asr?.close();
  });

  it('recognises the agent\'s phrases with slots, in grammar and confident', async () => {
    const stream = asr.createStream({ language: 'en', languageFixed: true });
    try {
      const cases: Array<[string, string]> = [
        ['what time is it', 'ask_time'],
        ['i would like to book a table for four at half past seven', 'book_appointment'],
        ['i want to speak to a human', 'transfer_to_human'],
      ];
      for (const [text, expected] of cases) {
        const final = await decode(stream, await synthesize(text, voice('en')));
        console.log(`[asr-grammar] ${JSON.stringify(text)} → ${JSON.stringify(final.text)} (${final.confidence?.toFixed(2)})`);
        expect(final.inGrammar).toBe(true);
        expect(final.language).toBe('en');
        expect(intent(final)).toBe(expected);
        expect(final.confidence).toBeGreaterThanOrEqual(0.7);
      }
    } finally {
      stream.close();
    }
  }, 60_000);

  it('does not turn noise, tones or off-topic speech into a confident action', async () => {
    // Its own decoders: live CMN adapts to what a decoder heard, and noise must not bias the other tests.
    const own = new PocketSphinxAsr({ spareDecoders: 1, lazyGenericLm: true, grammar: { languages: ['en'] } });
    await own.setGrammars(await agentSpecs(['en']));
    const stream = own.createStream({ language: 'en', languageFixed: true });
    try {
      const n = INTERNAL_SAMPLE_RATE * 2;
      const white = Int16Array.from({ length: n }, () => Math.round((Math.random() * 2 - 1) * 4000));
      const tone = Int16Array.from({ length: n }, (_, i) => Math.round(8000 * Math.sin((2 * Math.PI * 440 * i) / INTERNAL_SAMPLE_RATE)));
      const offTopic = await synthesize('the children are playing football in the garden', voice('en'));
      const music = melody(seededRandom(3), { noteMs: 250, pluck: true, voices: 1, ms: 2500 });
      const pink = colouredNoise(seededRandom(4), 'pink', 2000, 6000);
      for (const [label, pcm] of [['white noise', white], ['pink noise', pink], ['tone', tone], ['off-topic', offTopic], ['music', music]] as const) {
        const final = await decode(stream, pcm);
        const action = intent(final);
        console.log(`[asr-grammar] ${label} → ${JSON.stringify(final.text)} inGrammar=${final.inGrammar} confidence=${final.confidence?.toFixed(2)} intent=${action}`);
        // Steady noise, a tone or a melody is no sentence at all, and not speech to answer ("I can help with …"):
        // such sound on the line is ignored.
        if (label !== 'off-topic') expect({ label, text: final.text, outOfDomain: final.outOfDomain ?? false }).toEqual({ label, text: '', outOfDomain: false });
        const acts = ['goodbye', 'transfer_to_human', 'book_appointment'].includes(action ?? '');
        // The guarantee is about actions: sound fed straight to the recogniser (no VAD in front, as in a call) can
        // still come back as a confident slot answer ("for one"), which a form reads back before anything happens.
        expect(acts && (final.confidence ?? 0) >= 0.7).toBe(false);
      }
    } finally {
      stream.close();
      await own.close();
    }
  }, 60_000);

  it('marks partials that complete a sentence, not strict prefixes', async () => {
    const partials: AsrPartial[] = [];
    const stream = asr.createStream({ language: 'en', languageFixed: true, onPartial: (p) => partials.push(p) });
    try {
      // Fed as a live call would be, 100 ms at a time, so partials come while the audio is decoded.
      const pcm = await synthesize('reserve a table for two at half past seven', voice('en'));
      const block = INTERNAL_SAMPLE_RATE / 10;
      for (let i = 0; i < pcm.length; i += block) {
        stream.push(pcm.subarray(i, i + block));
        await stream.idle();
      }
      const final = await stream.finalize();
      // The hour is the voice's business (flite's "seven" often comes back "two"): this test is about partials.
      expect(final.text).toMatch(/^reserve a table for two at half past \w+$/);
      expect(partials.length).toBeGreaterThan(1);
      expect(partials.every((p) => typeof p.complete === 'boolean')).toBe(true);
      expect(partials.some((p) => p.complete === false)).toBe(true);
      expect(partials[partials.length - 1]).toMatchObject({ text: final.text, complete: true });
    } finally {
      stream.close();
    }
  }, 60_000);

  it('peeks at a pause without ending the utterance: the caller who goes on is decoded as one sentence', async () => {
    const stream: AsrStream = asr.createStream({ language: 'en', languageFixed: true });
    const silence = (ms: number): Int16Array => new Int16Array((INTERNAL_SAMPLE_RATE * ms) / 1000);
    const join = (...parts: Int16Array[]): Int16Array => concatPcm(parts);
    const push = (pcm: Int16Array): void => {
      const frame = INTERNAL_SAMPLE_RATE / 50;
      for (let i = 0; i < pcm.length; i += frame) stream.push(pcm.subarray(i, i + frame));
    };
    try {
      const head = await synthesize('i would like to book a table', voice('en'));
      const tail = await synthesize('for four at half past seven', voice('en'));
      // The caller pauses after "a table" (the peek), then goes on.
      push(join(head, silence(100)));
      const atPause = await stream.peek!();
      push(join(silence(300), tail, silence(100)));
      const whole = await stream.finalize();
      console.log(`[asr-grammar] peek ${JSON.stringify(atPause?.text)} (${atPause?.confidence?.toFixed(2)}) → whole ${JSON.stringify(whole.text)}`);
      // One utterance: the words before the pause are in the final with those after it, one booking with its time.
      expect(whole.text).toMatch(/table for four at half past \w+$/);
      expect(intent(whole)).toBe('book_appointment');
      expect(whole.audioMs).toBeGreaterThan((head.length + tail.length) / 16);

      // A caller who stops at the peek: the final is the peeked one, without decoding again.
      const ask = await synthesize('what time is it', voice('en'));
      push(join(ask, silence(100)));
      const peeked = await stream.peek!();
      const heardAtPeek = (stream as GrammarStream).lastLanes;
      const final = await stream.finalize();
      expect(peeked).toBeDefined();
      expect(final).toEqual(peeked);
      expect(intent(final)).toBe('ask_time');
      // Answered from the peek: the lanes' results were not heard again.
      expect((stream as GrammarStream).lastLanes).toBe(heardAtPeek);
    } finally {
      stream.close();
    }
  }, 60_000);

  it('hears an utterance it peeked at as if it never had: same phone loop, same cepstral-mean state, same ratio', async () => {
    // Its own decoders, never used: a decoder's front end remembers what it heard before (live CMN).
    const own = new PocketSphinxAsr({ spareDecoders: 2, lazyGenericLm: true, grammar: { languages: ['en'] } });
    await own.setGrammars(await agentSpecs(['en']));
    const frame = INTERNAL_SAMPLE_RATE / 50;
    const silence = (ms: number): Int16Array => new Int16Array((INTERNAL_SAMPLE_RATE * ms) / 1000);
    const feed = (stream: AsrStream, ...parts: Int16Array[]): void => {
      for (const part of parts) for (let i = 0; i < part.length; i += frame) stream.push(part.subarray(i, i + frame));
    };
    const peeked = own.createStream({ language: 'en', languageFixed: true }) as GrammarStream;
    const plain = own.createStream({ language: 'en', languageFixed: true }) as GrammarStream;
    try {
      const head = await synthesize('i would like to book a table', voice('en'));
      const tail = await synthesize('for four at half past seven', voice('en'));
      feed(peeked, head, silence(100));
      await peeked.peek();
      feed(peeked, silence(300), tail, silence(100));
      const whole = await peeked.finalize();
      feed(plain, head, silence(100), silence(300), tail, silence(100));
      expect((await plain.finalize()).text).toBe(whole.text);
      const [a, b] = [peeked.lastLanes[0], plain.lastLanes[0]];
      expect(a.frames).toBe(b.frames);
      // The phone loop was read at the peek, not ended: it heard the utterance once.
      expect(a.loopPerFrame).toBeCloseTo(b.loopPerFrame ?? NaN, 6);
      // The grammar decoder heard it again from the front-end state it first started in (measured without that:
      // 0.58 apart per frame; with only the mean put back, 0.17).
      expect(Math.abs((a.llr ?? NaN) - (b.llr ?? NaN))).toBeLessThan(0.03);
    } finally {
      peeked.close();
      plain.close();
      await own.close();
    }
  }, 60_000);

  it('weights an expectation up while the whole grammar stays allowed', async () => {
    const stream = asr.createStream({ language: 'en', languageFixed: true });
    try {
      const answer = await synthesize('half past seven', voice('en'));
      // A bare time is only a sentence while the time question is open: before, it is not heard as one.
      const unasked = await decode(stream, answer);
      expect(unasked.text).not.toMatch(/^half past \w+$/);
      stream.expect?.('book_appointment.time');
      const expected = await decode(stream, answer);
      // The hour is the voice's business (flite's "seven" often comes back "two"); the answer is a time.
      expect(expected.text).toMatch(/^half past \w+$/);
      expect(expected.inGrammar).toBe(true);
      const other = await decode(stream, await synthesize('what time is it', voice('en')));
      expect(intent(other)).toBe('ask_time');
      stream.expect?.(undefined);
      const plain = await decode(stream, await synthesize('goodbye', voice('en')));
      expect(intent(plain)).toBe('goodbye');
    } finally {
      stream.close();
    }
  }, 60_000);

  it('decodes the telephone channel (µ-law 8 kHz) through the same grammar', async () => {
    // Fed as a phone call is: the transport declares the 8 kHz wire rate, so the narrowband decoders decode.
    const stream = asr.createStream({ language: 'en', languageFixed: true, sourceSampleRate: 8000 });
    try {
      const cases = [['what time is it', 'ask_time'], ['book a table for two', 'book_appointment'], ['i want to speak to a human', 'transfer_to_human']] as const;
      let right = 0;
      for (const [text, expected] of cases) {
        const final = await decode(stream, await phoneChannel(await synthesize(text, voice('en'))));
        console.log(`[asr-grammar] phone ${JSON.stringify(text)} → ${JSON.stringify(final.text)} (${final.confidence?.toFixed(2)})`);
        if (intent(final) === expected) right++;
      }
      // Synthetic voices on µ-law lose some phrases (BENCHMARKS.md: phone-channel accuracy).
      expect(right).toBeGreaterThanOrEqual(2);
    } finally {
      stream.close();
    }
  }, 60_000);

  it.skipIf(!spanishModel)('decodes Spanish and follows the caller\'s language turn by turn', async () => {
    if (!spanishModel) return;
    expect(asr.languages).toEqual(['en', 'es']);
    const stream = asr.createStream({ language: 'en' });
    try {
      const turns: Array<[string, string, string]> = [
        ['en', 'what time is it', 'ask_time'],
        ['es', 'quiero reservar una mesa para dos', 'book_appointment'],
        ['es', 'que hora es', 'ask_time'],
        ['en', 'goodbye', 'goodbye'],
      ];
      for (const [language, text, expected] of turns) {
        const final = await decode(stream, await synthesize(text, voice(language)));
        console.log(`[asr-grammar] ${language} ${JSON.stringify(text)} → ${final.language} ${JSON.stringify(final.text)} (${final.confidence?.toFixed(2)})`);
        expect(final.language).toBe(language);
        expect(intent(final)).toBe(expected);
      }
    } finally {
      stream.close();
    }
  }, 90_000);

  it.skipIf(!spanishModel)('lets the other language rest once the caller is understood for sure, and wakes it for a turn that needs it', async () => {
    const stream = asr.createStream({ language: 'en' }) as GrammarStream;
    // The languages that decoded the turn to its end, and whether the resting ones stopped hearing it as it came.
    const heardBy = (): string[] => stream.lastLanes.map((l) => l.language).sort();
    const restedPart = (): boolean => stream.lastRest !== undefined && stream.lastRest.heardMs < stream.lastRest.audioMs - 200;
    try {
      const turns: Array<[string, string, string[], boolean]> = [
        // Before the caller is understood, every language decodes the turn.
        ['en', 'what time is it', ['en', 'es'], false],
        // Understood for sure in English, in a sentence too long to be another language's: Spanish stops hearing it
        // once English is well into it, and the turn is taken in English.
        ['en', 'i would like to book a table for two people tomorrow at seven', ['en'], true],
        // A short answer is heard by every language as it comes (Spanish fits "goodbye" as "que hora es" as surely
        // as English does).
        ['en', 'goodbye', ['en', 'es'], false],
        // English hears no sure sentence in Spanish speech: Spanish hears the turn to its end, and takes it.
        ['es', 'quiero reservar una mesa para dos personas mañana a las ocho', ['en', 'es'], true],
        // Now English rests.
        ['es', 'quiero reservar una mesa para dos personas mañana a las ocho', ['es'], true],
      ];
      for (const [language, text, lanes, rested] of turns) {
        const final = await decodePaced(stream, await synthesize(text, voice(language)));
        console.log(`[asr-grammar] ${language} ${JSON.stringify(text)} → ${final.language} ${JSON.stringify(final.text)} (${final.confidence?.toFixed(2)}) heard by ${heardBy().join('+')}, resting lanes ${JSON.stringify(stream.lastRest)}`);
        expect(final.language).toBe(language);
        expect(final.confidence ?? 0).toBeGreaterThanOrEqual(DEFAULT_FOCUS_CONFIDENCE);
        expect(heardBy()).toEqual(lanes);
        expect(restedPart()).toBe(rested);
      }
    } finally {
      stream.close();
    }
  }, 90_000);

  it.skipIf(!spanishModel)('decodes only the fixed language when the call chose one', async () => {
    const stream = asr.createStream({ language: 'es', languageFixed: true });
    try {
      const final = await decode(stream, await synthesize('una mesa para dos', voice('es')));
      expect(final.language).toBe('es');
      expect(intent(final)).toBe('book_appointment');
      const english = await decode(stream, await synthesize('what time is it', voice('en')));
      expect(english.language).toBe('es');
    } finally {
      stream.close();
    }
  }, 60_000);

  it.skipIf(!spanishModel)('decodes a fixed language alone on the phone channel too (one lane, less CPU)', async () => {
    const stream = asr.createStream({ language: 'es', languageFixed: true, sourceSampleRate: 8000 });
    try {
      expect('languages' in stream && stream.languages).toEqual(['es']);
      const final = await decode(stream, await phoneChannel(await synthesize('quiero hablar con una persona', voice('es'))));
      expect(final.language).toBe('es');
      expect(intent(final)).toBe('transfer_to_human');
    } finally {
      stream.close();
    }
  }, 60_000);

  it.skipIf(!spanishModel)('does not act on speech in a language it has no grammar for, and the caller\'s next turn keeps the call', async () => {
    const stream = asr.createStream({ language: 'en' });
    try {
      const first = await decode(stream, await synthesize('what time is it', voice('en')));
      expect(first.language).toBe('en');
      // Speech in languages neither grammar has: whatever sentence a grammar forces onto it is no sure sentence, and
      // one such turn does not hold the call: the English caller's next question is heard in English.
      const foreign: Array<[string, string]> = [['de', 'die kinder spielen im garten'], ['fr', 'je cherche la gare centrale'], ['it', 'la mia macchina non parte']];
      for (const [language, text] of foreign) {
        const final = await decode(stream, await synthesize(text, { id: `espeak:${language}`, engine: 'espeak', language, voice: language }));
        console.log(`[asr-grammar] ${language} ${JSON.stringify(text)} → ${final.language} ${JSON.stringify(final.text)} (${final.confidence?.toFixed(2)})`);
        expect(final.confidence ?? 0).toBeLessThan(0.7);
        const next = await decode(stream, await synthesize('what time is it', voice('en')));
        expect(next.language).toBe('en');
        expect(next.text).toBe('what time is it');
      }
    } finally {
      stream.close();
    }
  }, 60_000);
});

if (!spanishModel) console.log(`[asr-grammar] Spanish tests skipped: ${SPANISH_SKIP}`);

describe('grammar endpoint in the turn detector', () => {
  const config = { ...DEFAULT_CONFIG.turn, minSpeechMs: 60, preemptiveSilenceMs: 80, endpointSilenceMs: 300, grammarEndpoint: { completeMs: 120, incompleteMs: 800 } };
  /** Frames of silence after 400 ms of speech until end_of_turn. */
  function silenceToEnd(complete: boolean | undefined, withGrammar = true): number {
    const detector = new TurnDetector(withGrammar ? config : { ...config, grammarEndpoint: undefined });
    let t = 0;
    for (let i = 0; i < 20; i++) detector.push(0.9, (t += FRAME_MS));
    detector.setComplete(complete);
    for (let i = 1; i < 200; i++) {
      if (detector.push(0.05, (t += FRAME_MS)).some((s) => s.kind === 'end_of_turn')) return i * FRAME_MS;
    }
    return Infinity;
  }

  it('ends a complete sentence sooner and waits longer (bounded) after a strict prefix', () => {
    expect(silenceToEnd(true)).toBe(120);
    expect(silenceToEnd(false)).toBe(800);
    expect(silenceToEnd(undefined)).toBe(300);
    expect(silenceToEnd(true, false)).toBe(300);
  });

  it('asks for a peek once per pause at peekMs while the words are no sentence, and a peek that finds one ends the turn', () => {
    const detector = new TurnDetector({ ...config, grammarEndpoint: { ...config.grammarEndpoint, peekMs: 200 } });
    let t = 0;
    const kinds = (p: number, n: number): string[] => Array.from({ length: n }, () => detector.push(p, (t += FRAME_MS)).map((s) => `${s.kind}@${t}`)).flat();
    kinds(0.9, 20);
    detector.setComplete(false); // "what are" on a phone line, while the caller has said "what time is it"
    const start = t;
    const pause = kinds(0.05, 12);
    expect(pause).toEqual([`likely_end@${start + 80}`, `long_pause@${start + 200}`]);
    // The caller goes on: the next pause asks again.
    kinds(0.9, 10);
    detector.setComplete(false);
    const again = t;
    expect(kinds(0.05, 11)).toContain(`long_pause@${again + 200}`);
    // The peek found a whole sentence: the turn ends on the next frame (completeMs has passed).
    detector.setComplete(true);
    expect(kinds(0.05, 1)).toEqual([`end_of_turn@${again + 240}`]);
    // A sentence known complete is never peeked for at the long pause (the likely end did it).
    kinds(0.9, 20);
    detector.setComplete(true);
    expect(kinds(0.05, 6).some((k) => k.startsWith('long_pause'))).toBe(false);
  });

  it('keeps a finished sentence finished when the recogniser adds a word into the pause, not when the caller speaks it', () => {
    const detector = new TurnDetector(config);
    let t = 0;
    const frames = (p: number, n: number): string[][] => Array.from({ length: n }, () => detector.push(p, (t += FRAME_MS)).map((s) => s.kind));
    const endsAfter = (n: number): number => frames(0.05, n).findIndex((kinds) => kinds.includes('end_of_turn')) + 1;
    frames(0.9, 20);
    detector.setComplete(true); // "reserve a table for twenty"
    frames(0.05, 3);
    detector.setComplete(false); // "reserve a table for twenty the", hypothesised into the silence
    expect(3 + endsAfter(100)).toBe(6); // 120 ms (completeMs): the sentence stood
    // The caller goes on after a whole sentence: the words they speak do unfinish it.
    frames(0.9, 20);
    detector.setComplete(true);
    frames(0.05, 2);
    frames(0.9, 5);
    detector.setComplete(false);
    expect(endsAfter(100)).toBe(40); // incompleteMs: 800 ms
  });

  it('with a grammar decoder, cuts an utterance at a pause only after a whole sentence, never before the first partial', () => {
    const detector = new TurnDetector(config);
    let t = 0;
    const frames = (p: number, n: number): void => void Array.from({ length: n }, () => detector.push(p, (t += FRAME_MS)));
    // Without a grammar decoder nothing is known of sentences: a pause may always be cut (open-vocabulary ASR).
    expect(detector.sentenceIncomplete).toBe(false);
    frames(0.9, 10);
    detector.setComplete(true); // the first turn's "what time is it": the recogniser tells sentences
    frames(0.05, 20); // end of turn
    // The next turn: speech with no partial yet (the stop in "what time") is not a sentence to cut.
    frames(0.9, 8);
    expect(detector.sentenceIncomplete).toBe(true);
    detector.setComplete(false); // "what time"
    expect(detector.sentenceIncomplete).toBe(true);
    detector.setComplete(true); // "what time is it"
    expect(detector.sentenceIncomplete).toBe(false);
    // A pause long enough to close the utterance there, then the caller goes on: that sentence says nothing of
    // the words that follow it until the next partial.
    frames(0.05, 5);
    frames(0.9, 3);
    expect(detector.sentenceIncomplete).toBe(true);
  });
});
