/**
 * Turn-taking from the grammar (`turn.grammarEndpoint`), measured: callers on the device WebSocket say sentences
 * of the agent's own grammar, some whole and some with a pause in the middle, after words that are a strict
 * prefix of a sentence ("I would like to book | a table for two"), as people do when they look for a word.
 * Runs the service itself, once with the plain silence endpoint and once per grammarEndpoint setting, on the
 * same utterances, and reports per setting:
 *   - cut in: the agent's voice reached the caller during the mid-sentence pause (the caller was cut off);
 *   - split: the caller's sentence became more than one transcript (the agent answered a fragment);
 *   - whole right: the caller's whole sentence was one transcript with the intended intent;
 *   - last exact: the call's last transcript is the whole sentence word for word (one transcript, or a fragment's
 *     reply cut off and the caller's words joined into one turn: what the agent finally answers);
 *   - v2v at the client for the whole sentences (end of the caller's speech to the agent's first audio).
 *
 *   npx tsx loadtest/endpoint-pauses.ts [--sentences 8] [--pauses 300,500,700] [--settings off,120/600,150/900] [--seed 1]
 *                                       [--at prefix|continuable]
 *
 * A setting "C/I" is grammarEndpoint { completeMs: C, incompleteMs: I }, "C/I/P/S" adds { peekMs: P, sureConfidence: S }
 * (a peek at a P ms pause after words that are no sentence yet); "C+K/I" adds { continuableMs: K }; "off" is the
 * plain endpoint. `--at continuable` pauses after words that are a whole sentence and the start of a longer one
 * ("i would like to book a table for two | tomorrow at seven"), where people breathe in a long request, instead of
 * after a strict prefix.
 */
import { DEFAULT_CONFIG } from '../src/config.js';
import { FRAME_MS, FRAME_SAMPLES, INTERNAL_SAMPLE_RATE, rmsDbfs } from '../src/audio/format.js';
import { concatPcm } from '../src/audio/framer.js';
import { compileGrammar, loadDictionary } from '../src/providers/asr/grammar/compile.js';
import type { GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import { isWholeSentence, type SentenceStanding } from '../src/providers/asr/grammar/sentence-matcher.js';
import { acousticModel } from '../src/providers/asr/pocketsphinx/grammar.js';
import { DEFAULT_MODEL_DIR } from '../src/providers/asr/pocketsphinx/index.js';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { startLocalService } from './local-service.js';
import { percentiles } from './run.js';
import { synthesize, voicesFor, type Voice } from './voices.js';
import { WsCaller } from './ws-caller.js';
import { seededRandom } from './random.js';

const args = process.argv.slice(2);
const arg = (name: string, fallback: string): string => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 && args[i + 1] !== undefined ? args[i + 1] : fallback;
};
const SENTENCES = Number(arg('sentences', '8'));
const PAUSES = arg('pauses', '300,500,700').split(',').map(Number);
const SETTINGS = arg('settings', 'off,120/600,150/900').split(',');
const SEED = Number(arg('seed', '1'));
const TRACE = args.includes('--trace');
const AT = arg('at', 'prefix');
if (AT !== 'prefix' && AT !== 'continuable') throw new Error('--at is prefix or continuable');
const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

const rand = seededRandom(SEED);
const pick = <T>(list: readonly T[]): T => list[Math.floor(rand() * list.length)];

interface Utterance {
  voice: string;
  text: string;
  /** Words before the pause (null: said whole). */
  prefix: string | null;
  pauseMs: number;
  intent: string;
  pcm: Int16Array;
  /** Sample offsets of the pause (prefix end → rest start), when there is one. */
  pause: { from: number; to: number } | null;
  /** Sample offset of the last voiced frame. */
  speechEnd: number;
}

interface Outcome {
  voice: string;
  text: string;
  pauseMs: number;
  heard: string[];
  cutIn: boolean;
  split: boolean;
  wholeRight: boolean;
  lastExact: boolean;
  v2vMs: number | null;
  /** With --trace: each partial, ms after the end of the caller's speech, and the service's turn.metrics stages. */
  partials?: string[];
  stages?: string[];
}

/** The offset just past the last 20 ms frame above -45 dBFS (the speech's end as a listener hears it). */
function lastVoiced(pcm: Int16Array): number {
  for (let end = pcm.length - (pcm.length % FRAME_SAMPLES); end >= FRAME_SAMPLES; end -= FRAME_SAMPLES) {
    if (rmsDbfs(pcm.subarray(end - FRAME_SAMPLES, end)) > -45) return end;
  }
  return 0;
}

