/**
 * ASR accuracy on the agent's own domain: decoding against the grammars the service compiles (the rules agent's
 * own `grammarSpecs()`), per language, voice and channel, plus out-of-domain rejection (noise, tones, music,
 * clicks, babble, off-topic and foreign speech) at the agent's confidence gate, and the CPU cost of 1 vs 2
 * languages. Each channel is fed as the service feeds it: 16 kHz calls with `sourceSampleRate: 16000`, phone
 * calls (µ-law 8 kHz round trip) with `sourceSampleRate: 8000`, so phone calls get the narrowband decoders.
 *
 *   npm run asr-accuracy -- [--per-voice 4] [--ood 60] [--narrowband compare|on|off] [--baseline] [--one-language]
 *                           [--languages en,es] [--callers es] [--rules FILE] [--gate 0.7] [--budget-s 330] [--seed 1] [--trace]
 *                           [--save-texts FILE] [--texts FILE] [--decoder-args JSON] [--spanish-dialects on|off]
 *
 * --narrowband compare (default) also decodes every call on a recogniser without narrowband decoders (the
 * behaviour before them: one wideband pool for both channels) and reports it as `…/before-narrowband`.
 * --baseline adds the generic English LM on the same audio; --one-language the CPU cost of a call with a fixed
 * language. --callers restricts the simulated callers to some languages (every grammar stays loaded, so the language
 * choice is measured); --trace prints every turn's lanes (LLR, phone-loop score, path length, final state reached,
 * share of the speech explained, articulation rate) on stderr. Prints one JSON object (progress on stderr). Bounded by --budget-s: calls not started in time are
 * skipped (two thirds of the budget for in-domain calls, the rest for out-of-domain sound) and counted in
 * `skipped`, so a busy machine gives smaller n rather than no result.
 *
 * --save-texts writes the in-domain sentences drawn for each language and voice; --texts reads them back instead of
 * drawing (the draw still runs, so out-of-domain sound is the same): two trees whose grammars differ, and so would
 * draw different sentences, are then measured on the same speech.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { FRAME_MS, FRAME_SAMPLES, INTERNAL_SAMPLE_RATE } from '../src/audio/format.js';
import type { GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import { PocketSphinxAsr, type LaneResult, type PocketSphinxStream } from '../src/providers/asr/pocketsphinx/index.js';
import type { AsrFinal } from '../src/providers/asr/types.js';
import { RuleBasedAgent, normalizeText } from '../src/providers/llm/rules/index.js';
import { phoneChannel, synthesize, voicesFor, type Voice } from './voices.js';
import { DEFAULT_CONFIG } from '../src/config.js';
import { SileroVad } from '../src/providers/vad/silero/index.js';
import { seededRandom } from './random.js';
import { colouredNoise, melody } from './sounds.js';


const args = process.argv.slice(2);
function arg(name: string, fallback: string): string {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
}
const PER_VOICE = Number(arg('per-voice', '4'));
const OOD = Number(arg('ood', '60'));
const BASELINE = args.includes('--baseline');
const NARROWBAND = arg('narrowband', 'compare') as 'compare' | 'on' | 'off';
const RULES = arg('rules', '') || undefined;
const GATE_ARG = arg('gate', '');
const ONE_LANGUAGE = args.includes('--one-language');
const BUDGET_MS = Number(arg('budget-s', '330')) * 1000;
const LANGUAGES = arg('languages', 'en,es').split(',');
/** Languages of the simulated callers (default: every loaded one); the grammars of LANGUAGES all stay loaded. */
const CALLERS = arg('callers', '').split(',').filter(Boolean);
const SEED = Number(arg('seed', '1'));
const GARBAGE_WEIGHT = Number(arg('garbage-weight', '0'));
/** Extra PocketSphinx arguments for the grammar decoders (`{"-beam": "1e-100"}`), to measure a setting before it ships. */
const GRAMMAR_DECODER_ARGS: Record<string, string> | undefined = arg('decoder-args', '') ? JSON.parse(arg('decoder-args', '')) : undefined;
const TRACE = args.includes('--trace');
/** --spanish-dialects off: Spanish words in the dictionary's Castilian pronunciations alone (the comparison). */
const SPANISH_DIALECTS = arg('spanish-dialects', 'on') !== 'off';
const SAVE_TEXTS = arg('save-texts', '');
const GIVEN_TEXTS: Record<string, string[]> = arg('texts', '') ? JSON.parse(readFileSync(arg('texts', ''), 'utf8')) : {};
const drawnTexts: Record<string, string[]> = {};
const THRESHOLDS = [0, 0.5, 0.6, 0.7, 0.8, 0.9];

