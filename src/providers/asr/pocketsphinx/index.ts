/**
 * Embedded streaming English ASR on CMU PocketSphinx (Debian's libpocketsphinx.so.3) via koffi.
 *
 * - One decoder per stream, taken from a pool of pre-built decoders (see pool.ts for why models
 *   cannot be shared), so createStream() is instant while a spare is ready.
 * - All heavy native calls (ps_init, ps_process_raw, ps_end_utt, final ps_get_hyp) run through
 *   koffi `.async` on worker threads; each stream serialises its calls through its own queue.
 * - The second (fwdflat) pass is off: it re-searches the whole utterance inside ps_end_utt,
 *   which would make finalize() cost grow with utterance length. The best-path pass stays on:
 *   it only walks the word lattice the streaming pass built (tens of ms) and is clearly more
 *   accurate; `decoderArgs: { '-bestpath': 'no' }` trades that for a few ms less.
 * - The model's live CMN starts from its `-cmninit` and adapts at each utterance end, so the
 *   first utterance on a fresh decoder is the least accurate. Pooled decoders keep the adapted
 *   mean across calls (the library has no public reset), which suits one telephone channel type.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { access } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import { INTERNAL_SAMPLE_RATE } from '../../../audio/format.js';
import type { AsrFinal, AsrPartial, AsrProvider, AsrStream, AsrStreamOptions, AsrWord } from '../types.js';
import {
  DEFAULT_LIBRARY,
  FRAMES_PER_SECOND,
  bindPocketSphinx,
  type CmnState,
  type PocketSphinxNative,
  type Ptr,
} from './native.js';
import { DecoderPool } from './pool.js';
import { decodeSlots, type DecodeStanding } from './scheduler.js';
import { GARBAGE_PREFIX, sentenceWords } from '../grammar/compile.js';
import { isWholeSentence, type SentenceStanding } from '../grammar/sentence-matcher.js';
import type { AgentGrammarAware, GrammarAware, GrammarSpec } from '../grammar/spec.js';
import {
  DEFAULT_SPANISH_MODEL_DIR,
  GrammarDecoders,
  type GrammarPoolStats,
  GrammarStream,
  acousticModel,
  modelPresent,
  type AcousticModel,
  type GrammarDecodingOptions,
} from './grammar.js';

export const DEFAULT_MODEL_DIR = '/usr/share/pocketsphinx/model/en-us';
const LANGUAGE = 'en';
/** Hypothesis is re-read at most once per this much decoded audio. */
const PARTIAL_INTERVAL_SAMPLES = (INTERNAL_SAMPLE_RATE * 100) / 1000;
/** Largest block per ps_process_raw: batches a backlog without starving partials. */
const MAX_CHUNK_SAMPLES = PARTIAL_INTERVAL_SAMPLES;
/** Undecoded audio beyond this (1 s) means the CPU is not keeping up. */
const BACKLOG_WARN_SAMPLES = INTERNAL_SAMPLE_RATE;

export interface PocketSphinxAsrOptions {
  /** Holds `en-us/` (acoustic model), `en-us.lm.bin` and `cmudict-en-us.dict`. */
  modelDir?: string;
  /** libpocketsphinx shared object (default: the soname, resolved by the dynamic loader). */
  libraryPath?: string;
  logger?: Logger;
  /** Ready decoders kept ahead of demand (default 1). Each holds ~95 MB. */
  spareDecoders?: number;
  /** Idle decoders kept after streams close (default 2); more are freed. */
  maxIdleDecoders?: number;
  /** Ready decoders per grammar pool (default: `spareDecoders`). Each holds ~5 MB. */
  grammarSpareDecoders?: number;
  /** Extra or overriding pocketsphinx arguments, e.g. `{ '-lw': '7' }` or a custom `-lm`/`-dict`. */
  decoderArgs?: Record<string, string>;
  /**
   * Don't build generic-LM decoders at load(): setGrammars() follows and builds grammar decoders instead
   * (the LM pool is built only if no grammar could be loaded).
   */
  lazyGenericLm?: boolean;
  /**
   * Grammar decoding (used once setGrammars() has compiled at least one grammar). Without it, or before, the
   * generic English LM decodes.
   */
  grammar?: GrammarDecodingOptions & {
    /** Directory of the Spanish model (cmusphinx-es-5.2); skipped, with a log line, when absent. */
    spanishModelDir?: string;
    /** Grammar languages to load (default: every spec whose model is present). */
    languages?: readonly string[];
  };
}