/** Trim leading/trailing near-silence, so a pause we insert is the pause the caller makes. */
function trim(pcm: Int16Array): Int16Array {
  let start = 0;
  while (start + FRAME_SAMPLES < pcm.length && rmsDbfs(pcm.subarray(start, start + FRAME_SAMPLES)) <= -45) start += FRAME_SAMPLES;
  return pcm.subarray(start, Math.max(start, lastVoiced(pcm)));
}

const silence = (ms: number): Int16Array => new Int16Array(Math.round((ms * INTERNAL_SAMPLE_RATE) / 1000));

async function buildSet(spec: GrammarSpec, standing: (t: string) => SentenceStanding, intentOf: (t: string) => string, voices: Voice[]): Promise<Utterance[]> {
  const out: Utterance[] = [];
  let tried = 0;
  // Sentences of at least four words with an intent, and a split point whose words are not yet a sentence (or, with
  // --at continuable, are one that goes on).
  const splitHere = (words: string[], k: number): boolean => {
    const s = standing(words.slice(0, k).join(' '));
    return AT === 'prefix' ? !isWholeSentence(s) : s === 'continuable';
  };
  while (out.filter((u) => u.prefix === null).length < SENTENCES * voices.length && tried++ < 5000) {
    const text = pick(spec.sentences).replace(/\{([^{}]+)\}/g, (_, slot: string) => pick(spec.slots[slot] ?? ['']));
    const words = text.split(/\s+/).filter(Boolean);
    const intent = intentOf(text);
    if (words.length < 4 || intent === 'none') continue;
    const splits = Array.from({ length: words.length - 3 }, (_, i) => i + 2).filter((k) => splitHere(words, k));
    if (splits.length === 0) continue;
    const k = pick(splits);
    const voice = voices[out.filter((u) => u.prefix === null).length % voices.length];
    const whole = trim(await synthesize(text, voice, 0));
    out.push({ voice: voice.id, text, prefix: null, pauseMs: 0, intent, pcm: concatPcm([silence(400), whole, silence(2500)]), pause: null, speechEnd: 400 * 16 + whole.length });
    const head = trim(await synthesize(words.slice(0, k).join(' '), voice, 0));
    const tail = trim(await synthesize(words.slice(k).join(' '), voice, 0));
    for (const pauseMs of PAUSES) {
      const from = 400 * 16 + head.length;
      const to = from + silence(pauseMs).length;
      out.push({
        voice: voice.id, text, prefix: words.slice(0, k).join(' '), pauseMs, intent,
        pcm: concatPcm([silence(400), head, silence(pauseMs), tail, silence(2500)]), pause: { from, to }, speechEnd: to + tail.length,
      });
    }
  }
  return out;
}

/** One call per utterance: stream it in real time, listen until the agent's answer has played (or 4 s of quiet). */
async function oneCall(wsUrl: string, apiKey: string, u: Utterance, intentOf: (t: string) => string): Promise<Outcome> {
  const caller = new WsCaller(`${wsUrl}?language=en`, apiKey);
  await caller.connect();
  const finals: string[] = [];
  const partials: Array<{ at: number; text: string }> = [];
  const stages: string[] = [];
  let firstAudio: number | null = null;
  caller.onAudio((samples, at) => {
    if (firstAudio === null && rmsDbfs(samples) > -50) firstAudio = at;
  });
  caller.onEvent((e) => {
    if (e.type === 'transcript.final' && typeof e.text === 'string' && e.text.trim() !== '') finals.push(e.text);
    if (e.type === 'transcript.partial' && typeof e.text === 'string') partials.push({ at: performance.now(), text: e.text });
    if (e.type === 'turn.metrics') stages.push(JSON.stringify((e.metrics as { stages?: unknown } | undefined)?.stages ?? null));
  });
  const start = performance.now();
  const frames = Math.floor(u.pcm.length / FRAME_SAMPLES);
  const at = (sample: number): number => start + (sample / INTERNAL_SAMPLE_RATE) * 1000;
  for (let f = 0; f < frames; f++) {
    const wait = start + f * FRAME_MS - performance.now();
    if (wait > 0) await sleep(wait);
    caller.sendFrame(u.pcm.subarray(f * FRAME_SAMPLES, (f + 1) * FRAME_SAMPLES));
  }
  // Quiet line until the answer came (or did not), and a while after it: the final transcript can follow the
  // first audio of a reply prepared before the endpoint.
  const quiet = new Int16Array(FRAME_SAMPLES);
  for (let f = 0, after = 0; f < 250 && after < 60; f++) {
    await sleep(FRAME_MS);
    caller.sendFrame(quiet);
    if (firstAudio !== null) after++;
  }
  await caller.close();
  const heardAt: number | null = firstAudio;
  const cutIn = u.pause !== null && heardAt !== null && heardAt < at(u.pause.to);
  const split = finals.length > 1;
  const wholeRight = finals.length === 1 && intentOf(finals[0]) === u.intent;
  const lastExact = finals.at(-1)?.trim().toLowerCase() === u.text.trim().toLowerCase();
  return {
    voice: u.voice,
    text: u.prefix === null ? u.text : `${u.prefix} … ${u.text.slice(u.prefix.length).trim()}`,
    pauseMs: u.pauseMs,
    heard: finals,
    cutIn,
    split,
    wholeRight,
    lastExact,
    v2vMs: u.pause === null && heardAt !== null ? Math.round(heardAt - at(u.speechEnd)) : null,
    ...(TRACE ? { partials: partials.map((p) => `${Math.round(p.at - at(u.speechEnd))}: ${p.text}`), stages } : {}),
  };
}