const rand = seededRandom(SEED);
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

async function decode(asr: PocketSphinxAsr, pcm: Int16Array, sourceSampleRate: number): Promise<{ final: AsrFinal; cpuMs: number; finalMs: number; lanes: readonly LaneResult[] }> {
  const stream = asr.createStream({ language: 'en', sourceSampleRate });
  try {
    const decoded = await decodeOn(stream, pcm);
    return { ...decoded, lanes: 'lastLanes' in stream ? stream.lastLanes : [] };
  } finally {
    stream.close();
  }
}

/**
 * Decodes one utterance on an open stream: pushed in 20 ms frames, caught up every 100 ms as a call's decoders are
 * (so partials come as they would, not all at the end), finalize timed once the decode caught up.
 */
async function decodeOn(stream: PocketSphinxStream, pcm: Int16Array): Promise<{ final: AsrFinal; cpuMs: number; finalMs: number }> {
  const cpu0 = process.cpuUsage();
  const frame = INTERNAL_SAMPLE_RATE / 50;
  for (let i = 0, n = 1; i < pcm.length; i += frame, n++) {
    stream.push(pcm.subarray(i, i + frame));
    if (n % 5 === 0) await stream.idle();
  }
  await stream.idle();
  const t0 = performance.now();
  const final = await stream.finalize();
  const finalMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  return { final, cpuMs: (cpu.user + cpu.system) / 1000, finalMs };
}

// ------------------------------------------------------------------------------------------------
// Out-of-domain material

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
  return melody(rand, { noteMs: 250, pluck: true, voices: 1, ms });
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
    ['noise-white', async () => pad(colouredNoise(rand, 'white', 1500 + rand() * 1500, 1500 + rand() * 6000))],
    ['noise-pink', async () => pad(colouredNoise(rand, 'pink', 1500 + rand() * 1500, 2000 + rand() * 8000))],
    ['noise-brown', async () => pad(colouredNoise(rand, 'brown', 1500 + rand() * 1500, 3000 + rand() * 9000))],
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

type Channel = '16k' | 'phone';
/** The caller audio's wire rate per channel, as the transports declare it (AsrStreamOptions.sourceSampleRate). */
const WIRE_RATE: Record<Channel, number> = { '16k': 16000, phone: 8000 };

interface Tally {
  n: number; intentN: number; intentOk: number; errors: number; words: number; languageOk: number; inGrammar: number;
  /** Utterances whose reference is a gated action (hang-up, transfer): recognised right and at or above the gate. */
  actionN: number; actedOk: number;
  /** Intent accuracy on a call's first utterance vs the later ones (live CMN still at its start value). */
  firstN: number; firstOk: number; laterN: number; laterOk: number;
  /** Utterances not understood but heard doubtfully (AsrFinal.doubtful): the agent asks them back; and of those, right. */
  askedBack: number; askedBackRight: number;
}
const tally = (): Tally => ({ n: 0, intentN: 0, intentOk: 0, errors: 0, words: 0, languageOk: 0, inGrammar: 0, actionN: 0, actedOk: 0, firstN: 0, firstOk: 0, laterN: 0, laterOk: 0, askedBack: 0, askedBackRight: 0 });

interface Recogniser { variant: 'after' | 'before'; asr: PocketSphinxAsr }