export class PocketSphinxAsr implements AsrProvider, GrammarAware, AgentGrammarAware {
  readonly name = 'pocketsphinx';
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: true };

  private readonly modelDir: string;
  private readonly libraryPath: string;
  private readonly logger: Logger | undefined;
  private readonly options: PocketSphinxAsrOptions;
  private loading: Promise<void> | undefined;
  private native: PocketSphinxNative | undefined;
  private pool: DecoderPool | undefined;
  private closed = false;
  private grammars: GrammarDecoders | undefined;
  /** Agent versions' own grammars (src/agents), by key, beside the default ones. */
  private readonly agentGrammars = new Map<string, GrammarDecoders>();

  constructor(options: PocketSphinxAsrOptions = {}) {
    this.options = options;
    this.modelDir = options.modelDir ?? DEFAULT_MODEL_DIR;
    this.libraryPath = options.libraryPath ?? DEFAULT_LIBRARY;
    this.logger = options.logger?.child({ provider: 'asr-pocketsphinx' });
  }

  /** Languages with a compiled grammar, else English (the generic LM). */
  get languages(): readonly string[] {
    const loaded = this.grammars?.loaded ?? [];
    return loaded.length > 0 ? loaded : [LANGUAGE];
  }

  /** Acoustic models present here, per language (English always; Spanish when its directory has it). */
  private acousticModels(): Map<string, AcousticModel> {
    const models = new Map<string, AcousticModel>();
    const wanted = this.options.grammar?.languages;
    const add = (language: string, model: AcousticModel): void => {
      if (wanted && !wanted.includes(language)) return;
      if (modelPresent(model)) models.set(language, model);
      else this.logger?.info({ language, hmm: model.hmm }, 'acoustic model not present; language not recognised');
    };
    add('en', acousticModel('en', this.modelDir));
    add('es', acousticModel('es', this.options.grammar?.spanishModelDir ?? process.env.POCKETSPHINX_ES_DIR ?? DEFAULT_SPANISH_MODEL_DIR));
    return models;
  }

  /** Compiles the agent's grammars; from then on streams decode against them (every language at once). */
  async setGrammars(specs: readonly GrammarSpec[]): Promise<void> {
    const grammars = (this.grammars ??= await this.grammarDecoders(this.logger));
    const native = this.native;
    if (!native || this.closed) throw new Error('PocketSphinxAsr closed');
    try {
      await grammars.set(specs);
    } finally {
      // No grammar (a compile error, or no model for any spec's language): the generic LM decodes.
      if (grammars.loaded.length === 0 && !this.pool) await this.buildLmPool(native);
    }
    if (grammars.loaded.length > 0) {
      // Grammar streams never use the LM decoders (~95 MB each): free them.
      this.pool?.close();
      this.pool = undefined;
    }
  }

  /** Grammar decoders on this engine (compiled by set()). Small (a few MB, tens of ms to build), so more can be kept ready than of the LM's. */
  private async grammarDecoders(logger: Logger | undefined): Promise<GrammarDecoders> {
    await this.load();
    if (!this.native || this.closed) throw new Error('PocketSphinxAsr closed');
    return new GrammarDecoders(
      this.native,
      this.acousticModels(),
      {
        spareDecoders: this.options.grammarSpareDecoders ?? this.options.spareDecoders,
        maxIdleDecoders: this.options.maxIdleDecoders,
        ...this.options.grammar,
      },
      logger,
    );
  }

  async setAgentGrammars(key: string, specs: readonly GrammarSpec[]): Promise<void> {
    const decoders = this.agentGrammars.get(key) ?? (await this.grammarDecoders(this.logger?.child({ grammar: key })));
    await decoders.set(specs);
    if (decoders.loaded.length === 0 || this.closed) {
      this.agentGrammars.delete(key);
      await decoders.close();
      if (this.closed) return;
      throw new Error(`no acoustic model for any language of ${key}`);
    }
    this.agentGrammars.set(key, decoders);
  }

  /** Agent versions with grammars compiled here (for status and tests). */
  get agentGrammarKeys(): string[] {
    return [...this.agentGrammars.keys()];
  }

  async dropAgentGrammars(key: string): Promise<void> {
    const decoders = this.agentGrammars.get(key);
    this.agentGrammars.delete(key);
    await decoders?.close();
  }

  forAgent(key: string): AsrProvider {
    const asr = this;
    const own = (): GrammarDecoders | undefined => {
      const decoders = asr.agentGrammars.get(key);
      return decoders && decoders.loaded.length > 0 && asr.native && !asr.closed ? decoders : undefined;
    };
    return {
      name: asr.name,
      capabilities: asr.capabilities,
      get languages() {
        return own()?.loaded ?? asr.languages;
      },
      load: () => asr.load(),
      // Without its own grammars (dropped, none compiled) the call decodes as the default agent's would.
      createStream: (options: AsrStreamOptions = {}) => own()?.createStream(options, asr.streamLogger(options)) ?? asr.createStream(options),
    };
  }

  /** Idle/leased decoder counts, for metrics and tests. */
  get poolStats(): { idle: number; leased: number } {
    return { idle: this.pool?.idleCount ?? 0, leased: this.pool?.leasedCount ?? 0 };
  }

  /** The same for each pool of the service-wide grammars (per language, band and search). */
  get grammarPoolStats(): GrammarPoolStats[] {
    return this.grammars?.poolStats ?? [];
  }

  load(): Promise<void> {
    // Idempotent; a failed load may be retried.
    this.loading ??= this.doLoad().catch((err: unknown) => {
      this.loading = undefined;
      throw err;
    });
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    const t0 = performance.now();
    const native = bindPocketSphinx(this.libraryPath);
    const libraryMs = performance.now() - t0;
    // Grammar mode builds its own small decoders in setGrammars(); the LM ones (~95 MB each) wait until needed.
    const decoderMs = this.options.lazyGenericLm ? 0 : await this.buildLmPool(native);
    if (this.closed) {
      this.pool?.close();
      return;
    }
    this.native = native;
    this.logger?.info(
      {
        library: native.libraryPath,
        modelDir: this.modelDir,
        libraryMs: Math.round(libraryMs),
        decoderMs: Math.round(decoderMs),
        genericLm: !this.options.lazyGenericLm,
        totalMs: Math.round(performance.now() - t0),
      },
      'pocketsphinx loaded',
    );
  }

  /** The generic-LM decoder pool (open vocabulary, English). Resolves with the first decoder's build time. */
  private async buildLmPool(native: PocketSphinxNative): Promise<number> {
    const extra = this.options.decoderArgs ?? {};
    const args = this.lmArgs();
    // Fail with a readable error rather than a bare ps_init failure.
    for (const flag of ['-hmm', '-lm', '-dict'] as const) {
      if (extra[flag] === undefined) await access(args[flag]);
    }
    const pool = this.lmPool(native);
    const ms = await pool.warm();
    this.pool = pool;
    return ms;
  }

  private lmArgs(): Record<string, string> {
    return {
      '-hmm': path.join(this.modelDir, 'en-us'),
      '-lm': path.join(this.modelDir, 'en-us.lm.bin'),
      '-dict': path.join(this.modelDir, 'cmudict-en-us.dict'),
      '-samprate': String(INTERNAL_SAMPLE_RATE),
      '-fwdflat': 'no',
      // Keep every frame so word times are offsets into the utterance (upstream VAD already segments).
      '-remove_silence': 'no',
      ...this.options.decoderArgs,
    };
  }

  private lmPool(native: PocketSphinxNative): DecoderPool {
    return new DecoderPool({
      native,
      args: Object.entries(this.lmArgs()).flat(),
      spare: Math.max(1, this.options.spareDecoders ?? 1),
      maxIdle: Math.max(0, this.options.maxIdleDecoders ?? 2),
      refillDelayMs: 3000,
      logger: this.logger,
    });
  }

  createStream(options: AsrStreamOptions = {}): PocketSphinxStream {
    if (this.native && !this.closed && this.grammars && this.grammars.loaded.length > 0) {
      return this.grammars.createStream(options, this.streamLogger(options));
    }
    if (this.native && !this.closed && !this.pool && this.options.lazyGenericLm) {
      // Grammar mode was expected but never set up (e.g. a wrapper that hides setGrammars): fall back to the
      // generic LM. The first stream waits for its decoder to be built.
      this.logger?.warn('no grammar was set: building generic-LM decoders on first use');
      this.pool = this.lmPool(this.native);
    }
    if (!this.native || !this.pool || this.closed) {
      throw new Error('PocketSphinxAsr: load() must complete before createStream() (or provider closed)');
    }
    if (options.language && !options.language.toLowerCase().startsWith(LANGUAGE)) {
      this.logger?.debug({ language: options.language }, 'pocketsphinx only decodes English');
    }
    return new PocketSphinxDecoderStream(this.native, this.pool, options, this.streamLogger(options));
  }

  /** The call's logger when the session gave one (its lines carry the call id), marked as this provider's. */
  streamLogger(options: AsrStreamOptions): Logger | undefined {
    return options.logger ? options.logger.child({ provider: 'asr-pocketsphinx' }) : this.logger;
  }

  async close(): Promise<void> {
    this.closed = true;
    // Streams still open return their decoders to the closed pool, which frees them.
    this.pool?.close();
    await Promise.all([this.grammars?.close(), ...[...this.agentGrammars.values()].map((g) => g.close())]);
    this.agentGrammars.clear();
  }
}

