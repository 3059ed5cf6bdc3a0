/**
 * PocketSphinx decoding against grammars compiled from GrammarSpecs: one decoder pool per language (small
 * dictionary + JSGF: fast to build, small), and a stream that decodes each utterance against every loaded
 * language at once and keeps the best in-grammar result.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import type { Logger } from 'pino';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import { concatPcm } from '../../../audio/framer.js';
import { DEFAULT_LANGUAGE_WEIGHT, compileGrammar, loadDictionary, type CompileOptions, type CompiledGrammar } from '../grammar/compile.js';
import type { GrammarSpec } from '../grammar/spec.js';
import type { AsrFinal, AsrStream, AsrStreamOptions } from '../types.js';
import { FRAMES_PER_SECOND, type PocketSphinxNative } from './native.js';
import { isNarrowband, narrowbandModel } from './channel.js';
import { DecoderPool } from './pool.js';
import { PocketSphinxDecoderStream, type LaneResult } from './index.js';
import { SustainedSoundMeter } from '../sustained-sound.js';

/** An acoustic model and its full pronouncing dictionary. */
export interface AcousticModel {
  hmm: string;
  dict: string;
}

export const DEFAULT_SPANISH_MODEL_DIR = '../shared/models/pocketsphinx-es';

/** The English model of Debian's pocketsphinx-en-us, or the Spanish one of cmusphinx-es-5.2 in `dir`. */
export function acousticModel(language: string, dir: string): AcousticModel {
  return language === 'es'
    ? { hmm: path.join(dir, 'acoustic-model'), dict: path.join(dir, 'es.dict') }
    : { hmm: path.join(dir, 'en-us'), dict: path.join(dir, 'cmudict-en-us.dict') };
}

export function modelPresent(model: AcousticModel): boolean {
  return existsSync(path.join(model.hmm, 'mdef')) && existsSync(model.dict);
}

/**
 * Confidence = logistic((llr - mid) / scale), llr in thousandths of a nat per frame against the phone loop.
 * Calibrated with loadtest/asr-accuracy.ts (BENCHMARKS.md): in-domain speech sits near -2, out-of-domain
 * sound below -3.5.
 */
export const DEFAULT_LLR_MID = -3;
export const DEFAULT_LLR_SCALE = 0.3;
/**
 * Share of the caller's speech (the phone loop's non-silence frames) a sentence is expected to explain with its own
 * words, and the LLR cost of each share it falls short by. A grammar of another language fits a short sentence
 * ("no", "hey") into a long utterance and lets silence and noise fillers absorb the rest, which a per-frame LLR
 * alone does not see. Measured (loadtest/asr-accuracy.ts --trace, BENCHMARKS.md): the right language's sentence
 * covers 0.73-1.0, the wrong language's mostly 0.1-0.65; music heard as "no" 0.2-0.3.
 */
export const DEFAULT_EXPECTED_COVERAGE = 0.8;
export const DEFAULT_COVERAGE_PENALTY = 4;
/**
 * The call's language is a belief carried from turn to turn (LanguageBelief): each turn's lanes are evidence, and
 * the caller may change language between turns. Per turn, a lane's evidence is `DEFAULT_LANGUAGE_EVIDENCE_SCALE`
 * times its score's distance below the best lane's (clipped at `LANGUAGE_EVIDENCE_CLIP`), in nats; between turns the
 * belief leaks towards the other languages with `DEFAULT_LANGUAGE_SWITCH_PROBABILITY`, which bounds what earlier turns
 * can hold against a new one (log(0.7/0.3) = 0.85 nats): one clear turn moves the call, a string of turns never locks
 * it. The call's default language starts `DEFAULT_LANGUAGE_PRIOR` nats ahead. Measured by replaying the lanes of 352
 * turns (loadtest/asr-accuracy.ts --trace, seeds 2 and 4, 8 voices, both channels) through each policy, and on calls
 * that change language after four turns (BENCHMARKS.md "A call's language as a belief"): a hard margin and floor let
 * a misheard first turn lock a Spanish caller in English for the whole call (1 of 8 turns right); the belief follows
 * them by the next turn, and English callers lose no intent accuracy.
 */
export const DEFAULT_LANGUAGE_EVIDENCE_SCALE = 1.5;
export const DEFAULT_LANGUAGE_SWITCH_PROBABILITY = 0.3;
export const DEFAULT_LANGUAGE_PRIOR = 0.5;
const LANGUAGE_EVIDENCE_CLIP = 3;
/** The score of a lane that found no sentence at all, for the evidence (below any sentence the lanes report). */
const NO_SENTENCE_SCORE = -6;
/**
 * The least (coverage-penalised) score with which a turn may move the call to another language, whatever the belief,
 * once the caller has been understood in the current one (a confidence of 0.16), and before that (0.12: nearly any
 * sentence the lane keeps, DEFAULT_MIN_CONFIDENCE = −3.66). Measured (loadtest/asr-accuracy.ts --trace, replayed
 * through each floor; BENCHMARKS.md "A call's language as a belief"): eSpeak's Spanish voices' right sentences score
 * −3.3 to −3.6 through the phone channel, so a floor of −3 held those callers in English for whole calls (48 % of
 * their turns understood, against 59 % at −3.5). Speech in a language neither grammar has, forced onto a sentence,
 * scores −3.3 (German onto Spanish) to −4.8: above the floor it moves the call for that turn, at a confidence far
 * under the agent's action gate, and the caller's next turn takes the call back (test/asr-grammar.test.ts).
 */
export const DEFAULT_SWITCH_FLOOR = -3.5;
export const DEFAULT_FIRST_SWITCH_FLOOR = -3.6;

/**
 * Phones per second (silence excluded) below which the sound is not speech. Measured: tones and steady noise
 * give 0-0.5, a single short word with its pauses 2.5 or more.
 */
export const DEFAULT_MIN_PHONE_RATE = 1;

/**
 * Share of a sound's frames that hold one spectrum (sustained-sound.ts) above which it is not speech. Measured:
 * speech of four synthesizers 0–0.02 on both channels, synthetic melodies and chords 0.54–0.87; under halfway, with
 * room above speech for steadier voices (a drawn-out word).
 */
export const DEFAULT_MAX_SUSTAINED_SHARE = 0.3;

/**
 * Loudness spread (how far a sound's level moves, sustained-sound.ts) under which it is steady noise, not speech.
 * Measured: steady white, pink and brown noise at most 2.9 dB on both channels; speech of four synthesizers, clean or
 * over steady noise, at least 10.5 dB. Nearer the noise, in dB: a word is never taken for noise.
 */
export const DEFAULT_MIN_LOUDNESS_SPREAD_DB = 6;

/**
 * Phones per second of the sentence's own words below which its confidence is scaled down (by rate / this).
 * Measured in-domain (loadtest/asr-accuracy.ts --trace, eSpeak and Pico voices, both channels): 7.7-15; steady
 * noise fitted to "thanks" or "yeah" stretches a word over seconds: under 2.
 */
