/**
 * koffi binding to the libpocketsphinx installed by Debian (0.8+5prealpha, soname .so.3).
 * That version configures decoders through sphinxbase's cmd_ln (`ps_args` + `cmd_ln_parse_r`),
 * not the pocketsphinx 5.0 `ps_config_*` API, so only the former is bound.
 */
import { existsSync } from 'node:fs';
import koffi, { type LibraryHandle } from 'koffi';

/** Opaque C pointer (koffi 3 represents pointers as BigInt). */
export type Ptr = bigint;

/** A bound C function with its koffi `.async` (runs on a worker thread, result via callback). */
interface NativeFn<A extends unknown[], R> {
  (...args: A): R;
  async(...args: [...A, (err: unknown, result: R) => void]): void;
}

export const DEFAULT_LIBRARY = 'libpocketsphinx.so.3';
const SPHINXBASE_LIBRARY = 'libsphinxbase.so.3';
/** Feature frames per second (`-frate` default); segment frame indices are in these units. */
export const FRAMES_PER_SECOND = 100;

export interface PocketSphinxNative {
  readonly libraryPath: string;
  /** Builds a decoder on a worker thread (the slow part: AM, dictionary, LM). Resolves 0n on failure. */
  initDecoder(args: readonly string[]): Promise<Ptr>;
  /** Frees on a worker thread; fire and forget. */
  freeDecoder(ps: Ptr): void;
  /** Starts an utterance; word times restart at 0. */
  startUtt(ps: Ptr): Promise<number>;
  processRaw(ps: Ptr, pcm: Int16Array): Promise<number>;
  endUtt(ps: Ptr): Promise<number>;
  /** Best hypothesis on a worker thread (after end_utt it may run the lattice best-path search). */
  hyp(ps: Ptr): Promise<string>;
  /** Best hypothesis, synchronous: cheap mid-utterance (a back-trace of the current best path). */
  hypSync(ps: Ptr): string;
  /** Best hypothesis with its path score (log domain, more negative = worse), synchronous. */
  hypScoreSync(ps: Ptr): { text: string; score: number };
  /** Adds a named JSGF search (grammar text) on a worker thread; 0 on success. Call between utterances. */
  setJsgfString(ps: Ptr, name: string, jsgf: string): Promise<number>;
  /**
   * Adds a named search from an FSG file (grammar/fsg.ts) on a worker thread; 0 on success. `languageWeight` must be
   * the decoder's `-lw`, as ps_init applies it to `-fsg`. Call between utterances.
   */
  setFsgFile(ps: Ptr, name: string, file: string, languageWeight: number): Promise<number>;
  /** Adds a named phone-loop search (all phones, no phone LM) on a worker thread; 0 on success. */
  setAllphone(ps: Ptr, name: string): Promise<number>;
  /** Activates a named search for the next utterance; 0 on success. */
  setSearch(ps: Ptr, name: string): number;
  /** Frames decoded in the current/last utterance. */
  nFrames(ps: Ptr): number;
  /** Word segmentation of the best hypothesis, frame indices at FRAMES_PER_SECOND. */
  segments(ps: Ptr): Array<{ word: string; startFrame: number; endFrame: number }>;
  /**
   * The front end's live cepstral mean (c0…), or undefined where this build's layout is not the one expected.
   * Live CMN carries over between utterances and calls; `setCmn` puts a pooled decoder back to its prior.
   */
  getCmn(ps: Ptr): Float32Array | undefined;
  setCmn(ps: Ptr, mean: Float32Array): boolean;
  /**
   * The live CMN's whole state: the mean, and the running sum and frame count it is recomputed from. `setCmn` seeds
   * those as 500 frames of the mean it is given, a different state from the one an utterance started in, and the
   * decode depends on it; restoring a snapshot puts the front end back exactly (undefined where the layout differs).
   */
  getCmnState(ps: Ptr): CmnState | undefined;
  setCmnState(ps: Ptr, state: CmnState): boolean;
}

export interface CmnState {
  mean: Float32Array;
  sum: Float32Array;
  frames: number;
}

function promisify<A extends unknown[], R>(fn: NativeFn<A, R>, ...args: A): Promise<R> {
  return new Promise<R>((resolve, reject) => {
    fn.async(...args, (err: unknown, result: R) => {
      if (err) reject(err instanceof Error ? err : new Error(String(err)));
      else resolve(result);
    });
  });
}

const bindings = new Map<string, PocketSphinxNative>();