/** What a stream decoding against a compiled grammar needs to know about it. */
export interface LaneGrammar {
  /** Where the words stand among the grammar's sentences (a strict prefix, a whole one, one that can go on). */
  standing(text: string): SentenceStanding;
  /** Named searches a decoder can have besides the default one (expectations). */
  searches: ReadonlySet<string>;
  /**
   * A named search, compiled into a decoder when a call on it first needs it: its FSG file (with the decoders' `-lw`)
   * where the grammar has one, else (or if the file is gone, after a reload) its JSGF.
   */
  search(name: string): { fsgFile?: string; languageWeight: number; jsgf: string } | undefined;
  /** Phones in a dictionary word as the decoder names it (`thanks(2)`), for the sentence's articulation rate. */
  phoneCount?(word: string): number | undefined;
}

/** Details of a grammar lane's last final, for choosing between languages. */
export interface LaneResult {
  language: string;
  text: string;
  inGrammar: boolean;
  /** Share of the non-silence frames explained by sentence words (the rest by the garbage loop). */
  coverage: number;
  /** Path score per frame (log domain): only comparable within one acoustic model. */
  scorePerFrame: number;
  /** Log-likelihood ratio per frame against a free phone loop of the same model (set by the grammar stream). */
  llr?: number;
  /** The phone loop's own score per frame (same units): how speech-like the sound is for this model at all. */
  loopPerFrame?: number;
  /** Phones per second of audio in the phone loop's hypothesis (silence excluded). */
  phoneRate?: number;
  /** Frames decoded (the path's length). */
  frames?: number;
  /** False when the final search reached no final state and the best path before the end was a whole sentence. */
  reachedFinal?: boolean;
  /** Frames of the sentence's own words (not garbage, silence or noise fillers); unknown for a rescued path. */
  wordFrames?: number;
  /** Phones in the sentence's words as decoded (their pronunciations' lengths); with wordFrames, a speaking rate. */
  wordPhones?: number;
  /**
   * Sentence-word frames over the phone loop's speech frames (not SIL), capped at 1: how much of what was said
   * the sentence explains. Set by the grammar stream.
   */
  speechCoverage?: number;
  /** Share of the sound that holds one spectrum from frame to frame (sustained-sound.ts): music, not speech. */
  sustainedShare?: number;
  /** How far the sound's level moves, in dB (sustained-sound.ts): under a few dB, steady noise, not speech. */
  loudnessSpreadDb?: number;
  /** A sentence the grammar stream set aside, why, and (for a low likelihood) its confidence. */
  rejected?: { text: string; reason: 'not-speech' | 'low-llr'; confidence?: number };
}