async function main(): Promise<void> {
  const agent = new RuleBasedAgent();
  await agent.load();
  const spec = agent.grammarSpecs().find((s) => s.language === 'en');
  if (!spec) throw new Error('the agent has no English grammar');
  const grammar = await compileGrammar(spec, await loadDictionary(acousticModel('en', DEFAULT_MODEL_DIR).dict));
  const intentOf = (text: string): string => agent.classify(text, 'en')?.intent.name ?? 'none';
  const voices = voicesFor('en').filter((v, i, all) => all.findIndex((w) => w.engine === v.engine) === i); // one per engine
  const set = await buildSet(spec, (t) => grammar.standing(t), intentOf, voices);
  process.stderr.write(`[endpoint-pauses] ${set.length} utterances, voices ${voices.map((v) => v.id).join(', ')}\n`);

  const runs = [];
  for (const setting of SETTINGS) {
    const [complete, ...rest] = setting.split('/');
    const [completeMs, continuableMs] = complete.split('+').map(Number);
    const [incompleteMs, peekMs, sureConfidence] = rest.map(Number);
    const grammarEndpoint = {
      completeMs, incompleteMs,
      ...(continuableMs ? { continuableMs } : {}), ...(peekMs ? { peekMs } : {}), ...(sureConfidence ? { sureConfidence } : {}),
    };
    const turn = setting === 'off' ? {} : { turn: { ...DEFAULT_CONFIG.turn, grammarEndpoint } };
    const service = await startLocalService(turn, { logLevel: arg('log-level', 'warn') });
    const outcomes: Outcome[] = [];
    try {
      // One call first, not counted: a fresh service's first decode also builds and warms its decoders.
      await oneCall(service.wsUrl, service.apiKey, set[0], intentOf);
      for (const u of set) outcomes.push(await oneCall(service.wsUrl, service.apiKey, u, intentOf));
    } finally {
      await service.stop();
    }
    const whole = outcomes.filter((o) => o.pauseMs === 0);
    const byPause = PAUSES.map((pauseMs) => {
      const these = outcomes.filter((o) => o.pauseMs === pauseMs);
      return {
        pauseMs,
        utterances: these.length,
        cutIn: these.filter((o) => o.cutIn).length,
        split: these.filter((o) => o.split).length,
        wholeRight: these.filter((o) => o.wholeRight).length,
        lastExact: these.filter((o) => o.lastExact).length,
      };
    });
    const v2v = whole.flatMap((o) => (o.v2vMs === null ? [] : [o.v2vMs]));
    const v2vStats = percentiles(v2v);
    runs.push({
      setting: setting === 'off' ? { endpointSilenceMs: DEFAULT_CONFIG.turn.endpointSilenceMs } : { grammarEndpoint },
      whole: { utterances: whole.length, wholeRight: whole.filter((o) => o.wholeRight).length, lastExact: whole.filter((o) => o.lastExact).length, split: whole.filter((o) => o.split).length, unanswered: whole.length - v2v.length, v2vP50: v2vStats.p50, v2vP95: v2vStats.p95 },
      paused: byPause,
      misses: outcomes.filter((o) => TRACE || !o.wholeRight || o.cutIn),
    });
    process.stderr.write(`[endpoint-pauses] ${setting}: done\n`);
  }
  console.log(JSON.stringify({ seed: SEED, at: AT, voices: voices.map((v) => v.id), pausesMs: PAUSES, runs }, null, 2));
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