export const DEFAULT_MIN_ARTICULATION_RATE = 5;

/**
 * Below this confidence a lane's sentence is no result (out of domain). Low on purpose: the phone channel
 * lowers in-domain confidence (a real turn must not go unanswered), and actions are gated on `confidence`
 * by the agent; sentences forced onto fragments or foreign speech score far below it (BENCHMARKS.md).
 */
export const DEFAULT_MIN_CONFIDENCE = 0.1;

/**
 * From this confidence up to the floor above, a rejected sentence is still passed on as a doubt (`AsrFinal.doubtful`):
 * the agent may ask "Did you say …?" rather than act on it or set it aside. Measured (BENCHMARKS.md "Asking back a
 * near miss"): right sentences the floor above rejected scored 0.036–0.098, but off-topic speech forced onto a
 * sentence falls in the same band, so a doubt must also cover the caller's speech (DOUBT_MIN_SPEECH_COVERAGE). The
 * band never acts: it only asks.
 */
export const DEFAULT_DOUBT_CONFIDENCE = 0.03;

/**
 * Least share of the caller's speech (the phone loop's speech frames) a doubtful sentence's own words must cover
 * to be asked back. Measured: right sentences under the floor cover 0.91–0.99; wrong ones, and off-topic speech
 * forced onto a sentence, mostly 0.55–0.8.
 */
export const DOUBT_MIN_SPEECH_COVERAGE = 0.9;

/**
 * Confidence from which a turn in the call's language is taken without hearing the other languages to its end. Once
 * a caller has been understood for sure in one language, the other languages' lanes rest as soon as the call's
 * language's running hypothesis is FOCUS_MIN_PHONES long, and decode the rest of the turn, from its kept audio, only
 * when its sentence is not this sure and this long (a caller who changes language, off-topic speech, a near miss).
 * A short turn is thus heard by every language as it comes, at no cost in time. 1 or more keeps every lane decoding
 * every turn. Measured: BENCHMARKS.md "Resting the other language".
 */
export const DEFAULT_FOCUS_CONFIDENCE = 0.5;

/**
 * Least phones in the call's language's sentence for it to be taken without the other languages. Another language's
 * grammar fits short answers ("sí" as "see you", "goodbye" as "que hora es", "bueno adios" as "when are you open") as
 * surely as the caller's own does; measured (loadtest/asr-accuracy.ts --trace, seeds 2 and 4): every sentence of the
 * wrong language at confidence 0.5 or more had 16 phones or fewer.
 */
export const FOCUS_MIN_PHONES = 20;

/**
 * A lane's sentence is understood from `min` up; from `doubt` up to `min` it is offered as a doubt; from `focus` up,
 * it lets the other languages rest (DEFAULT_FOCUS_CONFIDENCE).
 */
interface ConfidenceFloors {
  min: number;
  doubt: number;
  focus: number;
}

export interface LlrCalibration {
  mid: number;
  scale: number;
}

export function llrConfidence(llr: number | undefined, c: LlrCalibration): number {
  if (llr === undefined || !Number.isFinite(llr)) return 0;
  return 1 / (1 + Math.exp(-(llr - c.mid) / c.scale));
}

export interface GrammarDecodingOptions extends CompileOptions {
  /** How the call's language follows the caller (see LanguageBelief and its defaults). */
  languageEvidenceScale?: number;
  languageSwitchProbability?: number;
  languagePrior?: number;
  /** LLR cost of speech a sentence leaves unexplained (see DEFAULT_COVERAGE_PENALTY, DEFAULT_EXPECTED_COVERAGE). */
  coveragePenalty?: number;
  expectedCoverage?: number;
  /** Least score with which a turn moves the call to another language (see DEFAULT_SWITCH_FLOOR). */
  switchFloor?: number;
  /** The same until the caller has been understood (DEFAULT_FIRST_SWITCH_FLOOR). */
  firstSwitchFloor?: number;
  /** Confidence under which a lane's sentence counts as out of grammar (see DEFAULT_MIN_CONFIDENCE). */
  minConfidence?: number;
  /** Confidence from which a sentence under minConfidence is still offered as a doubt (DEFAULT_DOUBT_CONFIDENCE). */
  doubtConfidence?: number;
  /** Confidence from which the call's language alone decodes the next turns (DEFAULT_FOCUS_CONFIDENCE; 1: never). */
  focusConfidence?: number;
  /** Phones per second under which a sound is not speech (see DEFAULT_MIN_PHONE_RATE). */
  minPhoneRate?: number;
  /** Share of held spectra above which a sound is not speech: music (see DEFAULT_MAX_SUSTAINED_SHARE). */
  maxSustainedShare?: number;
  /** Loudness spread in dB under which a sound is steady noise, not speech (see DEFAULT_MIN_LOUDNESS_SPREAD_DB). */
  minLoudnessSpreadDb?: number;
  /** Articulation rate under which a sentence's confidence is scaled down (see DEFAULT_MIN_ARTICULATION_RATE). */
  minArticulationRate?: number;
  /** Confidence calibration (see llrConfidence). */
  llrMid?: number;
  llrScale?: number;
  /** Ready decoders in each pool (per language: grammar and phone loop, wideband and narrowband). */
  spareDecoders?: number;
  maxIdleDecoders?: number;
  /** Extra pocketsphinx arguments for the grammar decoders. */
  decoderArgs?: Record<string, string>;
  /**
   * Narrowband decoders for phone calls (channel.ts), default true; false decodes phone calls on the wideband
   * decoders (for comparison: loadtest/asr-accuracy.ts --narrowband compare).
   */
  narrowband?: boolean;
}

export interface GrammarPoolStats {
  language: string;
  band: 'wideband' | 'narrowband';
  search: 'grammar' | 'phone-loop';
  idle: number;
  leased: number;
}

interface LanguageDecoders {
  language: string;
  grammar: CompiledGrammar;
  pool: DecoderPool;
  /** Free phone-loop decoders of the same acoustic model: the reference for the likelihood ratio. */
  loopPool: DecoderPool;
  /** The same two, started from a telephone channel's cepstral mean (channel.ts), for narrowband calls. */
  narrowband?: { pool: DecoderPool; loopPool: DecoderPool };
  searches: ReadonlySet<string>;
  /** Phones per dictionary entry of the compiled grammar (`word(2)` keys as the decoder reports them). */
  phoneCounts: ReadonlyMap<string, number>;
  /** Each expectation's FSG file, by name (absent where the grammar has only JSGF). */
  expectationFiles: ReadonlyMap<string, string>;
  /** The decoders' `-lw`, which an FSG search is loaded with. */
  languageWeight: number;
}