/**
 * A running hypothesis as the turn detector reads it: its words and, under a grammar, whether they end a sentence —
 * a whole one with nothing after it still explained as garbage (`gbg_…`). Undefined when it has no words.
 */
export function partialFromHypothesis(
  hypothesis: string,
  language: string,
  grammar: Pick<LaneGrammar, 'standing'> | undefined,
): AsrPartial | undefined {
  const raw = hypothesis.trim();
  const text = grammar ? sentenceWords(raw).join(' ') : raw;
  if (text === '') return undefined;
  if (!grammar) return { text, language };
  const rawWords = raw.split(/\s+/);
  const standing = grammar.standing(text);
  const whole = isWholeSentence(standing) && !rawWords[rawWords.length - 1].startsWith(GARBAGE_PREFIX);
  return { text, language, complete: whole, ...(whole ? { continuable: standing === 'continuable' } : {}) };
}

/**
 * Two partials that tell the listener the same. The words alone are not enough: with a garbage loop the same words
 * can go from "still going on" (garbage after them) to a whole sentence, and the turn detector must hear that.
 */
export function samePartial(a: AsrPartial, b: AsrPartial | undefined): boolean {
  return b !== undefined && a.text === b.text && a.complete === b.complete && a.continuable === b.continuable;
}

/** Name of the search ps_init builds from `-jsgf`/`-lm`. */
export const DEFAULT_SEARCH = '_default';

type Command =
  | { kind: 'audio'; pcm: Int16Array; utt: number; at: number }
  | { kind: 'finalize'; resolve: (final: AsrFinal) => void; reject: (err: Error) => void; keep: boolean }
  | { kind: 'snapshot'; resolve: (final: AsrFinal) => void; reject: (err: Error) => void }
  | { kind: 'restart' }
  | { kind: 'close' };

/** One call's decoder. Every native call goes through `pump()`, one at a time, in push order. */
export class PocketSphinxDecoderStream implements AsrStream {
  private ps: Ptr | undefined;
  private readonly decoder: Promise<Ptr> | undefined;
  private readonly queue: Command[] = [];
  private pumping = false;
  private idleWaiters: Array<() => void> = [];
  private failure: Error | undefined;
  private closed = false;
  /** Caller-side utterance number: bumped by finalize()/cancel() so stale partials are dropped. */
  private utt = 0;
  /** Decoder-side state of the current utterance. */
  private started = false;
  private uttSamples = 0;
  private samplesSinceHyp = 0;
  private lastPartial: AsrPartial | undefined;
  /** Audio pushed but not yet decoded (or dropped). */
  private queuedSamples = 0;
  /** Of which a replay after a peek (decoded first, as it was pushed first). */
  private replaySamples = 0;
  private lastBacklogWarn = -Infinity;
  private readonly language: string;
  /** Search for the next utterance and the one the decoder has active. */
  private wantedSearch = DEFAULT_SEARCH;
  private activeSearch = DEFAULT_SEARCH;
  /** Last grammar final's details (grammar lanes only). */
  lastResult: LaneResult | undefined;
  /** Path score and frame count of the last final (for likelihood ratios between decoders). */
  lastScore: { score: number; frames: number } | undefined;
  /** The search this stream decodes with when no expectation is set. */
  private readonly defaultSearch: string;
  /**
   * The final of an utterance ended by endKeepingUtterance(), while no audio has come since: a finalize() now
   * answers it without decoding anything. The decoder itself has already started its next (empty) utterance.
   */
  private kept:
    | {
        final: AsrFinal;
        result: LaneResult | undefined;
        score: { score: number; frames: number } | undefined;
        /** The live CMN as the ended utterance left it, applied once the caller is known finished. */
        cmnAfter: CmnState | undefined;
      }
    | undefined;
  /** Grammar lanes: the live CMN as the current utterance found it, to decode it again from the same state. */
  private cmnAtStart: CmnState | undefined;