async function main(): Promise<void> {
  const t0 = performance.now();
  // The grammars the service compiles: the agent's own description of what it understands.
  const agent = new RuleBasedAgent(RULES ? { rulesPath: RULES } : {});
  await agent.load();
  const specs = agent.grammarSpecs().filter((s) => LANGUAGES.includes(s.language));
  const intentOf = (text: string, language: string): string => agent.classify(text, language)?.intent.name ?? 'none';
  // The agent asks a doubtful hearing back only when, said for sure, it would mean something.
  const doubtIntentOf = (final: AsrFinal): string => (final.doubtful ? intentOf(final.doubtful.text, final.language) : 'none');
  // The agent asks before acting on these when the recogniser is below its minConfidence (engine.ts: unsure).
  const gatedIntents = new Set(agent.rules.intents.filter((i) => i.confirmIfUnsure).map((i) => i.name));
  const formIntents = new Set(agent.rules.intents.filter((i) => i.slots).map((i) => i.name));
  const gate = GATE_ARG ? Number(GATE_ARG) : (agent.rules.minConfidence ?? 0.7);

  const grammarOptions = (narrowband: boolean) => ({
    spareDecoders: 1, maxIdleDecoders: 2,
    grammar: { garbageWeight: GARBAGE_WEIGHT > 0 ? GARBAGE_WEIGHT : undefined, narrowband, spanishDialects: SPANISH_DIALECTS, ...(GRAMMAR_DECODER_ARGS ? { decoderArgs: GRAMMAR_DECODER_ARGS } : {}) },
  });
  const asr = new PocketSphinxAsr(grammarOptions(NARROWBAND !== 'off'));
  const rss0 = process.memoryUsage().rss;
  const tLoad = performance.now();
  await asr.setGrammars(specs);
  const grammarLoadMs = performance.now() - tLoad;
  const rssGrammar = process.memoryUsage().rss - rss0;
  const loaded = asr.languages;
  const recognisers: Recogniser[] = [{ variant: 'after', asr }];
  if (NARROWBAND === 'compare') {
    const before = new PocketSphinxAsr(grammarOptions(false));
    await before.setGrammars(specs);
    recognisers.push({ variant: 'before', asr: before });
  }
  const baseline = BASELINE ? new PocketSphinxAsr({ spareDecoders: 1, maxIdleDecoders: 2 }) : undefined;
  const tLm = performance.now();
  await baseline?.load();
  const lmLoadMs = performance.now() - tLm;
  const fixed = ONE_LANGUAGE && loaded.length > 1 ? new PocketSphinxAsr(grammarOptions(NARROWBAND !== 'off')) : undefined;
  await fixed?.setGrammars(specs);
  // Narrowband pools warm in the background: let them finish so their build is not billed to the first decodes.
  await new Promise((resolve) => setTimeout(resolve, 2000));

  const perCell = new Map<string, { grammar: Tally; baseline: Tally; finalMs: number[] }>();
  const cpu = { one: { cpuMs: 0, audioMs: 0 }, all: { cpuMs: 0, audioMs: 0 }, lm: { cpuMs: 0, audioMs: 0 } };
  const confidences: Array<{ inDomain: boolean; confidence: number }> = [];
  const confusions = new Map<string, number>();

  // One call per language, voice, channel and recogniser: its utterances go through one stream in turn, as a
  // caller's would (the stream's current language and the decoders' live CMN carry over between turns). Calls
  // alternate between channels, so a recogniser's pooled decoders meet both, as in service.
  const skipped = { calls: 0, ood: 0 };
  const over = (share: number): boolean => performance.now() - t0 > BUDGET_MS * share;
  // Voices interleaved across languages, so a budget cut leaves every language measured.
  const plan = specs.filter((s) => loaded.includes(s.language) && (CALLERS.length === 0 || CALLERS.includes(s.language))).map((spec) => voicesFor(spec.language).map((voice) => ({ spec, voice })));
  const order = Array.from({ length: Math.max(...plan.map((p) => p.length)) }, (_, i) => plan.flatMap((p) => (p[i] ? [p[i]] : []))).flat();
  for (const { spec, voice } of order) {
    {
      if (over(2 / 3)) {
        skipped.calls++;
        continue;
      }
      process.stderr.write(`[asr-accuracy] ${Math.round((performance.now() - t0) / 1000)} s: ${spec.language} ${voice.id}\n`);
      const drawn = Array.from({ length: PER_VOICE }, () => sampleSentence(spec, pick(spec.sentences)));
      const texts = GIVEN_TEXTS[`${spec.language}|${voice.id}`] ?? drawn;
      drawnTexts[`${spec.language}|${voice.id}`] = texts;
      const clean = await Promise.all(texts.map((t) => synthesize(t, voice)));
      const phone = await Promise.all(clean.map((pcm) => phoneChannel(pcm)));
      for (const channel of ['16k', 'phone'] as const) {
        for (const rec of recognisers) {
          const key = `${spec.language}|${voice.id}|${channel}|${rec.variant}`;
          const cell = { grammar: tally(), baseline: tally(), finalMs: [] as number[] };
          perCell.set(key, cell);
          const main = rec.variant === 'after';
          const call = rec.asr.createStream({ language: 'en', sourceSampleRate: WIRE_RATE[channel] });
          const oneCall = main ? fixed?.createStream({ language: spec.language, languageFixed: true, sourceSampleRate: WIRE_RATE[channel] }) : undefined;
          const baseCall = main ? baseline?.createStream({ language: 'en', sourceSampleRate: WIRE_RATE[channel] }) : undefined;
          for (let k = 0; k < texts.length; k++) {
            const text = texts[k];
            const pcm = channel === '16k' ? clean[k] : phone[k];
            const refIntent = intentOf(text, spec.language);
            const audioMs = (pcm.length * 1000) / INTERNAL_SAMPLE_RATE;

            const g = await decodeOn(call, pcm);
            if (main) {
              cpu.all.cpuMs += g.cpuMs;
              cpu.all.audioMs += audioMs;
              cell.finalMs.push(g.finalMs);
              confidences.push({ inDomain: true, confidence: g.final.confidence ?? 0 });
            }
            const gt = cell.grammar;
            gt.n++;
            const we = wordErrors(text, g.final.text);
            gt.errors += we.errors;
            gt.words += we.words;
            if (g.final.language === spec.language) gt.languageOk++;
            if (g.final.inGrammar) gt.inGrammar++;
            const hypIntent = intentOf(g.final.text, g.final.language);
            const doubtIntent = doubtIntentOf(g.final);
            if (refIntent !== 'none') {
              const ok = hypIntent === refIntent;
              gt.intentN++;
              if (ok) gt.intentOk++;
              if (doubtIntent !== 'none') gt.askedBack++;
              if (doubtIntent !== 'none' && TRACE) console.error(`[asked back] ${key} #${k} ${JSON.stringify(text)} → ${JSON.stringify(g.final.doubtful?.text)} @${g.final.doubtful?.confidence.toFixed(3)} ${doubtIntent === refIntent ? 'right' : 'WRONG'}`);
              if (doubtIntent !== 'none' && doubtIntent === refIntent) gt.askedBackRight++;
              if (k === 0) {
                gt.firstN++;
                if (ok) gt.firstOk++;
              } else {
                gt.laterN++;
                if (ok) gt.laterOk++;
              }
              if (!ok && main) confusions.set(`${channel}: ${refIntent} → ${hypIntent}`, (confusions.get(`${channel}: ${refIntent} → ${hypIntent}`) ?? 0) + 1);
              if (!ok && TRACE) console.error(`[miss] ${key} #${k} ${JSON.stringify(text)} → ${g.final.language} ${JSON.stringify(g.final.text)} ${(g.final.confidence ?? 0).toFixed(2)}`);
            }
            if (TRACE && 'lastLanes' in call) {
              // Every lane of every turn: what separates the right language from the one that won.
              const verdict = g.final.language !== spec.language ? 'LANGUAGE' : refIntent !== 'none' && hypIntent !== refIntent ? 'INTENT' : 'ok';
              console.error(`[turn ${verdict}] ${key} #${k} ${JSON.stringify(text)}`);
              for (const lane of call.lastLanes) console.error(`  [lane] ${laneLine(lane)}`);
            }
            if (gatedIntents.has(refIntent)) {
              gt.actionN++;
              if (hypIntent === refIntent && (g.final.confidence ?? 0) >= gate) gt.actedOk++;
            }

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
              if (refIntent !== 'none') {
                bt.intentN++;
                if (intentOf(b.final.text, spec.language) === refIntent) bt.intentOk++;
              }
            }
          }
          call.close();
          oneCall?.close();
          baseCall?.close();
        }
      }
    }
  }
  await fixed?.close();

  // Out of domain, 16 kHz and through the phone channel: how often would the agent act on it?
  const ood = await oodSet(OOD);
  const oodRows: Array<{ label: string; rec: Recogniser; channel: Channel }> = [
    { label: '16k', rec: recognisers[0], channel: '16k' },
    { label: 'phone', rec: recognisers[0], channel: 'phone' },
    ...recognisers.slice(1).map((rec) => ({ label: 'phone/before-narrowband', rec, channel: 'phone' as const })),
  ];
  // The service hands the recogniser only what its VAD takes for a turn (turn detector: minSpeechMs of frames at
  // speechThreshold): measured here on the same sound, so "after the VAD" is what a call would do.
  const vad = new SileroVad({});
  await vad.load();
  const { speechThreshold, minSpeechMs } = DEFAULT_CONFIG.turn;
  const vadTakesTurn = async (pcm: Int16Array): Promise<boolean> => {
    const stream = vad.createStream();
    try {
      let run = 0;
      for (let i = 0; i + FRAME_SAMPLES <= pcm.length; i += FRAME_SAMPLES) {
        run = (await stream.process(pcm.subarray(i, i + FRAME_SAMPLES))) >= speechThreshold ? run + 1 : 0;
        if (run * FRAME_MS >= minSpeechMs) return true;
      }
      return false;
    } finally {
      stream.close();
    }
  };
  const acc = oodRows.map(() => ({ askedBack: 0, askedBackAfterVad: 0, askedBackGated: 0, confidentIntent: 0, confidentIntentAfterVad: 0, vadTurns: 0, gatedActedAfterVad: 0, n: 0, inGrammar: 0, gatedAny: 0, gatedActed: 0, formStarts: 0, baselineActions: 0, byThreshold: THRESHOLDS.map(() => 0), acted: {} as Record<string, number> }));
  // Item by item across the rows, so a budget cut leaves every row measured on the same sounds.
  for (const item of ood) {
    if (over(1)) {
      skipped.ood++;
      continue;
    }
    const phonePcm = await phoneChannel(item.pcm);
    for (const [r, row] of oodRows.entries()) {
      const a = acc[r];
      a.n++;
      const pcm = row.channel === 'phone' ? phonePcm : item.pcm;
      const g = await decode(row.rec.asr, pcm, WIRE_RATE[row.channel]);
      const turn = await vadTakesTurn(pcm);
      if (turn) a.vadTurns++;
      const confidence = g.final.confidence ?? 0;
      const intent = g.final.inGrammar ? intentOf(g.final.text, g.final.language) : 'none';
      if (g.final.inGrammar) a.inGrammar++;
      if (TRACE && g.final.inGrammar) {
        console.error(`[ood ${row.label}] ${item.kind} vad=${turn} → ${intent} ${JSON.stringify(g.final.text)} @${confidence.toFixed(2)}`);
        for (const lane of g.lanes) console.error(`  [lane] ${laneLine(lane)}`);
      }
      if (row.label === '16k') confidences.push({ inDomain: false, confidence });
      const doubtIntent = doubtIntentOf(g.final);
      if (doubtIntent !== 'none') {
        a.askedBack++;
        if (turn) a.askedBackAfterVad++;
        if (gatedIntents.has(doubtIntent)) a.askedBackGated++;
        if (TRACE) {
          console.error(`[ood ${row.label}] ${item.kind} vad=${turn} → asked back ${JSON.stringify(g.final.doubtful?.text)} @${g.final.doubtful?.confidence.toFixed(3)}`);
          for (const lane of g.lanes) console.error(`  [lane] ${laneLine(lane)}`);
        }
      }
      if (formIntents.has(intent)) a.formStarts++;
      // Answered as if understood: some intent at or above the agent's gate (anything else gets the honest
      // "I did not understand" / "here is what I can do").
      if (intent !== 'none' && confidence >= gate) {
        a.confidentIntent++;
        if (turn) a.confidentIntentAfterVad++;
      }
      if (gatedIntents.has(intent)) {
        a.gatedAny++;
        THRESHOLDS.forEach((t, i) => {
          if (confidence >= t) a.byThreshold[i]++;
        });
        if (confidence >= gate) {
          a.gatedActed++;
          if (turn) a.gatedActedAfterVad++;
          const label = `${item.kind} → ${intent} ${JSON.stringify(g.final.text)} @${confidence.toFixed(2)}`;
          a.acted[label] = (a.acted[label] ?? 0) + 1;
        }
      }
      if (baseline && row.label === '16k') {
        const b = await decode(baseline, pcm, WIRE_RATE[row.channel]);
        if (gatedIntents.has(intentOf(b.final.text, 'en'))) a.baselineActions++;
      }
    }
  }
  process.stderr.write(`[asr-accuracy] ${Math.round((performance.now() - t0) / 1000)} s: out of domain done\n`);
  const outOfDomain = Object.fromEntries(oodRows.map((row, r) => {
    const a = acc[r];
    return [row.label, {
      n: a.n,
      inGrammar: pct(a.inGrammar, a.n),
      wrongActionsAtGate: pct(a.gatedActed, a.n),
      // As in a call: the VAD first (sounds it takes for a turn), then the recogniser and the agent's gate.
      vadTurns: pct(a.vadTurns, a.n),
      wrongActionsAtGateAfterVad: pct(a.gatedActedAfterVad, a.n),
      answeredHonestly: pct(a.n - a.confidentIntent, a.n),
      answeredHonestlyAfterVad: a.vadTurns > 0 ? pct(a.vadTurns - a.confidentIntentAfterVad, a.vadTurns) : null,
      // "Did you say …?" instead of the honest answer (never an action: only a yes would take the words).
      askedBack: pct(a.askedBack, a.n),
      askedBackAfterVad: a.vadTurns > 0 ? pct(a.askedBackAfterVad, a.vadTurns) : null,
      askedBackAboutAGatedAction: pct(a.askedBackGated, a.n),
      wrongActionsAnyConfidence: pct(a.gatedAny, a.n),
      gatedIntentByThreshold: Object.fromEntries(THRESHOLDS.map((t, i) => [t, pct(a.byThreshold[i], a.n)])),
      formStarts: pct(a.formStarts, a.n),
      ...(baseline && row.label === '16k' ? { genericLmWrongActions: pct(a.baselineActions, a.n) } : {}),
      acted: a.acted,
    }];
  }));

  const rate = (t: Tally) => ({
    n: t.n,
    intentAccuracy: pct(t.intentOk, t.intentN), wer: pct(t.errors, t.words), languageRight: pct(t.languageOk, t.n),
    inGrammar: pct(t.inGrammar, t.n),
    firstTurnIntent: pct(t.firstOk, t.firstN), laterTurnsIntent: pct(t.laterOk, t.laterN),
    askedBack: pct(t.askedBack, t.intentN), askedBackRight: pct(t.askedBackRight, t.askedBack),
    intentRightOrAskedBackRight: pct(t.intentOk + t.askedBackRight, t.intentN),
    gatedActionsActedAtGate: pct(t.actedOk, t.actionN), gatedActionsN: t.actionN,
  });
  const sum = (filter: (k: string) => boolean, pickT: (c: { grammar: Tally; baseline: Tally }) => Tally): Tally => {
    const t = tally();
    for (const [k, c] of perCell) if (filter(k)) for (const f of Object.keys(t) as Array<keyof Tally>) t[f] += pickT(c)[f];
    return t;
  };
  const summary: Record<string, unknown> = {};
  for (const language of loaded) {
    for (const channel of ['16k', 'phone']) {
      for (const rec of recognisers) {
        const match = (k: string): boolean => k.startsWith(`${language}|`) && k.endsWith(`|${channel}|${rec.variant}`);
        const g = sum(match, (c) => c.grammar);
        const b = sum(match, (c) => c.baseline);
        summary[`${language}/${channel}${rec.variant === 'before' ? '/before-narrowband' : ''}`] = {
          ...rate(g),
          ...(baseline && rec.variant === 'after' ? { genericLm: { intentAccuracy: pct(b.intentOk, b.intentN), wer: pct(b.errors, b.words) } } : {}),
        };
      }
    }
  }
  const cells = [...perCell.entries()].map(([key, c]) => {
    const [language, voice, channel, variant] = key.split('|');
    const r = rate(c.grammar);
    return { language, voice, channel, variant, n: r.n, intentAccuracy: r.intentAccuracy, wer: r.wer, languageRight: r.languageRight };
  });
  const finalMs = [...perCell.values()].flatMap((c) => c.finalMs).sort((a, b) => a - b);
  const inDomain = confidences.filter((c) => c.inDomain);
  if (SAVE_TEXTS) writeFileSync(SAVE_TEXTS, JSON.stringify(drawnTexts, null, 1));
  console.log(JSON.stringify({
    config: { perVoice: PER_VOICE, ood: OOD, seed: SEED, languages: loaded, narrowband: NARROWBAND, gate, gatedIntents: [...gatedIntents], garbageWeight: GARBAGE_WEIGHT, sentences: Object.fromEntries(specs.map((s) => [s.language, s.sentences.length])) },
    load: { grammarMs: Math.round(grammarLoadMs), grammarRssMb: Math.round(rssGrammar / 1e6), ...(baseline ? { genericLmMs: Math.round(lmLoadMs) } : {}) },
    summary,
    outOfDomain,
    confidenceQuantiles: Object.fromEntries(([['inDomain', true], ['outOfDomain16k', false]] as const).map(([label, isIn]) => {
      const v = confidences.filter((c) => c.inDomain === isIn).map((c) => c.confidence).sort((a, b) => a - b);
      return [label, [0.05, 0.25, 0.5, 0.75, 0.95].map((q) => +(v[Math.floor(q * (v.length - 1))] ?? 0).toFixed(3))];
    })),
    inDomainConfidenceBelowGate: pct(inDomain.filter((c) => c.confidence < gate).length, inDomain.length),
    confusions: Object.fromEntries([...confusions].sort((a, b) => b[1] - a[1]).slice(0, 15)),
    cpu: {
      realTimeFactorAllLanguages: cpu.all.audioMs > 0 ? +(cpu.all.cpuMs / cpu.all.audioMs).toFixed(3) : null,
      realTimeFactorOneLanguage: cpu.one.audioMs > 0 ? +(cpu.one.cpuMs / cpu.one.audioMs).toFixed(3) : null,
      ...(baseline ? { realTimeFactorGenericLm: cpu.lm.audioMs > 0 ? +(cpu.lm.cpuMs / cpu.lm.audioMs).toFixed(3) : null } : {}),
    },
    finalAfterIdleMs: { p50: finalMs[Math.floor(finalMs.length / 2)] ?? null, p95: finalMs[Math.floor(finalMs.length * 0.95)] ?? null },
    cells,
    skipped,
    wallS: Math.round((performance.now() - t0) / 1000),
  }, null, 2));
  for (const rec of recognisers) await rec.asr.close();
  await baseline?.close();
}

function laneLine(l: LaneResult): string {
  const f = (v: number | undefined, d = 2): string => (v === undefined ? '-' : v.toFixed(d));
  const text = l.text || (l.rejected ? `(${l.rejected.reason}: ${l.rejected.text})` : '');
  return `${l.language} llr=${f(l.llr)} loop/f=${f(l.loopPerFrame)} score/f=${f(l.scorePerFrame, 0)} frames=${l.frames ?? '-'} `
    + `final=${l.reachedFinal ?? '-'} cov=${f(l.coverage)} said=${f(l.speechCoverage)} artic=${l.wordPhones !== undefined && l.wordFrames ? f(l.wordPhones / (l.wordFrames / 100), 1) : '-'} rate=${f(l.phoneRate, 1)} held=${f(l.sustainedShare)} spread=${f(l.loudnessSpreadDb, 1)} ${JSON.stringify(text)}`;
}

const pct = (a: number, b: number): number | null => (b > 0 ? Math.round((1000 * a) / b) / 10 : null);

main().then(() => process.exit(0), (err: unknown) => {
  console.error(err);
  process.exit(1);
});