/** Loads and binds the library once per path: err_set_logfp is process-global anyway. */
export function bindPocketSphinx(libraryPath: string = DEFAULT_LIBRARY): PocketSphinxNative {
  const cached = bindings.get(libraryPath);
  if (cached) return cached;

  const ps = koffi.load(libraryPath);
  if (!hasSymbol(ps, 'ps_args')) {
    throw new Error(
      `${libraryPath}: no ps_args symbol; only the pocketsphinx 0.8/5prealpha (cmd_ln) API is supported`,
    );
  }
  // cmd_ln_* and err_* live in sphinxbase; dlsym on the pocketsphinx handle usually finds them
  // through its dependency, but fall back to loading sphinxbase explicitly.
  const sb = hasSymbol(ps, 'cmd_ln_parse_r') ? ps : koffi.load(SPHINXBASE_LIBRARY);

  const errSetLogfp: NativeFn<[null], void> = sb.func('void err_set_logfp(void *fp)');
  const psArgs: NativeFn<[], Ptr> = ps.func('void *ps_args(void)');
  const cmdLnParse: NativeFn<[null, Ptr, number, string[], number], Ptr | null> = sb.func(
    'void *cmd_ln_parse_r(void *inout, void *defn, int32_t argc, const char **argv, int32_t strict)',
  );
  const cmdLnFree: NativeFn<[Ptr], number> = sb.func('int cmd_ln_free_r(void *cmdln)');
  const psInit: NativeFn<[Ptr], Ptr | null> = ps.func('void *ps_init(void *config)');
  const psFree: NativeFn<[Ptr], number> = ps.func('int ps_free(void *ps)');
  const psStartStream: NativeFn<[Ptr], number> = ps.func('int ps_start_stream(void *ps)');
  const psStartUtt: NativeFn<[Ptr], number> = ps.func('int ps_start_utt(void *ps)');
  const psEndUtt: NativeFn<[Ptr], number> = ps.func('int ps_end_utt(void *ps)');
  const psProcessRaw: NativeFn<[Ptr, Int16Array, number, number, number], number> = ps.func(
    'int ps_process_raw(void *ps, const int16_t *data, size_t n_samples, int no_search, int full_utt)',
  );
  const psGetHyp: NativeFn<[Ptr, Int32Array], string | null> = ps.func(
    'const char *ps_get_hyp(void *ps, int32_t *out_best_score)',
  );
  const psSetJsgfString: NativeFn<[Ptr, string, string], number> = ps.func(
    'int ps_set_jsgf_string(void *ps, const char *name, const char *jsgf_string)',
  );
  const psSetAllphone: NativeFn<[Ptr, string, null], number> = ps.func(
    'int ps_set_allphone(void *ps, const char *name, void *lm)',
  );
  const psGetLogmath: NativeFn<[Ptr], Ptr | null> = ps.func('void *ps_get_logmath(void *ps)');
  const fsgModelReadfile: NativeFn<[string, Ptr, number], Ptr | null> = sb.func(
    'void *fsg_model_readfile(const char *file, void *lmath, float lw)',
  );
  const fsgModelFree: NativeFn<[Ptr], number> = sb.func('int fsg_model_free(void *fsg)');
  const psSetFsg: NativeFn<[Ptr, string, Ptr], number> = ps.func('int ps_set_fsg(void *ps, const char *name, void *fsg)');
  const psSetSearch: NativeFn<[Ptr, string], number> = ps.func('int ps_set_search(void *ps, const char *name)');
  const psGetNFrames: NativeFn<[Ptr], number> = ps.func('int ps_get_n_frames(void *ps)');
  const psSegIter: NativeFn<[Ptr], Ptr | null> = ps.func('void *ps_seg_iter(void *ps)');
  const psSegNext: NativeFn<[Ptr], Ptr | null> = ps.func('void *ps_seg_next(void *seg)');
  const psSegWord: NativeFn<[Ptr], string | null> = ps.func('const char *ps_seg_word(void *seg)');
  const psSegFrames: NativeFn<[Ptr, Int32Array, Int32Array], void> = ps.func(
    'void ps_seg_frames(void *seg, int *out_sf, int *out_ef)',
  );

  // Live CMN lives in sphinxbase's feat_t, which has no accessor for it: this version's layout (x86-64 and
  // aarch64, LP64) puts `int32 cepsize` at byte 16 and `cmn_t *cmn_struct` at byte 88. Reads are checked below.
  const psGetFeat: NativeFn<[Ptr], Ptr | null> = ps.func('void *ps_get_feat(void *ps)');
  const cmnLiveGet: NativeFn<[Ptr, Float32Array], void> = sb.func('void cmn_live_get(void *cmn, float *vec)');
  const cmnLiveSet: NativeFn<[Ptr, Float32Array], void> = sb.func('void cmn_live_set(void *cmn, const float *vec)');
  const cmnOf = (decoder: Ptr): { cmn: Ptr; size: number } | undefined => {
    const feat = psGetFeat(decoder);
    if (!feat) return undefined;
    const size = koffi.decode(feat, 16, 'int32_t') as number;
    const cmn = koffi.decode(feat, 88, 'void *') as Ptr | null;
    // cepsize is 13 in every Sphinx model; anything else means the layout is not the one assumed.
    return cmn && size >= 8 && size <= 40 ? { cmn, size } : undefined;
  };

  // sphinxbase's cmn_t: { mfcc_t *cmn_mean; mfcc_t *cmn_var; mfcc_t *sum; int32 nframe; int32 veclen; } (float mfcc_t).
  const cmnFields = (decoder: Ptr): { mean: Ptr; sum: Ptr; cmn: Ptr; size: number } | undefined => {
    const at = cmnOf(decoder);
    if (!at) return undefined;
    const veclen = koffi.decode(at.cmn, 28, 'int32_t') as number;
    const mean = koffi.decode(at.cmn, 0, 'void *') as Ptr | null;
    const sum = koffi.decode(at.cmn, 16, 'void *') as Ptr | null;
    if (veclen !== at.size || !mean || !sum) return undefined;
    // The mean read through the struct must be the one the library's own accessor gives.
    const check = new Float32Array(at.size);
    cmnLiveGet(at.cmn, check);
    const read = koffi.decode(mean, 0, 'float', at.size) as number[];
    return read.every((v, i) => v === check[i]) ? { mean, sum, cmn: at.cmn, size: at.size } : undefined;
  };

  // Silence the library for good; per-decoder `-logfn` would reopen a global FILE from worker threads.
  errSetLogfp(null);
  const argDefs = psArgs();

  const native: PocketSphinxNative = {
    libraryPath,
    async initDecoder(args) {
      const argv = [...args];
      const config = cmdLnParse(null, argDefs, argv.length, argv, 1);
      if (!config) return 0n;
      const decoder = await promisify(psInit, config);
      // ps_init retains the config; drop our reference.
      cmdLnFree(config);
      return decoder ?? 0n;
    },
    freeDecoder(decoder) {
      // Tearing down ~95 MB of model data is not free: keep it off the event loop.
      psFree.async(decoder, () => undefined);
    },
    startUtt(decoder) {
      // Segment times are stream-wide in this version; a new stream per utterance makes them
      // utterance-relative (it only resets front-end state; live CMN carries over).
      psStartStream(decoder);
      return promisify(psStartUtt, decoder);
    },
    processRaw: (decoder, pcm) => promisify(psProcessRaw, decoder, pcm, pcm.length, 0, 0),
    endUtt: (decoder) => promisify(psEndUtt, decoder),
    async hyp(decoder) {
      return (await promisify(psGetHyp, decoder, new Int32Array(1))) ?? '';
    },
    hypSync(decoder) {
      return psGetHyp(decoder, new Int32Array(1)) ?? '';
    },
    hypScoreSync(decoder) {
      const score = new Int32Array(1);
      const text = psGetHyp(decoder, score) ?? '';
      return { text, score: score[0] };
    },
    setJsgfString: (decoder, name, jsgf) => promisify(psSetJsgfString, decoder, name, jsgf),
    async setFsgFile(decoder, name, file, languageWeight) {
      // A grammar reload removes the old files; callers then fall back to the JSGF.
      if (!existsSync(file)) return -1;
      const lmath = psGetLogmath(decoder);
      if (!lmath) return -1;
      const fsg = await promisify(fsgModelReadfile, file, lmath, languageWeight);
      if (!fsg) return -1;
      try {
        // The search keeps its own reference to the model.
        return await promisify(psSetFsg, decoder, name, fsg);
      } finally {
        fsgModelFree(fsg);
      }
    },
    setAllphone: (decoder, name) => promisify(psSetAllphone, decoder, name, null),
    setSearch: (decoder, name) => psSetSearch(decoder, name),
    nFrames: (decoder) => psGetNFrames(decoder),
    getCmn(decoder) {
      const at = cmnOf(decoder);
      if (!at) return undefined;
      const mean = new Float32Array(at.size);
      cmnLiveGet(at.cmn, mean);
      return mean.every((v) => Number.isFinite(v) && Math.abs(v) < 1000) ? mean : undefined;
    },
    setCmn(decoder, mean) {
      const at = cmnOf(decoder);
      if (!at || at.size !== mean.length) return false;
      cmnLiveSet(at.cmn, mean);
      return true;
    },
    getCmnState(decoder) {
      const f = cmnFields(decoder);
      if (!f) return undefined;
      return {
        mean: Float32Array.from(koffi.decode(f.mean, 0, 'float', f.size) as number[]),
        sum: Float32Array.from(koffi.decode(f.sum, 0, 'float', f.size) as number[]),
        frames: koffi.decode(f.cmn, 24, 'int32_t') as number,
      };
    },
    setCmnState(decoder, state) {
      const f = cmnFields(decoder);
      if (!f || state.mean.length !== f.size || state.sum.length !== f.size) return false;
      koffi.encode(f.mean, 0, 'float', Array.from(state.mean), f.size);
      koffi.encode(f.sum, 0, 'float', Array.from(state.sum), f.size);
      koffi.encode(f.cmn, 24, 'int32_t', state.frames);
      return true;
    },
    segments(decoder) {
      const out: Array<{ word: string; startFrame: number; endFrame: number }> = [];
      const sf = new Int32Array(1);
      const ef = new Int32Array(1);
      // ps_seg_next frees the iterator when it returns NULL.
      for (let seg = psSegIter(decoder); seg; seg = psSegNext(seg)) {
        psSegFrames(seg, sf, ef);
        out.push({ word: psSegWord(seg) ?? '', startFrame: sf[0], endFrame: ef[0] });
      }
      return out;
    },
  };
  bindings.set(libraryPath, native);
  return native;
}

function hasSymbol(lib: LibraryHandle, name: string): boolean {
  try {
    return lib.symbol(name) !== 0n;
  } catch {
    return false;
  }
}