  constructor(
    private readonly native: PocketSphinxNative,
    private readonly pool: DecoderPool,
    private readonly options: AsrStreamOptions,
    private readonly logger: Logger | undefined,
    private readonly grammar?: LaneGrammar & { language: string },
    search: string = DEFAULT_SEARCH,
  ) {
    this.language = grammar?.language ?? LANGUAGE;
    this.defaultSearch = search;
    this.wantedSearch = search;
    this.ps = pool.tryAcquire();
    if (this.ps === undefined) {
      this.logger?.warn('no spare pocketsphinx decoder; this stream waits for one to be built');
      this.decoder = pool.acquire();
      // Surfaced through finalize(); avoid an unhandled rejection meanwhile.
      this.decoder.catch(() => undefined);
    }
  }

  /** `again`: audio this stream decoded before (a replay after a peek), a backlog by design, not a sign of overload. */
  push(pcm: Int16Array, again = false): void {
    if (this.closed || this.failure || pcm.length === 0) return;
    // Copy: callers may reuse their frame buffers while the decode is queued.
    this.queue.push({ kind: 'audio', pcm: pcm.slice(), utt: this.utt, at: performance.now() });
    this.queuedSamples += pcm.length;
    if (again) this.replaySamples += pcm.length;
    if (this.queuedSamples - this.replaySamples > BACKLOG_WARN_SAMPLES && performance.now() - this.lastBacklogWarn > 5000) {
      // CPU can't keep up (too many calls for the cores): finalize latency grows with the backlog.
      this.lastBacklogWarn = performance.now();
      this.logger?.warn({ backlogMs: Math.round(this.backlogMs) }, 'pocketsphinx decode falling behind');
    }
    void this.pump();
  }

  finalize(): Promise<AsrFinal> {
    if (this.closed) return Promise.resolve(emptyFinal(this.language));
    if (this.failure) return Promise.reject(this.failure);
    this.utt++;
    return new Promise<AsrFinal>((resolve, reject) => {
      this.queue.push({ kind: 'finalize', resolve, reject, keep: false });
      void this.pump();
    });
  }

  /**
   * The final as if the utterance ended now, for a caller who may go on (the grammar stream's peek()). The decoder
   * ends its utterance (only ps_end_utt gives a hypothesis that reaches a final state of the grammar) and starts an
   * empty one; a finalize() before any new audio answers this same final. If audio comes instead, the grammar stream
   * pushes the utterance's audio again first, so the words before the pause are decoded together with those after.
   */
  endKeepingUtterance(): Promise<AsrFinal> {
    if (this.closed) return Promise.resolve(emptyFinal(this.language));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<AsrFinal>((resolve, reject) => {
      this.queue.push({ kind: 'finalize', resolve, reject, keep: true });
      void this.pump();
    });
  }

  /**
   * The running hypothesis of the utterance so far, with its path score (`lastScore`), without ending it: the phone
   * loop's side of a peek. A free phone loop has no final state to reach, so its best path now is what its final
   * would be; left running, it never decodes the utterance again when the caller goes on (the grammar lanes must).
   */
  snapshot(): Promise<AsrFinal> {
    if (this.closed) return Promise.resolve(emptyFinal(this.language));
    if (this.failure) return Promise.reject(this.failure);
    return new Promise<AsrFinal>((resolve, reject) => {
      this.queue.push({ kind: 'snapshot', resolve, reject });
      void this.pump();
    });
  }

  cancel(): void {
    if (this.closed || this.failure) return;
    this.utt++;
    this.dropQueuedAudio();
    this.queue.push({ kind: 'restart' });
    void this.pump();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.utt++;
    this.dropQueuedAudio();
    this.queue.push({ kind: 'close' });
    void this.pump();
  }

  /** Grammar lanes: weight up an expectation's sentences from the next utterance on (undefined: none). */
  expect(expectation: string | undefined): void {
    this.wantedSearch = expectation !== undefined && this.grammar?.searches.has(expectation) ? expectation : this.defaultSearch;
    // The next utterance starts right after a finalize: restart it idle so the new search applies.
    if (!this.closed && !this.failure && this.wantedSearch !== this.activeSearch && this.uttSamples === 0 && this.queuedSamples === 0) {
      this.queue.push({ kind: 'restart' });
      void this.pump();
    }
  }

  /** Audio pushed but not decoded yet, ms: finalize() has to decode this before it can answer. */
  get backlogMs(): number {
    return (this.queuedSamples * 1000) / INTERNAL_SAMPLE_RATE;
  }

  /** Resolves once every queued command has been decoded (tests, back-pressure). */
  idle(): Promise<void> {
    if (!this.pumping && this.queue.length === 0) return Promise.resolve();
    return new Promise<void>((resolve) => this.idleWaiters.push(resolve));
  }

