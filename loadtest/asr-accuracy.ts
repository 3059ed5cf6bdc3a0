/**
 * ASR accuracy on the agent's own domain: grammar decoding (compiled from config/agent-rules.json) against the
 * generic English LM, per language, voice and channel (16 kHz and µ-law 8 kHz), plus out-of-domain rejection
 * (noise, tones, music, clicks, babble, off-topic and foreign speech) and the CPU cost of 1 vs 2 languages.
 *
 *   npm run asr-accuracy -- [--per-voice 8] [--ood 60] [--no-baseline] [--languages en,es] [--seed 1] [--trace]
 *
 * Prints one JSON object. Bounded: a few hundred utterances, a few minutes on two cores.
 */
import { INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import { loadRulesGrammarSpecs } from '../src/providers/asr/grammar/from-rules.js';
import type { GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import { PocketSphinxAsr, type PocketSphinxStream } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrFinal } from '../src/providers/asr/types.js';
import { RuleBasedAgent, normalizeText } from '../src/providers/llm/rules/index.js';
import { concat, phoneChannel, synthesize, voicesFor, type Voice } from './voices.js';


const args = process.argv.slice(2);
function arg(name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
}
const PER_VOICE = Number(arg('per-voice', '8'));
const OOD = Number(arg('ood', '60'));
const BASELINE = !args.includes('--no-baseline');
const LANGUAGES = arg('languages', 'en,es').split(',');
const SEED = Number(arg('seed', '1'));
const GARBAGE_WEIGHT = Number(arg('garbage-weight', '0'));
const TRACE = args.includes('--trace');
const ACTIONS = new Set(['goodbye', 'transfer_to_human', 'book_appointment']);
const THRESHOLDS = [0, 0.5, 0.6, 0.7, 0.8, 0.9];

/** mulberry32: deterministic test sets. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const rand = rng(SEED);
const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];

/** A sentence of the grammar with its slots filled by random values. */
function sampleSentence(spec: GrammarSpec, template: string): string {
  return template.replace(/\{([^{}]+)\}/g, (_, slot: string) => pick(spec.slots[slot] ?? ['']));
}

function wordErrors(ref: string, hyp: string): { errors: number; words: number } {
  const r = normalizeText(ref).split(' ').filter(Boolean);
  const h = normalizeText(hyp).split(' ').filter(Boolean);
  let prev = Array.from({ length: h.length + 1 }, (_, j) => j);
  for (let i = 1; i <= r.length; i++) {
    const cur = [i];
    for (let j = 1; j <= h.length; j++) cur.push(Math.min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r[i - 1] === h[j - 1] ? 0 : 1)));
    prev = cur;
  }
  return { errors: prev[h.length], words: r.length };
}

async function decode(asr: PocketSphinxAsr, pcm: Int16Array): Promise<{ final: AsrFinal; cpuMs: number; finalMs: number }> {
  const stream = asr.createStream({ language: 'en' });
  try {
    return await decodeOn(stream, pcm);
  } finally {
    stream.close();
  }
}

/** Decodes one utterance on an open stream: pushed in 20 ms frames, finalize timed once the decode caught up. */
async function decodeOn(stream: PocketSphinxStream, pcm: Int16Array): Promise<{ final: AsrFinal; cpuMs: number; finalMs: number }> {
  const cpu0 = process.cpuUsage();
  const frame = INTERNAL_SAMPLE_RATE / 50;
  for (let i = 0; i < pcm.length; i += frame) stream.push(pcm.subarray(i, i + frame));
  await stream.idle();
  const t0 = performance.now();
  const final = await stream.finalize();
  const finalMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { final, cpuMs: (cpu.user + cpu.system) / 1000, finalMs };
}

// ------------------------------------------------------------------------------------------------
// Out-of-domain material

function noise(kind: 'white' | 'pink' | 'brown', ms: number, amplitude: number): Int16Array {
  const n = (ms * INTERNAL_SAMPLE_RATE) / 1000;
  const out = new Int16Array(n);
  let b0 = 0, b1 = 0, b2 = 0, brown = 0;
  for (let i = 0; i < n; i++) {
    const w = rand() * 2 - 1;
    let v = w;
    if (kind === 'pink') {
      b0 = 0.99765 * b0 + w * 0.099046;
      b1 = 0.963 * b1 + w * 0.2965164;
      b2 = 0.57 * b2 + w * 1.0526913;
      v = (b0 + b1 + b2 + w * 0.1848) / 3;
    } else if (kind === 'brown') {
      brown = (brown + 0.02 * w) / 1.02;
      v = brown * 3.5;
    }
    out[i] = Math.max(-32767, Math.min(32767, Math.round(v * amplitude)));
  }
  return out;
}

