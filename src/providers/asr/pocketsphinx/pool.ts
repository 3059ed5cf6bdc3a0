/**
 * Pool of ready pocketsphinx decoders.
 *
 * Why a pool: this pocketsphinx has no way to share the loaded models between decoders.
 * ps_retain only bumps a refcount (same decoder, so not usable by two calls at once), and
 * handing one ngram_model_t to several decoders is unsafe because the LM trie keeps mutable
 * scoring caches (hist_cache/backoff_cache) that concurrent decoders would race on.
 * So every call needs its own full decoder (~0.4 s of ps_init, ~95 MB). The pool builds them on
 * a worker thread ahead of demand (`spare` kept ready), hands them out synchronously and takes
 * them back on stream close, so stream creation costs nothing while a spare is available.
 */
import type { Logger } from 'pino';
import type { PocketSphinxNative, Ptr } from './native.js';
import { buildStanding, decodeSlots } from './scheduler.js';

export interface DecoderPoolOptions {
  native: PocketSphinxNative;
  args: readonly string[];
  /** Ready decoders to keep on hand for the next calls. */
  spare: number;
  /** Idle decoders kept after calls end; extra ones are freed (each holds ~95 MB). */
  maxIdle: number;
  /** Runs on each new decoder before it is handed out (e.g. adds named grammar searches). */
  setup?: (ps: Ptr) => Promise<void>;
  /** Wait this long after the last lease before rebuilding spares (0: at once). */
  refillDelayMs?: number;
  logger?: Logger;
}

export class DecoderPool {
  private readonly idle: Ptr[] = [];
  private readonly waiters: Array<{ resolve: (ps: Ptr) => void; reject: (err: Error) => void }> = [];
  /** One ps_init at a time: keeps thread-pool slots free for decoding and avoids init races. */
  private building: Promise<void> | undefined;
  private closed = false;
  private lastError: Error | undefined;
  /** Decoders handed out and not yet released. */
  private leased = 0;
  /** Pending delayed top-up of the spares (see refill). */
  private refillTimer: NodeJS.Timeout | undefined;
  /** Named searches added to each decoder after it was built (they stay with it across calls). */
  private readonly searches = new Map<Ptr, Set<string>>();
  /** Each decoder's cepstral mean as built (its model's -cmninit): restored whenever a call hands it back. */
  private readonly priors = new Map<Ptr, Float32Array>();

  constructor(private readonly opts: DecoderPoolOptions) {}

  get idleCount(): number {
    return this.idle.length;
  }

  get leasedCount(): number {
    return this.leased;
  }

  /**
   * Builds the first decoder (surfacing model errors); the other spares follow once calls leave the CPU alone
   * (refill's delay), so a service that has just become ready does not decode its first calls behind a dozen
   * decoder builds.
   */
  async warm(): Promise<number> {
    const t0 = performance.now();
    const ps = await this.opts.native.initDecoder(this.opts.args);
    if (ps === 0n) throw new Error('pocketsphinx ps_init failed (check modelDir and decoder args)');
    await this.opts.setup?.(ps);
    this.rememberPrior(ps);
    const ms = performance.now() - t0;
    this.put(ps);
    this.refill();
    return ms;
  }

  /** A ready decoder now, or undefined when none is idle (one is then being built). */
  tryAcquire(): Ptr | undefined {
    if (this.closed) return undefined;
    const ps = this.idle.pop();
    if (ps !== undefined) this.leased++;
    this.refill();
    return ps;
  }

  acquire(): Promise<Ptr> {
    if (this.closed) return Promise.reject(new Error('pocketsphinx pool closed'));
    const ps = this.tryAcquire();
    if (ps !== undefined) return Promise.resolve(ps);
    return new Promise<Ptr>((resolve, reject) => {
      this.waiters.push({ resolve, reject });
      this.refill();
    });
  }

  /** Takes back a decoder whose utterance has been ended. */
  release(ps: Ptr): void {
    // Each call starts from the model's cepstral-mean prior, not from the mean the previous caller left: live CMN
    // only adapts at utterance ends, so a first utterance decoded with another speaker's or channel's mean fails.
    const prior = this.priors.get(ps);
    if (prior && !this.opts.native.setCmn(ps, prior)) this.priors.delete(ps);
    this.leased--;
    this.put(ps);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.refillTimer) clearTimeout(this.refillTimer);
    for (const w of this.waiters.splice(0)) w.reject(new Error('pocketsphinx pool closed'));
    for (const ps of this.idle.splice(0)) this.free(ps);
  }

  private rememberPrior(ps: Ptr): void {
    const prior = this.opts.native.getCmn(ps);
    if (prior) this.priors.set(ps, prior);
  }

  /** The searches added to decoder `ps` so far (mutable: the caller records what it adds). */
  searchesOf(ps: Ptr): Set<string> {
    let set = this.searches.get(ps);
    if (!set) this.searches.set(ps, (set = new Set()));
    return set;
  }

  private free(ps: Ptr): void {
    this.priors.delete(ps);
    this.searches.delete(ps);
    this.opts.native.freeDecoder(ps);
  }

  private put(ps: Ptr): void {
    const waiter = this.waiters.shift();
    if (waiter && !this.closed) {
      this.leased++;
      waiter.resolve(ps);
      return;
    }
    if (this.closed || this.idle.length >= Math.max(this.opts.maxIdle, this.opts.spare)) {
      this.free(ps);
      return;
    }
    this.idle.push(ps);
  }

  /**
   * Top up the spares. A call waiting for a decoder gets one built at once; replacing a spare that a new
   * call just took waits until new calls stop arriving for `refillDelayMs`, because a ps_init (~0.4 s of CPU)
   * competes with the first turns of exactly those calls.
   */
  private refill(): void {
    if (this.closed || this.building) return;
    if (this.idle.length >= this.opts.spare && this.waiters.length === 0) return;
    if (this.waiters.length === 0 && (this.opts.refillDelayMs ?? 0) > 0) {
      if (this.refillTimer) clearTimeout(this.refillTimer);
      this.refillTimer = setTimeout(() => {
        this.refillTimer = undefined;
        this.build();
      }, this.opts.refillDelayMs);
      this.refillTimer.unref();
      return;
    }
    this.build();
  }

  private build(): void {
    if (this.closed || this.building) return;
    if (this.idle.length >= this.opts.spare && this.waiters.length === 0) return;
    if (this.refillTimer) {
      clearTimeout(this.refillTimer);
      this.refillTimer = undefined;
    }
    this.building = (async () => {
      // A build is tens of ms of a core: calls decoding what their callers said go first, unless one waits for it.
      const release = await decodeSlots.acquire(() => buildStanding(this.waiters.length > 0));
      let ps: Ptr;
      const t0 = performance.now();
      try {
        ps = await this.opts.native.initDecoder(this.opts.args);
        if (ps === 0n) throw new Error('pocketsphinx ps_init failed');
        await this.opts.setup?.(ps);
      } finally {
        release();
      }
      this.rememberPrior(ps);
      this.opts.logger?.debug({ ms: Math.round(performance.now() - t0) }, 'pocketsphinx decoder ready');
      this.lastError = undefined;
      this.put(ps);
    })()
      .catch((err: unknown) => {
        const error = err instanceof Error ? err : new Error(String(err));
        this.opts.logger?.error({ err: error }, 'pocketsphinx decoder init failed');
        // Don't spin on a persistent failure: fail whoever is waiting instead.
        this.lastError = error;
        for (const w of this.waiters.splice(0)) w.reject(error);
      })
      .finally(() => {
        this.building = undefined;
        if (!this.lastError) this.build();
      });
  }
}