  /** Drops audio of the utterance in progress; audio already owed to a pending finalize() stays. */
  private dropQueuedAudio(): void {
    let keep = this.queue.length;
    while (keep > 0) {
      const cmd = this.queue[keep - 1];
      if (cmd.kind !== 'audio') break;
      this.queuedSamples -= cmd.pcm.length;
      keep--;
    }
    this.queue.length = keep;
    this.replaySamples = Math.min(this.replaySamples, this.queuedSamples);
  }

  private async pump(): Promise<void> {
    if (this.pumping) return;
    this.pumping = true;
    try {
      if (this.ps === undefined && this.queue.length > 0) {
        try {
          this.ps = await this.decoder;
        } catch (err) {
          this.fail(err);
          return;
        }
      }
      while (this.queue.length > 0 && this.ps !== undefined) {
        const cmd = this.queue[0];
        try {
          if (cmd.kind === 'audio') {
            const release = await decodeSlots.acquire(this.standing);
            try {
              // The queue may have been cancelled meanwhile; frames that came meanwhile join this step.
              if (this.queue[0]?.kind === 'audio' && this.ps !== undefined) await this.decodeChunk(this.ps, this.takeChunk());
            } finally {
              release();
            }
          } else {
            this.queue.shift();
            await this.run(this.ps, cmd);
          }
        } catch (err) {
          const error = asError(err);
          this.logger?.error({ err: error, cmd: cmd.kind }, 'pocketsphinx decode failed');
          if (cmd.kind === 'finalize' || cmd.kind === 'snapshot') cmd.reject(error);
          this.resetUtterance();
        }
      }
    } finally {
      this.pumping = false;
      if (this.queue.length === 0) for (const w of this.idleWaiters.splice(0)) w();
    }
  }

  /** How this decoder stands for the next place on the cores: awaited, or since when its audio has waited. */
  private readonly standing = (): DecodeStanding => {
    const head = this.queue[0];
    return {
      awaited: this.queue.some((cmd) => cmd.kind === 'finalize' || cmd.kind === 'snapshot'),
      since: head?.kind === 'audio' ? head.at : performance.now(),
    };
  };

  /** Joins consecutive queued frames (same utterance by construction) into one native call. */
  private takeChunk(): { pcm: Int16Array; utt: number } {
    const first = this.queue[0];
    if (first.kind !== 'audio') throw new Error('unreachable');
    if (first.pcm.length >= MAX_CHUNK_SAMPLES) {
      const pcm = first.pcm.subarray(0, MAX_CHUNK_SAMPLES);
      if (first.pcm.length === MAX_CHUNK_SAMPLES) this.queue.shift();
      else first.pcm = first.pcm.subarray(MAX_CHUNK_SAMPLES);
      return { pcm, utt: first.utt };
    }
    const parts: Int16Array[] = [];
    let n = 0;
    while (this.queue.length > 0) {
      const cmd = this.queue[0];
      if (cmd.kind !== 'audio' || n + cmd.pcm.length > MAX_CHUNK_SAMPLES) break;
      parts.push(cmd.pcm);
      n += cmd.pcm.length;
      this.queue.shift();
    }
    if (parts.length === 1) return { pcm: parts[0], utt: first.utt };
    const pcm = new Int16Array(n);
    let offset = 0;
    for (const p of parts) {
      pcm.set(p, offset);
      offset += p.length;
    }
    return { pcm, utt: first.utt };
  }

  private async decodeChunk(ps: Ptr, chunk: { pcm: Int16Array; utt: number }): Promise<void> {
    this.kept = undefined;
    await this.ensureStarted(ps);
    this.queuedSamples -= chunk.pcm.length;
    this.replaySamples = Math.max(0, this.replaySamples - chunk.pcm.length);
    const rc = await this.native.processRaw(ps, chunk.pcm);
    if (rc < 0) this.logger?.warn({ rc }, 'ps_process_raw failed');
    this.uttSamples += chunk.pcm.length;
    this.samplesSinceHyp += chunk.pcm.length;
    const onPartial = this.options.onPartial;
    // Only while the caller is still in this utterance (no finalize/cancel/close since).
    if (!onPartial || chunk.utt !== this.utt || this.samplesSinceHyp < PARTIAL_INTERVAL_SAMPLES) return;
    this.samplesSinceHyp = 0;
    const partial = partialFromHypothesis(this.native.hypSync(ps), this.language, this.grammar);
    if (partial === undefined || samePartial(partial, this.lastPartial)) return;
    this.lastPartial = partial;
    try {
      onPartial(partial);
    } catch (err) {
      this.logger?.warn({ err: asError(err) }, 'onPartial threw');
    }
  }