function tones(freqs: readonly number[], ms: number, amplitude: number): Int16Array {
  const n = (ms * INTERNAL_SAMPLE_RATE) / 1000;
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (const f of freqs) v += Math.sin((2 * Math.PI * f * i) / INTERNAL_SAMPLE_RATE);
    out[i] = Math.round((v / freqs.length) * amplitude);
  }
  return out;
}

/** Notes with harmonics and decay: a crude synthetic melody. */
function music(ms: number): Int16Array {
  const parts: Int16Array[] = [];
  for (let t = 0; t < ms; t += 250) {
    const f = 220 * 2 ** (Math.floor(rand() * 24) / 12);
    const n = (250 * INTERNAL_SAMPLE_RATE) / 1000;
    const note = new Int16Array(n);
    for (let i = 0; i < n; i++) {
      const env = Math.exp(-i / (n / 3));
      const x = (2 * Math.PI * f * i) / INTERNAL_SAMPLE_RATE;
      note[i] = Math.round(6000 * env * (Math.sin(x) + 0.5 * Math.sin(2 * x) + 0.25 * Math.sin(3 * x)));
    }
    parts.push(note);
  }
  return concat(parts);
}

function clicks(ms: number): Int16Array {
  const out = new Int16Array((ms * INTERNAL_SAMPLE_RATE) / 1000);
  for (let i = 0; i < out.length; i += Math.floor(800 + rand() * 3000)) for (let k = 0; k < 40 && i + k < out.length; k++) out[i + k] = (k % 2 ? -1 : 1) * 20000 * Math.exp(-k / 8);
  return out;
}

function mix(parts: readonly Int16Array[]): Int16Array {
  const n = Math.max(...parts.map((p) => p.length));
  const out = new Int16Array(n);
  for (let i = 0; i < n; i++) {
    let v = 0;
    for (const p of parts) v += p[i] ?? 0;
    out[i] = Math.max(-32767, Math.min(32767, Math.round(v / Math.sqrt(parts.length))));
  }
  return out;
}

function pad(pcm: Int16Array, ms = 300): Int16Array {
  const n = (ms * INTERNAL_SAMPLE_RATE) / 1000;
  const out = new Int16Array(pcm.length + 2 * n);
  out.set(pcm, n);
  return out;
}

const OFF_TOPIC: Record<string, string[]> = {
  en: ['the weather is lovely this afternoon', 'my car broke down on the motorway yesterday', 'could you explain how photosynthesis works',
    'i think the football match was cancelled', 'please send the invoice to my accountant', 'the children are playing in the garden',
    'which train goes to the airport', 'i lost my keys somewhere in the kitchen', 'the meeting moved to next thursday',
    'how much does a new laptop cost', 'my sister lives in another city', 'turn left after the bridge'],
  es: ['hace mucho calor en la ciudad', 'mi coche no arranca esta manana', 'el partido de futbol fue muy aburrido',
    'necesito comprar pan y leche', 'los ninos juegan en el parque', 'donde esta la estacion de tren',
    'mi hermana vive en barcelona', 'el libro esta encima de la mesa de la cocina'],
  fr: ['il fait tres beau aujourd hui', 'ma voiture est en panne depuis hier', 'les enfants jouent dans le jardin', 'je cherche la gare centrale'],
  de: ['das wetter ist heute sehr schon', 'mein auto ist gestern kaputt gegangen', 'die kinder spielen im garten', 'wo ist der hauptbahnhof'],
  it: ['oggi fa molto caldo in citta', 'la mia macchina non parte', 'i bambini giocano nel giardino', 'dove si trova la stazione'],
};
const FOREIGN_VOICES: Voice[] = [
  { id: 'espeak:fr', engine: 'espeak', language: 'fr', voice: 'fr' },
  { id: 'espeak:de', engine: 'espeak', language: 'de', voice: 'de' },
  { id: 'espeak:it', engine: 'espeak', language: 'it', voice: 'it' },
];

