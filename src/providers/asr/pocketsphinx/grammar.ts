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
import { compileGrammar, loadDictionary, type CompileOptions, type CompiledGrammar } from '../grammar/compile.js';
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
/** LLR margin (same units) another language needs to take the turn from the current one. */
export const DEFAULT_STICKINESS = 0.2;
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
 * The least (coverage-penalised) LLR with which a turn may switch away from the current language (the one the
 * caller spoke last, else the call's default): weaker evidence keeps the language (the turn is then heard in it, or not understood). −3 is a confidence of 0.5
 * (DEFAULT_LLR_MID). Measured: German speech forced onto a Spanish sentence −3.3 (test/asr-grammar.test.ts); the
 * right language's sentence −3.2 to −1.1 on a Spanish phone line, −3 to −1 at 16 kHz (loadtest/asr-accuracy.ts),
 * so a caller who switches language mid-call on a poor line may need a clearer turn to be followed.
 */
export const DEFAULT_SWITCH_FLOOR = -3;
/**
 * The same floor while the current language is only the call's default (the caller has not spoken it yet): a weaker
 * prior. −3.4 is a confidence of 0.2: a Spanish first turn through the phone channel scores −3.1 against a
 * misheard English sentence (loadtest/asr-accuracy.ts --trace); an English one misheard by the English model and
 * forced onto a Spanish closing phrase −3.6.
 */
export const DEFAULT_FIRST_SWITCH_FLOOR = -3.4;

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

export interface LlrCalibration {
  mid: number;
  scale: number;
}

export function llrConfidence(llr: number | undefined, c: LlrCalibration): number {
  if (llr === undefined || !Number.isFinite(llr)) return 0;
  return 1 / (1 + Math.exp(-(llr - c.mid) / c.scale));
}

export interface GrammarDecodingOptions extends CompileOptions {
  /** LLR margin another language needs over the session's current one to take the turn. */
  stickiness?: number;
  /** LLR cost of speech a sentence leaves unexplained (see DEFAULT_COVERAGE_PENALTY, DEFAULT_EXPECTED_COVERAGE). */
  coveragePenalty?: number;
  expectedCoverage?: number;
  /** Least score with which a turn leaves a language the caller has spoken (see DEFAULT_SWITCH_FLOOR). */
  switchFloor?: number;
  /** The same, from the call's default language before the caller has spoken it (DEFAULT_FIRST_SWITCH_FLOOR). */
  firstSwitchFloor?: number;
  /** Confidence under which a lane's sentence counts as out of grammar (see DEFAULT_MIN_CONFIDENCE). */
  minConfidence?: number;
  /** Phones per second under which a sound is not speech (see DEFAULT_MIN_PHONE_RATE). */
  minPhoneRate?: number;
  /** Share of held spectra above which a sound is not speech: music (see DEFAULT_MAX_SUSTAINED_SHARE). */
  maxSustainedShare?: number;
  /** Articulation rate under which a sentence's confidence is scaled down (see DEFAULT_MIN_ARTICULATION_RATE). */
  minArticulationRate?: number;
  /** Confidence calibration (see llrConfidence). */
  llrMid?: number;
  llrScale?: number;
  /** Ready decoders per language. */
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
}

/** Name of the phone-loop search in the reference decoders. */
export const PHONE_LOOP_SEARCH = 'phone_loop';
/** log(1.0001): pocketsphinx scores are integers in this log base. */
const LOG_BASE = Math.log(1.0001);

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
        const grammar = await compileGrammar(spec, dictionary, this.options, (msg, data) => this.logger?.info(data, msg));
        const dictFile = path.join(dir, `${language}.dict`);
        const jsgfFile = path.join(dir, `${language}.jsgf`);
        await writeFile(dictFile, grammar.dict);
        await writeFile(jsgfFile, grammar.jsgf);
        const args: Record<string, string> = {
          '-hmm': model.hmm,
          '-dict': dictFile,
          '-jsgf': jsgfFile,
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
          const { '-jsgf': _jsgf, ...loopArgs } = decoderArgs;
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
        const lane: LanguageDecoders = { language, grammar, pool, loopPool, searches, phoneCounts };
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
      stickiness: this.options.stickiness ?? DEFAULT_STICKINESS,
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
    }, this.options.minConfidence ?? DEFAULT_MIN_CONFIDENCE, logger);
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
 * own worker-thread queue, so they decode in parallel); at the endpoint the best in-grammar result wins.
 */
export class GrammarStream implements AsrStream {
  private readonly lanes: Array<{ language: string; stream: PocketSphinxDecoderStream; loop: PocketSphinxDecoderStream }>;
  /** The session's current language: its partials are shown, and it wins close calls. */
  private current: string;
  /** Whether the caller has spoken `current` yet: before that it is only the service's default, with no claim. */
  private heard = false;
  /** Every lane's details of the last final (diagnostics: loadtest/asr-accuracy.ts --trace). */
  lastLanes: readonly LaneResult[] = [];
  /** The utterance's held-spectrum share, measured on the audio itself (the same for every lane). */
  private readonly sustained = new SustainedSoundMeter();