/** Name of the phone-loop search in the reference decoders. */
export const PHONE_LOOP_SEARCH = 'phone_loop';
/** log(1.0001): pocketsphinx scores are integers in this log base. */
const LOG_BASE = Math.log(1.0001);
/** Audio of one utterance kept for a replay after a peek (40 s: past the longest turn, turn.maxTurnMs 30 s). */
const MAX_KEPT_SAMPLES = 40 * INTERNAL_SAMPLE_RATE;

/** One utterance as every lane heard it, judged (GrammarStream.hear), before a language is chosen. */
interface HeardUtterance {
  results: Array<{ final: AsrFinal; detail: LaneResult | undefined }>;
  lanes: readonly LaneResult[];
  /** Some lane's phone loop heard speech (not a steady sound, not music). */
  speech: boolean;
  audioMs: number;
  /** The languages whose lanes decoded the utterance (the others rested: they are no evidence either way). */
  decoded: ReadonlySet<string>;
}

/** One language of a call: its grammar decoder and the phone loop its likelihood ratio is taken against. */
interface CallLane {
  language: string;
  stream: PocketSphinxDecoderStream;
  loop: PocketSphinxDecoderStream;
}

/** Audio for both of a lane's decoders (`again`: audio of this utterance decoded before, see DecoderStream.push). */
function pushToLane(lane: CallLane, pcm: Int16Array, again = false): void {
  lane.stream.push(pcm, again);
  lane.loop.push(pcm, again);
}

/** Drops what both of a lane's decoders have of the current utterance. */
function cancelLane(lane: CallLane): void {
  lane.stream.cancel();
  lane.loop.cancel();
}

/** Per-language compiled grammars and their decoder pools. */
export class GrammarDecoders {
  private languages = new Map<string, LanguageDecoders>();
  private dir: string | undefined;

  constructor(
    private readonly native: PocketSphinxNative,
    private readonly models: ReadonlyMap<string, AcousticModel>,
    private readonly options: GrammarDecodingOptions,
    private readonly logger: Logger | undefined,
  ) {}

  get loaded(): string[] {
    return [...this.languages.keys()];
  }

  /** Ready and leased decoders of each pool, for metrics and tests. */
  get poolStats(): GrammarPoolStats[] {
    const stats: GrammarPoolStats[] = [];
    for (const l of this.languages.values()) {
      const bands = l.narrowband ? ([['wideband', l], ['narrowband', l.narrowband]] as const) : ([['wideband', l]] as const);
      for (const [band, pools] of bands) {
        stats.push({ language: l.language, band, search: 'grammar', idle: pools.pool.idleCount, leased: pools.pool.leasedCount });
        stats.push({ language: l.language, band, search: 'phone-loop', idle: pools.loopPool.idleCount, leased: pools.loopPool.leasedCount });
      }
    }
    return stats;
  }