  private async run(ps: Ptr, cmd: Exclude<Command, { kind: 'audio' }>): Promise<void> {
    switch (cmd.kind) {
      case 'finalize': {
        if (this.kept) {
          // Nothing was decoded since the utterance was ended and kept: its final stands.
          const kept = this.kept;
          if (!cmd.keep) {
            this.kept = undefined;
            // The caller did stop there: the utterance adapts the mean as an ended one does.
            if (kept.cmnAfter && this.native.setCmnState(ps, kept.cmnAfter)) this.cmnAtStart = kept.cmnAfter;
          }
          this.lastResult = kept.result && { ...kept.result };
          this.lastScore = kept.score;
          cmd.resolve({ ...kept.final });
          return;
        }
        await this.ensureStarted(ps);
        // This pocketsphinx's final grammar search ignores the null transition into the final state, so a sentence
        // that is also the start of a longer one ("goodbye" / "goodbye see you") can end "in no final state" when
        // the trailing silence sat on the inner state. The best path just before the end still says it.
        const beforeEnd = this.grammar ? this.native.hypScoreSync(ps) : undefined;
        // Ending an utterance folds it into the live cepstral mean. An utterance only peeked at may go on and be
        // decoded again: it must start from the state it started from, as an utterance never peeked at does.
        this.started = false;
        const rc = await this.native.endUtt(ps);
        if (rc < 0) throw new Error(`ps_end_utt failed (${rc})`);
        let cmnAfter: CmnState | undefined;
        if (cmd.keep && this.cmnAtStart) {
          cmnAfter = this.native.getCmnState(ps);
          if (!this.native.setCmnState(ps, this.cmnAtStart)) cmnAfter = undefined;
        }
        const raw = normaliseText(await this.native.hyp(ps));
        this.lastScore = this.pathScore(ps);
        const audioMs = (this.uttSamples * 1000) / INTERNAL_SAMPLE_RATE;
        if (this.grammar) {
          const rescued = raw === '' && beforeEnd ? this.completeSentence(beforeEnd.text) : undefined;
          if (rescued && beforeEnd) {
            this.lastScore = { score: beforeEnd.score, frames: this.lastScore.frames };
            rescued.scorePerFrame = beforeEnd.score / this.lastScore.frames;
            rescued.reachedFinal = false;
          }
          const result = rescued ?? this.grammarResult(ps, raw);
          result.frames = this.lastScore.frames;
          this.lastResult = result;
          const words = result.inGrammar ? this.words(ps) : [];
          this.resetUtterance();
          this.settle(cmd, {
            text: result.text,
            language: this.language,
            audioMs,
            inGrammar: result.inGrammar,
            ...(result.inGrammar ? { continuable: this.grammar.standing(result.text) === 'continuable' } : {}),
            confidence: result.inGrammar ? result.coverage : 0,
            ...(words.length > 0 ? { words } : {}),
          }, cmnAfter);
        } else {
          const words = raw ? this.words(ps) : [];
          this.resetUtterance();
          this.settle(cmd, { text: raw, language: LANGUAGE, audioMs, ...(words.length > 0 ? { words } : {}) }, cmnAfter);
        }
        // Start the next utterance now so the first frame after an endpoint doesn't pay for it.
        if (!this.closed) await this.ensureStarted(ps);
        return;
      }
      case 'snapshot': {
        const audioMs = (this.uttSamples * 1000) / INTERNAL_SAMPLE_RATE;
        if (!this.started) {
          this.lastScore = undefined;
          cmd.resolve(emptyFinal(this.language));
          return;
        }
        const raw = normaliseText(this.native.hypSync(ps));
        this.lastScore = this.pathScore(ps);
        const words = raw ? this.words(ps) : [];
        cmd.resolve({ text: raw, language: this.language, audioMs, ...(words.length > 0 ? { words } : {}) });
        return;
      }
      case 'restart':
        this.kept = undefined;
        await this.endIfStarted(ps);
        this.resetUtterance();
        await this.ensureStarted(ps);
        return;
      case 'close':
        this.queue.length = 0;
        this.queuedSamples = 0;
        this.replaySamples = 0;
        try {
          await this.endIfStarted(ps);
          // Pooled decoders go back on their default search.
          if (this.activeSearch !== this.defaultSearch && this.native.setSearch(ps, this.defaultSearch) >= 0) this.activeSearch = this.defaultSearch;
        } finally {
          this.ps = undefined;
          this.pool.release(ps);
        }
        return;
    }
  }

  /**
   * Answers a finalize; one that keeps the utterance also remembers its final (see endKeepingUtterance), and the live
   * CMN the ended utterance left (`cmnAfter`), to apply once the caller is known finished.
   */
  private settle(cmd: Extract<Command, { kind: 'finalize' }>, final: AsrFinal, cmnAfter: CmnState | undefined): void {
    if (cmd.keep) this.kept = { final: { ...final }, result: this.lastResult && { ...this.lastResult }, score: this.lastScore, cmnAfter };
    cmd.resolve(final);
  }

  /** The best path's score and the frames it covers (at least one), for per-frame likelihood ratios. */
  private pathScore(ps: Ptr): { score: number; frames: number } {
    return { score: this.native.hypScoreSync(ps).score, frames: Math.max(1, this.native.nFrames(ps)) };
  }

  /** A best path that is a whole sentence of the grammar (no garbage in it) as a lane result, else undefined. */
  private completeSentence(rawHyp: string): LaneResult | undefined {
    const raw = normaliseText(rawHyp);
    if (!this.grammar || raw === '' || raw.split(' ').some((w) => w.startsWith(GARBAGE_PREFIX))) return undefined;
    const text = sentenceWords(raw).join(' ');
    if (!isWholeSentence(this.grammar.standing(text))) return undefined;
    return { language: this.language, text, inGrammar: true, coverage: 1, scorePerFrame: 0 };
  }