async function oodSet(count: number): Promise<Array<{ kind: string; pcm: Int16Array }>> {
  const out: Array<{ kind: string; pcm: Int16Array }> = [];
  const enVoices = voicesFor('en');
  const esVoices = voicesFor('es');
  const makers: Array<[string, () => Promise<Int16Array>]> = [
    ['noise-white', async () => pad(noise('white', 1500 + rand() * 1500, 1500 + rand() * 6000))],
    ['noise-pink', async () => pad(noise('pink', 1500 + rand() * 1500, 2000 + rand() * 8000))],
    ['noise-brown', async () => pad(noise('brown', 1500 + rand() * 1500, 3000 + rand() * 9000))],
    ['tone', async () => pad(tones(rand() < 0.5 ? [200 + rand() * 1500] : [697, 1209 + rand() * 300], 800 + rand() * 1500, 8000))],
    ['music', async () => pad(music(1500 + rand() * 2000))],
    ['clicks', async () => pad(clicks(1500 + rand() * 1500))],
    ['babble', async () => pad(mix(await Promise.all([
      synthesize(pick(OFF_TOPIC.en), pick(enVoices), 0),
      synthesize(pick(OFF_TOPIC.es), pick(esVoices.length > 0 ? esVoices : enVoices), 0),
      synthesize(pick(OFF_TOPIC.fr), FOREIGN_VOICES[0], 0),
    ])))],
    ['off-topic-en', async () => synthesize(pick(OFF_TOPIC.en), pick(enVoices))],
    ['off-topic-es', async () => synthesize(pick(OFF_TOPIC.es), pick(esVoices.length > 0 ? esVoices : enVoices))],
    ['foreign', async () => {
      const v = pick(FOREIGN_VOICES);
      return synthesize(pick(OFF_TOPIC[v.language]), v);
    }],
  ];
  for (let i = 0; i < count; i++) {
    const [kind, make] = makers[i % makers.length];
    out.push({ kind, pcm: await make() });
  }
  return out;
}

// ------------------------------------------------------------------------------------------------

interface Tally { n: number; intentN: number; intentOk: number; errors: number; words: number; languageOk: number; inGrammar: number; gatedActionsOk: number; actionN: number }
const tally = (): Tally => ({ n: 0, intentN: 0, intentOk: 0, errors: 0, words: 0, languageOk: 0, inGrammar: 0, gatedActionsOk: 0, actionN: 0 });