  /** Compiles each spec whose language has a model and swaps the pools in; specs without a model are logged. */
  async set(specs: readonly GrammarSpec[]): Promise<void> {
    const dir = await mkdtemp(path.join(tmpdir(), 'asr-grammar-'));
    const next = new Map<string, LanguageDecoders>();
    try {
      // Languages compile and build their decoders side by side (each ps_init is one thread-pool task).
      const built = await Promise.allSettled(specs.map(async (spec): Promise<LanguageDecoders | undefined> => {
        const language = spec.language.toLowerCase().split(/[-_]/)[0];
        const model = this.models.get(language);
        if (!model) {
          this.logger?.info({ language }, 'no acoustic model for this grammar language; skipped');
          return undefined;
        }
        const t0 = performance.now();
        const dictionary = await loadDictionary(model.dict);
        // Each language compiles in its own turn of the event loop (tens of ms each): calls in progress keep their audio
        // pacing while a reloaded agent compiles (src/agents).
        await new Promise<void>((resolve) => setImmediate(resolve));
        const languageWeight = Number(this.options.decoderArgs?.['-lw'] ?? DEFAULT_LANGUAGE_WEIGHT);
        const grammar = await compileGrammar(spec, dictionary, { ...this.options, languageWeight }, (msg, data) => this.logger?.info(data, msg));
        const dictFile = path.join(dir, `${language}.dict`);
        await writeFile(dictFile, grammar.dict);
        // The minimal automaton where the grammar has one (a fraction of the JSGF's decoding cost, fsg.ts).
        const searchFile = path.join(dir, grammar.fsg !== undefined ? `${language}.fsg` : `${language}.jsgf`);
        await writeFile(searchFile, grammar.fsg ?? grammar.jsgf);
        const expectationFiles = new Map<string, string>();
        for (const [name, fsg] of Object.entries(grammar.expectationFsg)) {
          const file = path.join(dir, `${language}.${name.replace(/[^A-Za-z0-9_.-]/g, '_')}.fsg`);
          await writeFile(file, fsg);
          expectationFiles.set(name, file);
        }
        const args: Record<string, string> = {
          '-hmm': model.hmm,
          '-dict': dictFile,
          [grammar.fsg !== undefined ? '-fsg' : '-jsgf']: searchFile,
          '-samprate': String(INTERNAL_SAMPLE_RATE),
          '-remove_silence': 'no',
          // A grammar search is small, so wide beams cost little; the defaults (1e-48) prune the right
          // sentence away on some voices and the utterance then reaches no final state at all.
          '-beam': '1e-80',
          '-pbeam': '1e-80',
          '-wbeam': '1e-60',
          ...this.options.decoderArgs,
        };
        const searches = new Set(Object.keys(grammar.expectationJsgf));
        const buildPools = (decoderArgs: Record<string, string>): { pool: DecoderPool; loopPool: DecoderPool } => {
          const pool = new DecoderPool({
            native: this.native,
            args: Object.entries(decoderArgs).flat(),
            spare: Math.max(1, this.options.spareDecoders ?? 1),
            maxIdle: Math.max(0, this.options.maxIdleDecoders ?? 2),
            refillDelayMs: 3000,
            logger: this.logger,
            // Expectation searches are compiled into a decoder the first time a call on it needs one (stream.ts
            // ensureSearch): each is the whole grammar again, and seven of them made a decoder build 0.7 s, not 0.1 s.
          });
          const { '-jsgf': _jsgf, '-fsg': _fsg, ...loopArgs } = decoderArgs;
          const loopPool = new DecoderPool({
            native: this.native,
            args: Object.entries({ ...loopArgs, '-allphone_ci': 'yes' }).flat(),
            spare: Math.max(1, this.options.spareDecoders ?? 1),
            maxIdle: Math.max(0, this.options.maxIdleDecoders ?? 2),
            refillDelayMs: 3000,
            logger: this.logger,
            setup: async (ps) => {
              if ((await this.native.setAllphone(ps, PHONE_LOOP_SEARCH)) < 0) throw new Error(`phone loop ${language} failed`);
            },
          });
          return { pool, loopPool };
        };
        const { pool, loopPool } = buildPools(args);
        let decoderMs: number;
        try {
          [decoderMs] = await Promise.all([pool.warm(), loopPool.warm()]);
        } catch (err) {
          pool.close();
          loopPool.close();
          throw err;
        }
        const phoneCounts = new Map(grammar.dict.split('\n').filter(Boolean).map((line) => {
          const [word, ...phones] = line.trim().split(/\s+/);
          return [word, phones.length] as const;
        }));
        const lane: LanguageDecoders = { language, grammar, pool, loopPool, searches, phoneCounts, expectationFiles, languageWeight };
        if (this.options.narrowband !== false) await this.addNarrowband(lane, model.hmm, dir, args, buildPools);
        this.logger?.info(
          {
            language,
            sentences: grammar.sentenceCount,
            words: grammar.dict.split('\n').length - 1,
            g2p: grammar.missing.filter((m) => m.resolution === 'g2p').length,
            dropped: grammar.dropped.length,
            expectations: searches.size,
            decoderMs: Math.round(decoderMs),
            totalMs: Math.round(performance.now() - t0),
          },
          'grammar compiled',
        );
        return lane;
      }));
      // In the specs' order: the first language is the default one.
      for (const r of built) if (r.status === 'fulfilled' && r.value) next.set(r.value.language, r.value);
      const failed = built.find((r): r is PromiseRejectedResult => r.status === 'rejected');
      if (failed) throw failed.reason;
    } catch (err) {
      for (const l of next.values()) closeLane(l);
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const old = this.languages;
    const oldDir = this.dir;
    this.languages = next;
    this.dir = dir;
    for (const l of old.values()) closeLane(l);
    // Decoders already built keep their own copies; the files are only read by ps_init.
    if (oldDir) await rm(oldDir, { recursive: true, force: true });
  }

  createStream(options: AsrStreamOptions, logger: Logger | undefined): GrammarStream {
    const wanted = options.languageFixed && options.language ? primary(options.language) : undefined;
    const lanes = [...this.languages.values()].filter((l) => wanted === undefined || l.language === wanted);
    // A fixed language without a grammar here still decodes, with every grammar (logged).
    const chosen = lanes.length > 0 ? lanes : [...this.languages.values()];
    if (wanted !== undefined && lanes.length === 0) logger?.warn({ language: wanted }, 'no grammar for the fixed language; detecting per turn');
    return new GrammarStream(this.native, chosen, options, {
      evidenceScale: this.options.languageEvidenceScale ?? DEFAULT_LANGUAGE_EVIDENCE_SCALE,
      switchProbability: this.options.languageSwitchProbability ?? DEFAULT_LANGUAGE_SWITCH_PROBABILITY,
      prior: this.options.languagePrior ?? DEFAULT_LANGUAGE_PRIOR,
      coveragePenalty: this.options.coveragePenalty ?? DEFAULT_COVERAGE_PENALTY,
      expectedCoverage: this.options.expectedCoverage ?? DEFAULT_EXPECTED_COVERAGE,
      switchFloor: this.options.switchFloor ?? DEFAULT_SWITCH_FLOOR,
      firstSwitchFloor: this.options.firstSwitchFloor ?? DEFAULT_FIRST_SWITCH_FLOOR,
      minArticulationRate: this.options.minArticulationRate ?? DEFAULT_MIN_ARTICULATION_RATE,
    }, {
      mid: this.options.llrMid ?? DEFAULT_LLR_MID,
      scale: this.options.llrScale ?? DEFAULT_LLR_SCALE,
    }, {
      minPhoneRate: this.options.minPhoneRate ?? DEFAULT_MIN_PHONE_RATE,
      maxSustainedShare: this.options.maxSustainedShare ?? DEFAULT_MAX_SUSTAINED_SHARE,
      minLoudnessSpreadDb: this.options.minLoudnessSpreadDb ?? DEFAULT_MIN_LOUDNESS_SPREAD_DB,
    }, {
      min: this.options.minConfidence ?? DEFAULT_MIN_CONFIDENCE,
      doubt: this.options.doubtConfidence ?? DEFAULT_DOUBT_CONFIDENCE,
      focus: this.options.focusConfidence ?? DEFAULT_FOCUS_CONFIDENCE,
    }, logger);
  }

  /**
   * Narrowband decoders for phone calls, ready before the service says it is (a decoder build takes seconds on a
   * busy machine); a model without a measured narrowband mean, or a failed build, leaves phone calls on the
   * wideband decoders.
   */
  private async addNarrowband(
    lane: LanguageDecoders,
    hmm: string,
    dir: string,
    args: Record<string, string>,
    buildPools: (decoderArgs: Record<string, string>) => { pool: DecoderPool; loopPool: DecoderPool },
  ): Promise<void> {
    const narrowHmm = await narrowbandModel(hmm, dir).catch((err: unknown) => {
      this.logger?.warn({ err, language: lane.language }, 'narrowband model variant not written');
      return undefined;
    });
    if (!narrowHmm) {
      this.logger?.info({ language: lane.language }, 'no narrowband variant for this model: phone calls use the wideband decoders');
      return;
    }
    const narrowband = buildPools({ ...args, '-hmm': narrowHmm });
    try {
      await Promise.all([narrowband.pool.warm(), narrowband.loopPool.warm()]);
      lane.narrowband = narrowband;
    } catch (err) {
      this.logger?.warn({ err, language: lane.language }, 'narrowband decoders failed: phone calls use the wideband decoders');
      narrowband.pool.close();
      narrowband.loopPool.close();
    }
  }

  async close(): Promise<void> {
    for (const l of this.languages.values()) closeLane(l);
    this.languages.clear();
    if (this.dir) await rm(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }
}

/** Phones per second in a phone-loop transcript: speech changes phone every ~80 ms, a tone or hum stays on one. */
function phoneRate(loopText: string, frames: number | undefined): number {
  if (!frames) return 0;
  const phones = loopText.split(/\s+/).filter((p) => p !== '' && p !== 'SIL' && !/^[<[+]/.test(p));
  return phones.length / Math.max(0.1, frames / 100);
}

/** Frames the phone loop spent on phones rather than silence: how much speech there was to explain. */
function speechFrames(loop: AsrFinal): number {
  let ms = 0;
  for (const w of loop.words ?? []) if (w.word !== 'SIL') ms += w.endMs - w.startMs;
  return ms / (1000 / FRAMES_PER_SECOND);
}

/** Phones in a sentence's words as the compiled dictionary spells them (unknown words count none). */
function phonesOf(text: string, phoneCounts: ReadonlyMap<string, number>): number {
  let phones = 0;
  for (const word of text.split(/\s+/)) phones += phoneCounts.get(word) ?? 0;
  return phones;
}

function closeLane(lane: LanguageDecoders): void {
  lane.pool.close();
  lane.loopPool.close();
  lane.narrowband?.pool.close();
  lane.narrowband?.loopPool.close();
}

function primary(language: string): string {
  return language.toLowerCase().split(/[-_]/)[0];
}

/**
 * One call against every loaded language: the same audio goes to one decoder per language (each on its
 * own worker-thread queue, so they decode in parallel); at the endpoint the best in-grammar result wins. Once the
 * caller is understood for sure in one language, the others rest until a turn needs them (`focus`).
 */
export class GrammarStream implements AsrStream {
  private readonly lanes: CallLane[];
  /**
   * The language whose lanes alone decode the caller's audio as it comes, once the caller has been understood for
   * sure in it; the other lanes rest and decode a turn only if it needs them (DEFAULT_FOCUS_CONFIDENCE). Undefined:
   * every lane decodes.
   */
  private focus: string | undefined;
  /** Samples of the current utterance given to the resting lanes, from its start. */
  private restingFed = 0;
  /** The call's language's running hypothesis of this utterance reached FOCUS_MIN_PHONES: the others stop hearing it. */
  private restingStopped = false;
  /** A finalize is deciding the turn: audio coming meanwhile is the next utterance's, and waits for the resting lanes. */
  private deciding = false;
  /** The session's current language: its partials are shown, and its sentence answers a turn the belief keeps. */
  private current: string;
  /** Which language the caller speaks, as the turns so far tell it. */
  private readonly belief: LanguageBelief;
  /** Whether a turn has been understood yet: until then the current language is only the call's default. */
  private understood = false;
  /** Every lane's details of the last final (diagnostics: loadtest/asr-accuracy.ts --trace). */
  lastLanes: readonly LaneResult[] = [];
  /** The last turn's resting lanes: how much of it they heard as it came, and whether they heard the rest (diagnostics). */
  lastRest: { heardMs: number; audioMs: number; woken: boolean } | undefined;
  /** The utterance's held-spectrum share, measured on the audio itself (the same for every lane). */
  private readonly sustained = new SustainedSoundMeter();
  /** The current utterance's audio, kept so that the lanes can decode it again after a peek. */
  private uttAudio: Int16Array[] = [];
  private uttSamples = 0;
  /** Bumped by every push: a peek whose utterance grew while it ran keeps nothing. */
  private audioSeq = 0;
  /** The lanes' utterance was ended by a peek: the next push decodes the kept audio again first. */
  private peeked = false;
  /** What the last peek heard, while no audio has come since (a finalize then answers it as it is). */
  private kept: HeardUtterance | undefined;

  constructor(
    native: PocketSphinxNative,
    languages: readonly LanguageDecoders[],
    private readonly options: AsrStreamOptions,
    private readonly policy: LanguagePolicy,
    private readonly calibration: LlrCalibration,
    private readonly speechTest: SpeechTest,
    private readonly confidence: ConfidenceFloors,
    private readonly logger: Logger | undefined,
  ) {
    const requested = options.language ? primary(options.language) : undefined;
    this.current = languages.find((l) => l.language === requested)?.language ?? languages[0].language;
    this.belief = new LanguageBelief(languages.map((l) => l.language), this.current, policy);
    // A phone line's audio goes to decoders started from a telephone channel's cepstral mean, when one is ready:
    // a wideband decoder now beats a narrowband one that is still being built (seconds on a busy machine).
    const narrowband = isNarrowband(options.sourceSampleRate);
    const pools = (l: LanguageDecoders): { pool: DecoderPool; loopPool: DecoderPool } =>
      narrowband && l.narrowband && l.narrowband.pool.idleCount > 0 && l.narrowband.loopPool.idleCount > 0 ? l.narrowband : l;
    this.lanes = languages.map((l) => {
      // Chosen once, so the grammar decoder and its phone-loop reference hear through the same front end.
      const chosen = pools(l);
      logger?.debug({ language: l.language, narrowband: chosen === l.narrowband, sourceSampleRate: options.sourceSampleRate }, 'grammar lane decoders');
      return {
        language: l.language,
        stream: new PocketSphinxDecoderStream(
          native,
          chosen.pool,
          {
            onPartial: (partial) => {
              if (l.language === this.focus && !this.restingStopped && !this.deciding && phonesOf(partial.text, l.phoneCounts) >= FOCUS_MIN_PHONES) {
                this.restingStopped = true;
              }
              if (l.language === this.current) options.onPartial?.(partial);
            },
          },
          logger,
          {
            language: l.language,
            standing: (text) => l.grammar.standing(text),
            searches: l.searches,
            search: (name) => {
              const jsgf = l.grammar.expectationJsgf[name];
              if (jsgf === undefined) return undefined;
              const fsgFile = l.expectationFiles.get(name);
              return { jsgf, languageWeight: l.languageWeight, ...(fsgFile !== undefined ? { fsgFile } : {}) };
            },
            phoneCount: (word) => l.phoneCounts.get(word),
          },
        ),
        loop: new PocketSphinxDecoderStream(native, chosen.loopPool, {}, logger, undefined, PHONE_LOOP_SEARCH),
      };
    });
  }

  get languages(): string[] {
    return this.lanes.map((l) => l.language);
  }

  push(pcm: Int16Array): void {
    if (this.peeked) {
      // The caller went on after a peek: the lanes decode the utterance's audio again, then the new audio, so the
      // words before and after the pause are one utterance (a pause never splits a sentence in two).
      this.peeked = false;
      this.kept = undefined;
      const before = concatPcm(this.uttAudio);
      this.logger?.debug({ replayMs: (before.length * 1000) / INTERNAL_SAMPLE_RATE }, 'caller went on after a peek: utterance decoded again');
      // The phone loops were only read at the peek, not ended: they go on from where they are.
      if (before.length > 0) for (const lane of this.awakeLanes()) lane.stream.push(before, true);
    }
    this.audioSeq++;
    this.retain(pcm);
    this.sustained.push(pcm);
    for (const lane of this.awakeLanes()) pushToLane(lane, pcm);
    if (!this.deciding) this.feedResting(pcm);
  }

  /** Gives the resting lanes the utterance's audio until the call's language is well into a long sentence. */
  private feedResting(pcm: Int16Array): void {
    const resting = this.restingLanes();
    if (resting.length === 0 || this.restingStopped || pcm.length === 0) return;
    this.restingFed += pcm.length;
    for (const lane of resting) pushToLane(lane, pcm);
  }

  async finalize(): Promise<AsrFinal> {
    this.deciding = true;
    let decision: { final: AsrFinal; language: string; understood: boolean; sure: boolean };
    try {
      decision = await this.decideTurn();
    } finally {
      this.deciding = false;
      this.restingFed = 0;
      this.restingStopped = false;
    }
    const { final, language, understood, sure } = decision;
    this.current = language;
    if (understood) this.understood = true;
    // What the caller has said since (the next utterance): the lanes that push() did not give it to get it now.
    const next = this.uttAudio.length > 0 ? concatPcm(this.uttAudio) : undefined;
    // A sure sentence lets the other languages rest from the next turn on; an unsure one in another language wakes
    // them all; an unsure one in the language already focused on changes nothing.
    this.setFocus(understood && sure ? language : language === this.focus ? this.focus : undefined, next);
    if (next !== undefined) this.feedResting(next);
    return final;
  }

  /** The turn just ended, heard by the awake lanes and, if they are not sure of it, by the resting ones too. */
  private async decideTurn(): Promise<{ final: AsrFinal; language: string; understood: boolean; sure: boolean }> {
    // Taken now: audio pushed while the lanes finish belongs to the next utterance.
    const kept = this.kept;
    this.kept = undefined;
    this.peeked = false;
    const resting = this.restingLanes();
    const fed = this.restingFed;
    // The resting lanes may have to hear the rest of this utterance: its audio, unless it was too long to keep.
    const utterance = resting.length > 0 && this.uttSamples <= MAX_KEPT_SAMPLES ? this.uttAudio : undefined;
    this.uttAudio = [];
    this.uttSamples = 0;
    const shape = this.soundShape();
    this.sustained.reset();
    const awake = this.awakeLanes();
    let heard = kept ?? (await this.hear(false, shape, awake));
    if (kept) {
      // The grammar lanes answer their kept final at once. The phone loops were only read at the peek: ending their
      // utterance now waits for whatever they have not decoded yet, which this final does not need.
      await Promise.all(awake.map((l) => l.stream.finalize()));
      for (const l of awake) l.loop.finalize().catch((err: unknown) => this.logger?.warn({ err }, 'phone loop finalize failed'));
    }
    const woken = resting.length > 0 && utterance !== undefined && heard.speech && !this.takenAlone(heard, this.current);
    this.lastRest = resting.length > 0 ? { heardMs: (fed * 1000) / INTERNAL_SAMPLE_RATE, audioMs: heard.audioMs, woken } : undefined;
    if (resting.length > 0) {
      if (woken && utterance !== undefined) {
        // The call's language heard no sentence sure and long enough to stand alone: the resting lanes decode the
        // rest of the turn, and it is decided as if they had heard it all along.
        const whole = concatPcm(utterance);
        const rest = whole.subarray(Math.min(fed, whole.length));
        this.logger?.debug({ focus: this.focus, wake: resting.map((l) => l.language), restMs: Math.round((rest.length * 1000) / INTERNAL_SAMPLE_RATE) }, 'resting language lanes hear this turn to its end');
        for (const lane of resting) pushToLane(lane, rest, true);
        const more = await this.hear(false, shape, resting);
        heard = {
          results: [...heard.results, ...more.results],
          lanes: [...heard.lanes, ...more.lanes],
          speech: heard.speech || more.speech,
          audioMs: heard.audioMs,
          decoded: new Set([...heard.decoded, ...more.decoded]),
        };
        this.lastLanes = heard.lanes;
      } else {
        // Taken in the call's language: what the resting lanes heard of it is not needed.
        for (const lane of resting) cancelLane(lane);
      }
    }
    const decided = this.decide(heard, this.belief);
    return { ...decided, sure: this.sure(heard, decided.language) };
  }

  /**
   * The final as if the caller had finished now, without ending their utterance: the lanes end theirs (only an ended
   * utterance's hypothesis is restricted to whole sentences) and, if audio comes next, decode it all again. A
   * finalize() with no audio since answers the same final at no cost. The call's language belief is not moved.
   */
  async peek(): Promise<AsrFinal | undefined> {
    // A turn too long to keep cannot be decoded again: it is only ever finalized.
    if (this.uttSamples > MAX_KEPT_SAMPLES) return undefined;
    this.peeked = true;
    const seq = this.audioSeq;
    // Only the lanes awake: resting ones are woken, if the turn needs them, when it ends (finalize).
    const heard = await this.hear(true, this.soundShape(), this.awakeLanes());
    if (seq === this.audioSeq && this.peeked) this.kept = heard;
    return this.decide(heard, this.belief.clone()).final;
  }

  /** The utterance so far as a whole sound: held spectra (music) and loudness spread (steady noise). */
  private soundShape(): SoundShape {
    return { sustainedShare: this.sustained.share(), loudnessSpreadDb: this.sustained.loudnessSpreadDb() };
  }

  /** Every lane's final and its phone loop's, judged: a sentence that is not speech or fits too poorly is set aside. */
  private async hear(keep: boolean, shape: SoundShape, lanes: readonly CallLane[]): Promise<HeardUtterance> {
    const [finals, loopFinals] = await Promise.all([
      Promise.all(lanes.map((l) => (keep ? l.stream.endKeepingUtterance() : l.stream.finalize()))),
      Promise.all(lanes.map((l) => (keep ? l.loop.snapshot() : l.loop.finalize()))),
    ]);
    // Music (held spectra) or steady noise (a flat level): no speech, whatever sentence fits it.
    const music = shape.sustainedShare > this.speechTest.maxSustainedShare;
    const steady = shape.loudnessSpreadDb !== undefined && shape.loudnessSpreadDb < this.speechTest.minLoudnessSpreadDb;
    const noSpeech = music || steady;
    const results = lanes.map((l, i) => {
      const detail = l.stream.lastResult;
      const g = l.stream.lastScore;
      const ref = l.loop.lastScore;
      if (detail?.inGrammar && g && ref) {
        // Log-likelihood ratio per frame of the grammar path against the free phone loop (≤ 0 in practice),
        // in thousandths: near 0 the grammar explains the sound as well as any phone sequence could.
        // Per frame on each side: a peek reads the running phone loop, a few frames (its feature lag) short of the
        // grammar decoder's ended utterance.
        detail.llr = 1000 * LOG_BASE * (g.score / g.frames - ref.score / ref.frames);
        detail.loopPerFrame = (1000 * ref.score * LOG_BASE) / ref.frames;
        detail.phoneRate = phoneRate(loopFinals[i].text, ref.frames);
        const said = speechFrames(loopFinals[i]);
        if (detail.wordFrames !== undefined && said > 0) detail.speechCoverage = Math.min(1, detail.wordFrames / said);
        detail.sustainedShare = shape.sustainedShare;
        detail.loudnessSpreadDb = shape.loudnessSpreadDb;
        // A grammar can fit a steady sound, or a melody, as well as a phone loop can (high LLR): reject what is not
        // speech. And a sentence forced onto speech it does not match (far below the phone loop, or fitted into a
        // fraction of it with fillers taking the rest) is no result either.
        const notSpeech = detail.phoneRate < this.speechTest.minPhoneRate || noSpeech;
        if (notSpeech) {
          detail.rejected = { text: detail.text, reason: 'not-speech' };
          detail.inGrammar = false;
          detail.text = '';
        } else if (llrConfidence(languageScore(detail, this.policy), this.calibration) < this.confidence.min) {
          detail.rejected = { text: detail.text, reason: 'low-llr', confidence: sentenceConfidence(detail, this.policy, this.calibration) };
          detail.inGrammar = false;
          detail.text = '';
        }
      }
      return { final: finals[i], detail };
    });
    this.lastLanes = results.map((r) => r.detail).filter((d): d is LaneResult => d !== undefined);
    // Sound that is not speech says nothing about the caller's language; speech does, even a sentence rejected.
    const speech = !noSpeech && loopFinals.some((loop, i) => phoneRate(loop.text, lanes[i].loop.lastScore?.frames) >= this.speechTest.minPhoneRate);
    return { results, lanes: this.lastLanes, speech, audioMs: finals[0]?.audioMs ?? 0, decoded: new Set(lanes.map((l) => l.language)) };
  }

  /** `language`'s sentence, if sure enough to leave the other languages resting (confidence.focus). */
  private sureLane(heard: HeardUtterance, language: string): LaneResult | undefined {
    const lane = heard.lanes.find((l) => l.language === language && l.inGrammar);
    return lane !== undefined && sentenceConfidence(lane, this.policy, this.calibration) >= this.confidence.focus ? lane : undefined;
  }

  private sure(heard: HeardUtterance, language: string): boolean {
    return this.sureLane(heard, language) !== undefined;
  }

  /** Whether `language`'s sentence stands without the resting languages: sure, and too long to be mistaken (FOCUS_MIN_PHONES). */
  private takenAlone(heard: HeardUtterance, language: string): boolean {
    return (this.sureLane(heard, language)?.wordPhones ?? 0) >= FOCUS_MIN_PHONES;
  }

  private awakeLanes(): CallLane[] {
    return this.focus === undefined ? this.lanes : this.lanes.filter((l) => l.language === this.focus);
  }

  private restingLanes(): CallLane[] {
    return this.focus === undefined ? [] : this.lanes.filter((l) => l.language !== this.focus);
  }

  /**
   * Rests every lane but `focus`'s (undefined: wakes them all) from the next utterance on. A lane put to rest drops
   * what it has of that utterance (finalize gives it the utterance's start again); a lane woken is given what the
   * caller has already said of it (`sofar`: audio that came while this turn was being decided).
   */
  private setFocus(focus: string | undefined, sofar: Int16Array | undefined): void {
    if (this.lanes.length < 2 || focus === this.focus) return;
    const before = this.focus;
    this.focus = focus;
    this.logger?.debug({ focus: focus ?? null, before: before ?? null }, focus === undefined ? 'every language lane decodes' : 'other language lanes rest');
    for (const lane of this.lanes) {
      const wasAwake = before === undefined || lane.language === before;
      const awake = focus === undefined || lane.language === focus;
      if (wasAwake && !awake) cancelLane(lane);
      else if (!wasAwake && awake && sofar !== undefined) pushToLane(lane, sofar, true);
    }
  }

  /** The turn's language and its sentence, with `belief` (the call's own, or a copy for a peek) moved by the turn. */
  private decide(heard: HeardUtterance, belief: LanguageBelief): { final: AsrFinal; language: string; understood: boolean } {
    const floor = this.understood ? this.policy.switchFloor : this.policy.firstSwitchFloor;
    const turn = heard.speech ? chooseLanguage(heard.lanes, this.current, belief, { ...this.policy, switchFloor: floor }, heard.decoded) : { language: this.current, lane: undefined };
    const winner = turn.lane ? heard.results.find((r) => r.detail === turn.lane) : undefined;
    this.logger?.debug({ lanes: heard.lanes, chosen: turn.language, belief: belief.odds() }, 'grammar lanes');
    if (!winner || !turn.lane) {
      // Rejected: tell speech the agent did not understand (it deserves an answer) from sound that is not speech,
      // and pass on the turn's language's sentence when it fell just short (the agent may ask it back).
      // "Did you say X?" is a fair question only when X accounts for what the caller said: a sentence fitted into
      // part of the speech (the caller said more, or something else) is not asked back.
      const doubt = heard.speech ? heard.lanes.find((l) => l.language === turn.language && l.rejected?.reason === 'low-llr') : undefined;
      const doubtful = doubt?.rejected?.confidence !== undefined && doubt.rejected.confidence >= this.confidence.doubt
        && (doubt.speechCoverage ?? 0) >= DOUBT_MIN_SPEECH_COVERAGE
        ? { text: doubt.rejected.text, confidence: doubt.rejected.confidence }
        : undefined;
      return {
        final: { text: '', language: turn.language, audioMs: heard.audioMs, inGrammar: false, confidence: 0, outOfDomain: heard.speech, ...(doubtful ? { doubtful } : {}) },
        language: turn.language,
        understood: false,
      };
    }
    return { final: { ...winner.final, confidence: sentenceConfidence(turn.lane, this.policy, this.calibration) }, language: turn.language, understood: true };
  }

  /** Keeps the utterance's audio for a replay after a peek (up to MAX_KEPT_SAMPLES; a longer turn is never peeked). */
  private retain(pcm: Int16Array): void {
    this.uttSamples += pcm.length;
    if (this.uttSamples <= MAX_KEPT_SAMPLES) this.uttAudio.push(pcm.slice());
    else this.uttAudio = [];
  }

  expect(expectation: string | undefined): void {
    for (const lane of this.lanes) lane.stream.expect(expectation);
  }

  cancel(): void {
    this.kept = undefined;
    this.peeked = false;
    this.uttAudio = [];
    this.uttSamples = 0;
    this.restingFed = 0;
    this.restingStopped = false;
    this.sustained.reset();
    for (const lane of this.lanes) cancelLane(lane);
  }

  close(): void {
    for (const lane of this.lanes) {
      lane.stream.close();
      lane.loop.close();
    }
  }

  idle(): Promise<void> {
    return Promise.all(this.lanes.flatMap((l) => [l.stream.idle(), l.loop.idle()])).then(() => undefined);
  }

  get backlogMs(): number {
    return Math.max(...this.lanes.flatMap((l) => [l.stream.backlogMs, l.loop.backlogMs]));
  }
}

/**
 * How sure a lane's sentence is: the LLR confidence, with the speech the sentence leaves unexplained counted as the
 * language choice counts it (a sentence fitted into a fraction of the sound, music as "no", off-topic speech as a
 * short question, is not sure), scaled down when its words are drawn out far slower than speech (steady noise as
 * "thanks"). Gated actions (hang-up, transfer, a form's "yes") need it high, so such sounds only ever get a question.
 */
export function sentenceConfidence(r: LaneResult, policy: CoveragePolicy & Pick<LanguagePolicy, 'minArticulationRate'>, calibration: LlrCalibration): number {
  const confidence = llrConfidence(languageScore(r, policy), calibration);
  const rate = r.wordPhones !== undefined && r.wordFrames ? r.wordPhones / (r.wordFrames / FRAMES_PER_SECOND) : undefined;
  return rate !== undefined && rate < policy.minArticulationRate ? confidence * (rate / policy.minArticulationRate) : confidence;
}

/** What sound is not speech, whatever sentence a grammar fits to it. */
interface SpeechTest {
  /** Phones per second under which it is a steady sound (DEFAULT_MIN_PHONE_RATE). */
  minPhoneRate: number;
  /** Held-spectrum share over which it is music (DEFAULT_MAX_SUSTAINED_SHARE). */
  maxSustainedShare: number;
  /** Loudness spread in dB under which it is steady noise (DEFAULT_MIN_LOUDNESS_SPREAD_DB). */
  minLoudnessSpreadDb: number;
}

/** What a turn's sound looks like as a whole (sustained-sound.ts), for SpeechTest. */
interface SoundShape {
  sustainedShare: number;
  /** Undefined for a sound too short to tell. */
  loudnessSpreadDb: number | undefined;
}

/** How a turn's language is chosen between the lanes' sentences (see chooseLanguage), and how sure a sentence is. */
export interface LanguagePolicy {
  /** Nats of belief per unit of score a lane falls below the best (DEFAULT_LANGUAGE_EVIDENCE_SCALE). */
  evidenceScale: number;
  /** Chance the caller changes language between two turns (DEFAULT_LANGUAGE_SWITCH_PROBABILITY). */
  switchProbability: number;
  /** Nats the call's default language starts ahead (DEFAULT_LANGUAGE_PRIOR). */
  prior: number;
  /** LLR cost of each share of speech a sentence leaves unexplained beyond the expected (DEFAULT_COVERAGE_PENALTY). */
  coveragePenalty: number;
  /** Share of the speech a sentence is expected to explain (DEFAULT_EXPECTED_COVERAGE). */
  expectedCoverage: number;
  /** Least score a sentence in another language needs to move the call (DEFAULT_SWITCH_FLOOR). */
  switchFloor: number;
  /** The same until the caller has been understood (DEFAULT_FIRST_SWITCH_FLOOR). */
  firstSwitchFloor: number;
  /** Phones per second under which a sentence's confidence is scaled down (DEFAULT_MIN_ARTICULATION_RATE). */
  minArticulationRate: number;
}

type CoveragePolicy = Pick<LanguagePolicy, 'coveragePenalty' | 'expectedCoverage'>;

/** A lane's score: its LLR, less the penalty for the speech its sentence leaves unexplained beyond the expected. */
export function languageScore(r: LaneResult, policy: CoveragePolicy): number {
  return (r.llr ?? -Infinity) - policy.coveragePenalty * Math.max(0, policy.expectedCoverage - (r.speechCoverage ?? 1));
}

/**
 * Which language the caller speaks, as a probability carried over the call's turns (a two-or-more-state forward
 * recursion): before each turn the belief leaks towards the other languages by the switch probability, then the
 * turn's evidence — how far each language's score falls below the best lane's — is folded in.
 */
export class LanguageBelief {
  /** Natural-log probability of each language, normalised. */
  private readonly logProb = new Map<string, number>();

  constructor(languages: readonly string[], defaultLanguage: string, private readonly policy: Pick<LanguagePolicy, 'evidenceScale' | 'switchProbability' | 'prior'>) {
    for (const language of languages) this.logProb.set(language, language === defaultLanguage ? policy.prior : 0);
    this.normalise();
  }

  /** A copy that can be moved without moving this one (a peek's decision). */
  clone(): LanguageBelief {
    const copy = Object.create(LanguageBelief.prototype) as LanguageBelief;
    Object.assign(copy, { policy: this.policy, logProb: new Map(this.logProb) });
    return copy;
  }

  /**
   * Folds one turn's lanes in (scores as languageScore gives them; a language without one heard no sentence); returns
   * the likeliest language now. A turn that only some languages decoded (the others resting, GrammarStream) leaves
   * the belief as it is: it tells nothing of how the languages compare, and ageing the belief on such turns alone
   * would wear a call's language down to a coin toss.
   */
  observe(scores: ReadonlyMap<string, number>, decoded?: ReadonlySet<string>): string {
    const languages = [...this.logProb.keys()];
    if (decoded !== undefined && languages.some((l) => !decoded.has(l))) return this.likeliest;
    if (languages.length > 1) {
      const stay = 1 - this.policy.switchProbability;
      const move = this.policy.switchProbability / (languages.length - 1);
      const before = new Map(this.logProb);
      for (const to of languages) {
        const p = languages.reduce((sum, from) => sum + Math.exp(before.get(from)!) * (from === to ? stay : move), 0);
        this.logProb.set(to, Math.log(p));
      }
    }
    const scoreOf = (language: string): number => Math.max(NO_SENTENCE_SCORE, scores.get(language) ?? NO_SENTENCE_SCORE);
    const top = Math.max(...languages.map(scoreOf));
    for (const language of languages) {
      const evidence = Math.max(-LANGUAGE_EVIDENCE_CLIP, scoreOf(language) - top) * this.policy.evidenceScale;
      this.logProb.set(language, this.logProb.get(language)! + evidence);
    }
    this.normalise();
    return this.likeliest;
  }

  get likeliest(): string {
    let best = '';
    let bestLog = -Infinity;
    for (const [language, log] of this.logProb) if (log > bestLog) [best, bestLog] = [language, log];
    return best;
  }

  /** Each language's probability, rounded (diagnostics). */
  odds(): Record<string, number> {
    return Object.fromEntries([...this.logProb].map(([language, log]) => [language, Math.round(Math.exp(log) * 1000) / 1000]));
  }

  private normalise(): void {
    const max = Math.max(...this.logProb.values());
    const total = Math.log([...this.logProb.values()].reduce((sum, log) => sum + Math.exp(log - max), 0)) + max;
    for (const [language, log] of this.logProb) this.logProb.set(language, log - total);
  }
}

/**
 * The turn's language and its sentence. Every lane with a score (a rejected sentence too: it still tells how well
 * the language fits) is evidence for the call's belief; the turn goes to the likeliest language, unless that is a
 * move away from the current one on a sentence below `switchFloor`. The turn is answered by that language's sentence
 * when the lane kept one (in grammar), and otherwise not understood, in that language.
 */
export function chooseLanguage(
  results: readonly LaneResult[],
  current: string,
  belief: LanguageBelief,
  policy: LanguagePolicy,
  decoded?: ReadonlySet<string>,
): { language: string; lane: LaneResult | undefined } {
  const scores = new Map<string, number>();
  for (const r of results) {
    // A lane whose own phone loop heard no speech in it says nothing of the language.
    if (r.llr !== undefined && Number.isFinite(r.llr) && r.rejected?.reason !== 'not-speech') scores.set(r.language, languageScore(r, policy));
  }
  const likeliest = belief.observe(scores, decoded);
  const language = likeliest === current || (scores.get(likeliest) ?? -Infinity) >= policy.switchFloor ? likeliest : current;
  return { language, lane: results.find((r) => r.language === language && r.inGrammar) };
}