  /** Splits the grammar hypothesis into sentence and garbage frames. */
  private grammarResult(ps: Ptr, raw: string): LaneResult {
    let sentenceFrames = 0;
    let garbageFrames = 0;
    let phones: number | undefined = 0;
    for (const seg of raw ? this.native.segments(ps) : []) {
      const frames = seg.endFrame - seg.startFrame + 1;
      if (seg.word.startsWith(GARBAGE_PREFIX)) garbageFrames += frames;
      else if (!/^[<[+]/.test(seg.word)) {
        sentenceFrames += frames;
        const n = this.grammar?.phoneCount?.(seg.word);
        phones = n === undefined || phones === undefined ? undefined : phones + n;
      }
    }
    const text = sentenceWords(raw).join(' ');
    const { score, frames } = this.pathScore(ps);
    const speech = sentenceFrames + garbageFrames;
    return {
      language: this.language,
      text,
      inGrammar: text !== '',
      coverage: speech > 0 ? sentenceFrames / speech : 0,
      scorePerFrame: score / frames,
      reachedFinal: text !== '',
      wordFrames: sentenceFrames,
      ...(phones !== undefined ? { wordPhones: phones } : {}),
    };
  }

  private words(ps: Ptr): AsrWord[] {
    const msPerFrame = 1000 / FRAMES_PER_SECOND;
    const words: AsrWord[] = [];
    for (const seg of this.native.segments(ps)) {
      // Fillers: <s>, </s>, <sil>, [NOISE], ++GARBAGE++ ..., and the grammar's garbage phones.
      if (/^[<[+]/.test(seg.word) || seg.word.startsWith(GARBAGE_PREFIX)) continue;
      words.push({
        word: seg.word.replace(/\(\d+\)$/, ''),
        startMs: seg.startFrame * msPerFrame,
        endMs: (seg.endFrame + 1) * msPerFrame,
      });
    }
    return words;
  }

  private async ensureStarted(ps: Ptr): Promise<void> {
    if (this.started) return;
    if (this.wantedSearch !== this.activeSearch) await this.ensureSearch(ps, this.wantedSearch);
    if (this.wantedSearch !== this.activeSearch) {
      const rc = this.native.setSearch(ps, this.wantedSearch);
      if (rc < 0) this.logger?.warn({ search: this.wantedSearch }, 'ps_set_search failed');
      else this.activeSearch = this.wantedSearch;
    }
    // Only grammar lanes peek (and so may decode an utterance again).
    this.cmnAtStart = this.grammar ? this.native.getCmnState(ps) : undefined;
    const rc = await this.native.startUtt(ps);
    if (rc < 0) throw new Error(`ps_start_utt failed (${rc})`);
    this.started = true;
  }

  /**
   * Compiles an expectation's search into this decoder unless it has it (pooled decoders keep theirs). Runs when the
   * agent's question sets the expectation, while the question is still being spoken, so the caller never waits.
   */
  private async ensureSearch(ps: Ptr, name: string): Promise<void> {
    const known = this.pool.searchesOf(ps);
    if (name === this.defaultSearch || known.has(name)) return;
    const source = this.grammar?.search(name);
    if (source === undefined) return;
    const t0 = performance.now();
    let rc = source.fsgFile !== undefined ? await this.native.setFsgFile(ps, name, source.fsgFile, source.languageWeight) : -1;
    if (rc < 0) rc = await this.native.setJsgfString(ps, name, source.jsgf);
    if (rc < 0) {
      this.logger?.warn({ search: name }, 'expectation search did not compile; decoding with the whole grammar');
      return;
    }
    known.add(name);
    this.logger?.debug({ search: name, ms: Math.round(performance.now() - t0) }, 'expectation search compiled');
  }

  private async endIfStarted(ps: Ptr): Promise<void> {
    if (!this.started) return;
    this.started = false;
    await this.native.endUtt(ps);
  }

  private resetUtterance(): void {
    this.uttSamples = 0;
    this.samplesSinceHyp = 0;
    this.lastPartial = undefined;
  }

  /** No decoder could be had: fail pending finalizes, ignore further audio. */
  private fail(err: unknown): void {
    this.failure = asError(err);
    this.logger?.error({ err: this.failure }, 'pocketsphinx stream has no decoder');
    for (const cmd of this.queue.splice(0)) {
      if (cmd.kind === 'finalize') cmd.reject(this.failure);
    }
    this.queuedSamples = 0;
    this.replaySamples = 0;
  }
}

function normaliseText(hyp: string): string {
  return hyp.replace(/\s+/g, ' ').trim();
}

function emptyFinal(language: string = LANGUAGE): AsrFinal {
  return { text: '', language, audioMs: 0 };
}

function asError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}

/** What createStream() returns: one decoder on the generic LM, or one per grammar language. */
export type PocketSphinxStream = PocketSphinxDecoderStream | GrammarStream;