async function main(): Promise<void> {
  const t0 = performance.now();
  const specs = (await loadRulesGrammarSpecs()).filter((s) => LANGUAGES.includes(s.language));
  const agent = new RuleBasedAgent();
  await agent.load();
  const intentOf = (text: string, language: string): string => agent.classify(text, language)?.intent.name ?? 'none';

  const grammarOptions = { spareDecoders: 1, maxIdleDecoders: 2, grammar: { garbageWeight: GARBAGE_WEIGHT > 0 ? GARBAGE_WEIGHT : undefined } };
  const asr = new PocketSphinxAsr(grammarOptions);
  const rss0 = process.memoryUsage().rss;
  const tLoad = performance.now();
  await asr.setGrammars(specs);
  const grammarLoadMs = performance.now() - tLoad;
  const rssGrammar = process.memoryUsage().rss - rss0;
  const loaded = asr.languages;
  const baseline = BASELINE ? new PocketSphinxAsr({ spareDecoders: 1, maxIdleDecoders: 2 }) : undefined;
  const tLm = performance.now();
  await baseline?.load();
  const lmLoadMs = performance.now() - tLm;
  const rssLm = process.memoryUsage().rss - rss0 - rssGrammar;

  const perCell = new Map<string, { grammar: Tally; baseline: Tally; finalMs: number[] }>();
  const cpu = { one: { cpuMs: 0, audioMs: 0 }, all: { cpuMs: 0, audioMs: 0 }, lm: { cpuMs: 0, audioMs: 0 } };
  const confidences: Array<{ inDomain: boolean; confidence: number; action: boolean }> = [];

  // One call per language, voice and channel: its utterances go through one stream in turn, as a caller's
  // would (the stream's current language and the decoders' live CMN carry over between turns of a call).
  const fixed = loaded.length > 1 ? new PocketSphinxAsr(grammarOptions) : undefined;
  await fixed?.setGrammars(specs);
  for (const spec of specs.filter((s) => loaded.includes(s.language))) {
    const voices = voicesFor(spec.language);
    for (const voice of voices) {
      const texts = Array.from({ length: PER_VOICE }, () => sampleSentence(spec, pick(spec.sentences)));
      const clean = await Promise.all(texts.map((t) => synthesize(t, voice)));
      for (const channel of ['16k', 'phone'] as const) {
        const key = `${spec.language}|${voice.id}|${channel}`;
        const cell = { grammar: tally(), baseline: tally(), finalMs: [] as number[] };
        perCell.set(key, cell);
        const call = asr.createStream({ language: 'en' });
        const oneCall = fixed?.createStream({ language: spec.language, languageFixed: true });
        const baseCall = baseline?.createStream({ language: 'en' });
        for (let k = 0; k < texts.length; k++) {
          const text = texts[k];
          const pcm = channel === '16k' ? clean[k] : await phoneChannel(clean[k]);
          const refIntent = intentOf(text, spec.language);
          const audioMs = (pcm.length * 1000) / INTERNAL_SAMPLE_RATE;

          const g = await decodeOn(call, pcm);
          cpu.all.cpuMs += g.cpuMs;
          cpu.all.audioMs += audioMs;
          cell.finalMs.push(g.finalMs);
          const gt = cell.grammar;
          gt.n++;
          const we = wordErrors(text, g.final.text);
          gt.errors += we.errors;
          gt.words += we.words;
          if (g.final.language === spec.language) gt.languageOk++;
          if (g.final.inGrammar) gt.inGrammar++;
          const hypIntent = intentOf(g.final.text, g.final.language);
          if (refIntent !== 'none') {
            gt.intentN++;
            if (hypIntent === refIntent) gt.intentOk++;
            else if (TRACE) console.error(`[miss] ${key} ${JSON.stringify(text)} → ${g.final.language} ${JSON.stringify(g.final.text)} ${(g.final.confidence ?? 0).toFixed(2)}`);
          }
          if (ACTIONS.has(refIntent)) {
            gt.actionN++;
            if (hypIntent === refIntent && (g.final.confidence ?? 0) >= 0.7) gt.gatedActionsOk++;
          }
          confidences.push({ inDomain: true, confidence: g.final.confidence ?? 0, action: ACTIONS.has(hypIntent) });

          if (oneCall) {
            const one = await decodeOn(oneCall, pcm);
            cpu.one.cpuMs += one.cpuMs;
            cpu.one.audioMs += audioMs;
          }
          if (baseCall) {
            const b = await decodeOn(baseCall, pcm);
            cpu.lm.cpuMs += b.cpuMs;
            cpu.lm.audioMs += audioMs;
            const bt = cell.baseline;
            bt.n++;
            const be = wordErrors(text, b.final.text);
            bt.errors += be.errors;
            bt.words += be.words;
            const bIntent = intentOf(b.final.text, spec.language);
            if (refIntent !== 'none') {
              bt.intentN++;
              if (bIntent === refIntent) bt.intentOk++;
            }
          }
        }
        call.close();
        oneCall?.close();
        baseCall?.close();
      }
    }
  }
  await fixed?.close();

  // Out of domain: how often would the agent act (hang up, transfer, book) on it?
  const ood = await oodSet(OOD);
  const oodByKind: Record<string, { n: number; inGrammar: number; actions: Record<string, number>; baselineActions: number }> = {};
  const oodActions = THRESHOLDS.map(() => 0);
  for (const item of ood) {
    const row = (oodByKind[item.kind] ??= { n: 0, inGrammar: 0, actions: {}, baselineActions: 0 });
    row.n++;
    const g = await decode(asr, item.pcm);
    const intent = intentOf(g.final.text, g.final.language);
    if (g.final.inGrammar) row.inGrammar++;
    const isAction = g.final.inGrammar === true && ACTIONS.has(intent);
    confidences.push({ inDomain: false, confidence: g.final.confidence ?? 0, action: isAction });
    THRESHOLDS.forEach((t, i) => {
      if (isAction && (g.final.confidence ?? 0) >= t) oodActions[i]++;
    });
    if (isAction) row.actions[`${intent}@${(g.final.confidence ?? 0).toFixed(2)}:${g.final.text}`] = (row.actions[`${intent}@${(g.final.confidence ?? 0).toFixed(2)}:${g.final.text}`] ?? 0) + 1;
    if (baseline) {
      const b = await decode(baseline, item.pcm);
      if (ACTIONS.has(intentOf(b.final.text, 'en'))) row.baselineActions++;
    }
  }

  const pct = (a: number, b: number): number | null => (b > 0 ? Math.round((1000 * a) / b) / 10 : null);
  const cells = [...perCell.entries()].map(([key, c]) => {
    const [language, voice, channel] = key.split('|');
    return {
      language, voice, channel, n: c.grammar.n,
      grammar: { intentAccuracy: pct(c.grammar.intentOk, c.grammar.intentN), wer: pct(c.grammar.errors, c.grammar.words), languageRight: pct(c.grammar.languageOk, c.grammar.n), inGrammar: pct(c.grammar.inGrammar, c.grammar.n) },
      ...(baseline ? { genericLm: { intentAccuracy: pct(c.baseline.intentOk, c.baseline.intentN), wer: pct(c.baseline.errors, c.baseline.words) } } : {}),
    };
  });
  const sum = (filter: (k: string) => boolean, pickT: (c: { grammar: Tally; baseline: Tally }) => Tally): Tally => {
    const t = tally();
    for (const [k, c] of perCell) if (filter(k)) for (const f of Object.keys(t) as Array<keyof Tally>) t[f] += pickT(c)[f];
    return t;
  };
  const summary: Record<string, unknown> = {};
  for (const language of loaded) {
    for (const channel of ['16k', 'phone']) {
      const g = sum((k) => k.startsWith(`${language}|`) && k.endsWith(`|${channel}`), (c) => c.grammar);
      const b = sum((k) => k.startsWith(`${language}|`) && k.endsWith(`|${channel}`), (c) => c.baseline);
      summary[`${language}/${channel}`] = {
        n: g.n,
        intentAccuracy: pct(g.intentOk, g.intentN), wer: pct(g.errors, g.words), languageRight: pct(g.languageOk, g.n),
        actionsGatedAt0_7: pct(g.gatedActionsOk, g.actionN),
        ...(baseline ? { genericLm: { intentAccuracy: pct(b.intentOk, b.intentN), wer: pct(b.errors, b.words) } } : {}),
      };
    }
  }
  const finalMs = [...perCell.values()].flatMap((c) => c.finalMs).sort((a, b) => a - b);
  console.log(JSON.stringify({
    config: { perVoice: PER_VOICE, ood: OOD, seed: SEED, languages: loaded, garbageWeight: GARBAGE_WEIGHT },
    load: { grammarMs: Math.round(grammarLoadMs), grammarRssMb: Math.round(rssGrammar / 1e6), genericLmMs: Math.round(lmLoadMs), genericLmRssMb: Math.round(rssLm / 1e6) },
    summary,
    outOfDomain: {
      n: ood.length,
      inGrammar: pct(Object.values(oodByKind).reduce((s, r) => s + r.inGrammar, 0), ood.length),
      wrongActionsByThreshold: Object.fromEntries(THRESHOLDS.map((t, i) => [t, pct(oodActions[i], ood.length)])),
      ...(baseline ? { genericLmWrongActions: pct(Object.values(oodByKind).reduce((s, r) => s + r.baselineActions, 0), ood.length) } : {}),
      byKind: oodByKind,
    },
    confidenceQuantiles: Object.fromEntries(([['inDomain', true], ['outOfDomain', false]] as const).map(([label, inDomain]) => {
      const v = confidences.filter((c) => c.inDomain === inDomain).map((c) => c.confidence).sort((a, b) => a - b);
      return [label, [0.05, 0.25, 0.5, 0.75, 0.95].map((q) => +(v[Math.floor(q * (v.length - 1))] ?? 0).toFixed(3))];
    })),
    inDomainConfidenceBelow: Object.fromEntries(THRESHOLDS.map((t) => [t, pct(confidences.filter((c) => c.inDomain && c.confidence < t).length, confidences.filter((c) => c.inDomain).length)])),
    cpu: {
      realTimeFactorAllLanguages: cpu.all.audioMs > 0 ? +(cpu.all.cpuMs / cpu.all.audioMs).toFixed(3) : null,
      realTimeFactorOneLanguage: cpu.one.audioMs > 0 ? +(cpu.one.cpuMs / cpu.one.audioMs).toFixed(3) : null,
      realTimeFactorGenericLm: cpu.lm.audioMs > 0 ? +(cpu.lm.cpuMs / cpu.lm.audioMs).toFixed(3) : null,
    },
    finalAfterIdleMs: { p50: finalMs[Math.floor(finalMs.length / 2)] ?? null, p95: finalMs[Math.floor(finalMs.length * 0.95)] ?? null },
    cells,
    wallS: Math.round((performance.now() - t0) / 1000),
  }, null, 2));
  await asr.close();
  await baseline?.close();
}

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