  constructor(
    native: PocketSphinxNative,
    languages: readonly LanguageDecoders[],
    private readonly options: AsrStreamOptions,
    private readonly policy: LanguagePolicy,
    private readonly calibration: LlrCalibration,
    private readonly speechTest: SpeechTest,
    private readonly minConfidence: number,
    private readonly logger: Logger | undefined,
  ) {
    const requested = options.language ? primary(options.language) : undefined;
    this.current = languages.find((l) => l.language === requested)?.language ?? languages[0].language;
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
              if (l.language === this.current) options.onPartial?.(partial);
            },
          },
          logger,
          {
            language: l.language,
            isComplete: (text) => l.grammar.isComplete(text),
            searches: l.searches,
            searchJsgf: (name) => l.grammar.expectationJsgf[name],
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
    this.sustained.push(pcm);
    for (const lane of this.lanes) {
      lane.stream.push(pcm);
      lane.loop.push(pcm);
    }
  }

  async finalize(): Promise<AsrFinal> {
    // Taken now: audio pushed while the lanes finish belongs to the next utterance.
    const sustainedShare = this.sustained.share();
    this.sustained.reset();
    const [finals, loopFinals] = await Promise.all([
      Promise.all(this.lanes.map((l) => l.stream.finalize())),
      Promise.all(this.lanes.map((l) => l.loop.finalize())),
    ]);
    const music = sustainedShare > this.speechTest.maxSustainedShare;
    const results = this.lanes.map((l, i) => {
      const detail = l.stream.lastResult;
      const g = l.stream.lastScore;
      const ref = l.loop.lastScore;
      if (detail?.inGrammar && g && ref) {
        // Log-likelihood ratio per frame of the grammar path against the free phone loop (≤ 0 in practice),
        // in thousandths: near 0 the grammar explains the sound as well as any phone sequence could.
        detail.llr = (1000 * (g.score - ref.score) * LOG_BASE) / Math.max(g.frames, ref.frames);
        detail.loopPerFrame = (1000 * ref.score * LOG_BASE) / ref.frames;
        detail.phoneRate = phoneRate(loopFinals[i].text, ref.frames);
        const said = speechFrames(loopFinals[i]);
        if (detail.wordFrames !== undefined && said > 0) detail.speechCoverage = Math.min(1, detail.wordFrames / said);
        detail.sustainedShare = sustainedShare;
        // A grammar can fit a steady sound, or a melody, as well as a phone loop can (high LLR): reject what is not
        // speech. And a sentence forced onto speech it does not match (far below the phone loop, or fitted into a
        // fraction of it with fillers taking the rest) is no result either.
        const notSpeech = detail.phoneRate < this.speechTest.minPhoneRate || music;
        if (notSpeech || llrConfidence(languageScore(detail, this.policy), this.calibration) < this.minConfidence) {
          detail.rejected = { text: detail.text, reason: notSpeech ? 'not-speech' : 'low-llr' };
          detail.inGrammar = false;
          detail.text = '';
        }
      }
      return { final: finals[i], detail };
    });
    this.lastLanes = results.map((r) => r.detail).filter((d): d is LaneResult => d !== undefined);
    // Until the caller has spoken a language, the call's default is a weaker prior: no margin, a lower floor.
    const best = chooseLanguage(this.lastLanes, this.current, this.heard ? this.policy : { ...this.policy, stickiness: 0, switchFloor: this.policy.firstSwitchFloor });
    const winner = best ? results.find((r) => r.detail === best) : undefined;
    this.logger?.debug({ lanes: results.map((r) => r.detail), chosen: best?.language }, 'grammar lanes');
    if (!winner) {
      // Rejected: tell speech the agent did not understand (it deserves an answer) from sound that is not speech.
      const speech = !music && loopFinals.some((loop, i) => phoneRate(loop.text, this.lanes[i].loop.lastScore?.frames) >= this.speechTest.minPhoneRate);
      return { text: '', language: this.current, audioMs: finals[0]?.audioMs ?? 0, inGrammar: false, confidence: 0, outOfDomain: speech };
    }
    this.current = winner.final.language;
    this.heard = true;
    return { ...winner.final, confidence: best ? sentenceConfidence(best, this.policy, this.calibration) : 0 };
  }

  expect(expectation: string | undefined): void {
    for (const lane of this.lanes) lane.stream.expect(expectation);
  }

  cancel(): void {
    this.sustained.reset();
    for (const lane of this.lanes) {
      lane.stream.cancel();
      lane.loop.cancel();
    }
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
}

/** How a turn's language is chosen between the lanes' sentences (see chooseLanguage), and how sure a sentence is. */
export interface LanguagePolicy {
  /** LLR margin another language needs over the current one (DEFAULT_STICKINESS). */
  stickiness: number;
  /** LLR cost of each share of speech a sentence leaves unexplained beyond the expected (DEFAULT_COVERAGE_PENALTY). */
  coveragePenalty: number;
  /** Share of the speech a sentence is expected to explain (DEFAULT_EXPECTED_COVERAGE). */
  expectedCoverage: number;
  /** Least score a sentence in another language needs to take the turn (DEFAULT_SWITCH_FLOOR). */
  switchFloor: number;
  /** The floor while the current language is only the call's default (DEFAULT_FIRST_SWITCH_FLOOR). */
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
 * The best in-grammar lane by likelihood ratio against its own phone loop (comparable across acoustic models,
 * unlike raw scores), penalised for the speech its sentence leaves to fillers. The current language keeps the turn
 * unless another scores more than `stickiness` better and at least `switchFloor`; undefined when no lane has a
 * sentence, or when only another language has one and it is below the floor (the turn stays in the current
 * language, not understood).
 */
export function chooseLanguage(results: readonly LaneResult[], current: string, policy: LanguagePolicy): LaneResult | undefined {
  const inGrammar = results.filter((r) => r.inGrammar);
  if (inGrammar.length === 0) return undefined;
  const score = (r: LaneResult): number => languageScore(r, policy);
  const best = [...inGrammar].sort((a, b) => score(b) - score(a))[0];
  if (best.language === current) return best;
  const mine = inGrammar.find((r) => r.language === current);
  const clear = score(best) >= policy.switchFloor && (!mine || score(best) - score(mine) > policy.stickiness);
  return clear ? best : mine;
}
