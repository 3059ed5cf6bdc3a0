/**
 * SVOX Pico TTS, run in-process from the WASM build in `@echogarden/svoxpico-wasm`.
 *
 * Pico API flow: pico_initialize (one memory arena) → pico_loadResource (ta + sg per language) →
 * voice definition → pico_newEngine → pico_putTextUtf8 → pico_getData until not BUSY.
 * Output is 16 kHz mono PCM16 already, so no resampling is needed.
 *
 * Pico allows one engine per system, so each concurrent synthesize() takes a "lane" (system +
 * engine for one voice) from a small per-voice pool, created on demand and reused; a lane is never
 * shared by two calls at once. The WASM module is single-threaded, so calls interleave at our await
 * points (we yield every few ms). One pico_getData step cannot be split, though: text analysis of a
 * sentence runs in one step (~10–30 ms for a clause, >100 ms for a long unpunctuated run-on), which
 * the session's clause splitter keeps bounded.
 */
import type { ProviderCapabilities } from '../../capabilities.js';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import type { Logger } from 'pino';
import { silentLogger } from '../../../core/logger.js';
import type { TtsOptions, TtsProvider } from '../types.js';

export interface SvoxPicoTtsOptions {
  /** Directory with `<lang>_ta.bin` + `<lang>_<speaker>_sg.bin`. Default: env SVOX_PICO_DIR, else `../shared/models/svox-pico` from cwd. */
  voicesDir?: string;
  logger?: Logger;
  /** Output gain; Pico peaks at 0 dBFS, so the default -3 dB leaves headroom. */
  gainDb?: number;
  /** Pico engines (one per lane, ~3–4 MB of WASM memory each) per voice = concurrent calls per voice before calls queue. Default 8. */
  maxEnginesPerVoice?: number;
}

/** A Pico voice found on disk: `en-US`, or `en-US_lh0` for a second speaker of one language. */
export interface PicoVoiceFiles {
  id: string;
  /** BCP-47 tag, e.g. `en-US`. */
  tag: string;
  speaker: string;
  taFile: string;
  sgFile: string;
}

// Constants from picodefs.h.
const PICO_OK = 0;
const PICO_STEP_IDLE = 200;
const PICO_STEP_BUSY = 201;
const PICO_RESET_SOFT = 0x10;
const PICO_RETSTRING_SIZE = 200;
const PICO_MAX_RESOURCE_NAME_SIZE = 32;
/** pico_putTextUtf8 / pico_getData take pico_Int16 sizes. */
const MAX_PUT_BYTES = 32_767;
const OUT_BUF_BYTES = 4_096;

/** First chunk small for time-to-first-audio; later chunks larger to cut per-chunk overhead. */
const FIRST_CHUNK_SAMPLES = 320;
const CHUNK_SAMPLES = 1_600;
/** Max synchronous WASM time before yielding to the event loop, so other calls' audio keeps flowing. */
const SLICE_MS = 4;

/** The subset of the emscripten module we use (the package ships no typings). */
interface PicoModule {
  HEAPU8: Uint8Array;
  HEAP16: Int16Array;
  HEAPU32: Uint32Array;
  FS: {
    mkdir(path: string): void;
    writeFile(path: string, data: Uint8Array): void;
    unlink(path: string): void;
  };
  _malloc(size: number): number;
  _free(ptr: number): void;
  _pico_initialize(memArea: number, memSize: number, outSystem: number): number;
  _pico_terminate(systemRef: number): number;
  _pico_getSystemStatusMessage(system: number, code: number, outMessage: number): number;
  _pico_loadResource(system: number, fileName: number, outResource: number): number;
  _pico_getResourceName(system: number, resource: number, outName: number): number;
  _pico_createVoiceDefinition(system: number, voiceName: number): number;
  _pico_addResourceToVoiceDefinition(system: number, voiceName: number, resourceName: number): number;
  _pico_newEngine(system: number, voiceName: number, outEngine: number): number;
  _pico_disposeEngine(system: number, engineRef: number): number;
  _pico_putTextUtf8(engine: number, text: number, textSize: number, outBytesPut: number): number;
  _pico_getData(engine: number, buffer: number, bufferSize: number, outBytes: number, outDataType: number): number;
  _pico_resetEngine(engine: number, mode: number): number;
  _pico_getEngineStatusMessage(engine: number, code: number, outMessage: number): number;
}

type PicoFactory = (moduleArg?: object) => Promise<unknown>;

function isPicoModule(m: unknown): m is PicoModule {
  const r = m as Record<string, unknown> | null;
  return (
    typeof r === 'object' &&
    r !== null &&
    typeof r._pico_initialize === 'function' &&
    typeof r._pico_getData === 'function' &&
    typeof r._malloc === 'function' &&
    typeof r.FS === 'object'
  );
}

async function loadPicoModule(): Promise<PicoModule> {
  // Variable specifier: the package has no typings; the shape is checked below instead.
  const specifier = '@echogarden/svoxpico-wasm';
  const imported = (await import(specifier)) as { default?: unknown };
  if (typeof imported.default !== 'function') throw new Error(`${specifier}: no default export factory`);
  const mod = await (imported.default as PicoFactory)({
    // Keep Pico's own stdout/stderr chatter out of the service's logs.
    print: () => {},
    printErr: () => {},
  });
  if (!isPicoModule(mod)) throw new Error(`${specifier}: unexpected module shape (missing pico_* exports)`);
  return mod;
}

/** Default voices directory: env SVOX_PICO_DIR, else `<cwd>/../shared/models/svox-pico`. */
export function defaultPicoVoicesDir(): string {
  const env = process.env.SVOX_PICO_DIR;
  if (env !== undefined && env !== '') return path.resolve(env);
  // `npm run setup` installs verified voices here; a checkout beside ../shared can also use them in place.
  const installed = path.resolve(process.cwd(), 'models/svox-pico');
  return existsSync(installed) ? installed : path.resolve(process.cwd(), '../shared/models/svox-pico');
}

/** Voices present in `dir` (empty when the directory is missing or has none). Synchronous: used by the factory. */
export function findPicoVoices(dir: string): PicoVoiceFiles[] {
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return [];
  }
  const voices: PicoVoiceFiles[] = [];
  const sgRe = /^([a-z]{2,3}-[A-Z]{2})_([A-Za-z0-9]+)_sg\.bin$/;
  const sgFiles = names.filter((n) => sgRe.test(n)).sort();
  for (const sg of sgFiles) {
    const match = sgRe.exec(sg);
    if (match === null) continue;
    const [, tag, speaker] = match;
    const ta = `${tag}_ta.bin`;
    if (!names.includes(ta)) continue;
    // First speaker of a language answers to the plain tag; others to `<tag>_<speaker>`.
    const id = voices.some((v) => v.tag === tag) ? `${tag}_${speaker}` : tag;
    voices.push({ id, tag, speaker, taFile: path.join(dir, ta), sgFile: path.join(dir, sg) });
  }
  return voices;
}

/** Default voice per primary language when several regions exist. */
const PREFERRED_REGION: Record<string, string> = { en: 'en-US' };

/**
 * Pico allows one engine per system ("no more than 1 engines"), so each concurrent call gets a
 * lane: its own system (arena + that voice's resources) and engine. Lanes are reused, never shared.
 */
interface Lane {
  system: number;
  memArea: number;
  engine: number;
}

interface VoiceSlot {
  files: PicoVoiceFiles;
  /** Paths of the resource files inside the emscripten FS (kept there so new lanes can load them). */
  taPath: string;
  sgPath: string;
  arenaBytes: number;
  idle: Lane[];
  lanes: number;
  waiters: Array<{ resolve: (lane: Lane) => void; reject: (err: Error) => void; signal?: AbortSignal; onAbort: () => void }>;
}

function primaryTag(language: string): string {
  return language.trim().split(/[-_]/)[0].toLowerCase();
}

/** Pico reads `<tag ...>` as markup (including <genfile>, which writes files): never pass it through from LLM text. */
function sanitizeText(text: string): string {
  return text
    .replace(/[<>]/g, ' ')
    .replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, ' ')
    .replace(/\s+/g, ' ')
    .trim();
}

const yieldToEventLoop = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function abortError(signal: AbortSignal): Error {
  const reason: unknown = signal.reason;
  return reason instanceof Error ? reason : new Error('aborted');
}

/** Spoken once at load to warm the engine's code (any language's voice will do: the code is the same). */
const WARM_UP_SENTENCE = 'Hello, how can I help you today? It is 12:30.';

export class SvoxPicoTts implements TtsProvider {
  readonly name = 'svoxpico';
  readonly capabilities: ProviderCapabilities = { runsOn: ['cpu'], streaming: true };
  readonly voicesDir: string;
  private readonly logger: Logger;
  private readonly gain: number;
  private readonly maxLanes: number;
  private mod: PicoModule | null = null;
  /** Scratch for out-params of calls that complete synchronously (never held across an await). */
  private scratch = 0;
  private readonly slots = new Map<string, VoiceSlot>();
  private loading: Promise<void> | null = null;
  private languageList: string[] = [];

  constructor(options: SvoxPicoTtsOptions = {}) {
    this.voicesDir = options.voicesDir !== undefined ? path.resolve(options.voicesDir) : defaultPicoVoicesDir();
    this.logger = (options.logger ?? silentLogger()).child({ provider: 'svoxpico' });
    this.gain = Math.pow(10, (options.gainDb ?? -3) / 20);
    this.maxLanes = Math.max(1, options.maxEnginesPerVoice ?? 8);
  }

  /** Primary language tags with a loaded voice (empty before load()). */
  get languages(): readonly string[] {
    return this.languageList;
  }

  /** Loaded voice ids, e.g. `en-US`, `en-GB`. */
  get voices(): readonly string[] {
    return [...this.slots.keys()];
  }

  load(): Promise<void> {
    this.loading ??= this.doLoad().catch((err: unknown) => {
      this.loading = null;
      this.mod = null;
      this.slots.clear();
      throw err;
    });
    return this.loading;
  }

  private async doLoad(): Promise<void> {
    const started = performance.now();
    let isDir = false;
    try {
      isDir = statSync(this.voicesDir).isDirectory();
    } catch {
      isDir = false;
    }
    if (!isDir) {
      throw new Error(`SVOX Pico voices directory not found: ${this.voicesDir} (set SVOX_PICO_DIR or voicesDir)`);
    }
    const found = findPicoVoices(this.voicesDir);
    if (found.length === 0) {
      throw new Error(`SVOX Pico voices directory ${this.voicesDir} has no <lang>_ta.bin + <lang>_<speaker>_sg.bin pairs`);
    }

    const mod = await loadPicoModule();
    this.mod = mod;
    this.scratch = mod._malloc(64 + PICO_RETSTRING_SIZE);
    mod.FS.mkdir('/pico');
    const written = new Set<string>();
    for (const v of found) {
      for (const file of [v.taFile, v.sgFile]) {
        if (written.has(file)) continue;
        mod.FS.writeFile(`/pico/${path.basename(file)}`, readFileSync(file));
        written.add(file);
      }
      const size = statSync(v.taFile).size + statSync(v.sgFile).size;
      this.slots.set(v.id, {
        files: v,
        taPath: `/pico/${path.basename(v.taFile)}`,
        sgPath: `/pico/${path.basename(v.sgFile)}`,
        // Resources are copied into the arena; one engine needs ~1.2 MB more (measured).
        arenaBytes: size + 2 * 1024 * 1024,
        idle: [],
        lanes: 0,
        waiters: [],
      });
    }
    this.languageList = [...new Set(found.map((v) => primaryTag(v.tag)))];

    // One warm lane per voice, so the first real call pays neither resource loading (~10 ms) nor compilation
    // (~200 ms). The engine's code is shared: the first voice speaks a whole sentence, long enough for V8 to
    // optimise its hot loops too (after "Ok." alone, a first reply's first audio took 42 ms, then 17 ms; after
    // this sentence, 20 ms).
    let first = true;
    for (const id of this.slots.keys()) {
      for await (const _chunk of this.synthesizeVoice(id, first ? WARM_UP_SENTENCE : 'Ok.', undefined)) {
        // drain
      }
      first = false;
    }
    this.logger.info(
      { dir: this.voicesDir, voices: this.voices, languages: this.languageList, ms: Math.round(performance.now() - started) },
      'SVOX Pico loaded',
    );
  }

  synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array> {
    // An unsupported language throws a clear error on the first next().
    return this.synthesizeVoice(null, text, options);
  }

  private async *synthesizeVoice(voiceId: string | null, text: string, options: TtsOptions | undefined): AsyncGenerator<Int16Array> {
    const mod = this.requireModule();
    const slot = this.slots.get(voiceId ?? this.pickVoice(options?.language ?? '', options?.voice));
    if (slot === undefined) throw new Error(`SVOX Pico: voice ${voiceId ?? '?'} not loaded`);
    const signal = options?.signal;
    const clean = sanitizeText(text);
    if (clean === '' || signal?.aborted) return;

    let lane: Lane;
    try {
      lane = await this.acquireLane(slot, signal);
    } catch (err) {
      if (signal?.aborted) return; // aborted while queued for a lane: just end, like any abort
      throw err;
    }
    const engine = lane.engine;
    // Per-call buffers: other calls run between our awaits and must not share them.
    const bytes = new TextEncoder().encode(`${clean}\0`); // the NUL makes Pico flush the last sentence
    const textPtr = mod._malloc(bytes.length);
    const ioPtr = mod._malloc(OUT_BUF_BYTES + 16);
    const bufPtr = ioPtr + 16;
    mod.HEAPU8.set(bytes, textPtr);
    const pending = new Int16Array(CHUNK_SAMPLES + OUT_BUF_BYTES / 2);
    let pendingLen = 0;
    let emitted = false;
    let finished = false;
    let sliceStart = performance.now();
    try {
      let offset = 0;
      let stalled = 0;
      while (offset < bytes.length) {
        const putSize = Math.min(bytes.length - offset, MAX_PUT_BYTES);
        this.checkEngine(engine, mod._pico_putTextUtf8(engine, textPtr + offset, putSize, ioPtr), 'putTextUtf8');
        const put = mod.HEAP16[ioPtr >> 1];
        offset += put;
        // Pico's input buffer is full until getData drains it; if it still takes nothing, give up.
        stalled = put > 0 ? 0 : stalled + 1;
        if (stalled > 2) throw new Error('SVOX Pico: engine accepts no more text');

        let status: number;
        do {
          status = mod._pico_getData(engine, bufPtr, OUT_BUF_BYTES, ioPtr + 4, ioPtr + 8);
          const samples = mod.HEAP16[(ioPtr + 4) >> 1] >> 1;
          if (samples > 0) {
            const heap = mod.HEAP16;
            const base = bufPtr >> 1;
            for (let i = 0; i < samples; i++) {
              const v = Math.round(heap[base + i] * this.gain);
              pending[pendingLen++] = v > 32767 ? 32767 : v < -32768 ? -32768 : v;
            }
          }
          const full = pendingLen >= (emitted ? CHUNK_SAMPLES : FIRST_CHUNK_SAMPLES);
          if (full || performance.now() - sliceStart >= SLICE_MS) {
            if (pendingLen > 0) {
              const chunk = pending.slice(0, pendingLen);
              pendingLen = 0;
              emitted = true;
              yield chunk;
            }
            await yieldToEventLoop();
            if (signal?.aborted || this.mod !== mod) return;
            sliceStart = performance.now();
          }
        } while (status === PICO_STEP_BUSY);
        if (status !== PICO_STEP_IDLE) this.checkEngine(engine, status, 'getData');
      }
      if (pendingLen > 0) yield pending.slice(0, pendingLen);
      finished = true;
    } finally {
      if (this.mod === mod) {
        mod._free(textPtr);
        mod._free(ioPtr);
        // Aborted, failed or consumer stopped mid-utterance: drop the engine's queued text and audio.
        if (!finished) mod._pico_resetEngine(engine, PICO_RESET_SOFT);
        this.releaseLane(slot, lane);
      }
    }
  }

  /** Voice id for a request: explicit voice of the right language, then exact region, then default. */
  private pickVoice(language: string, voice: string | undefined): string {
    const primary = primaryTag(language);
    const candidates = [...this.slots.values()].filter((s) => primaryTag(s.files.tag) === primary);
    if (candidates.length === 0) {
      throw new Error(
        `SVOX Pico has no voice for language '${language}' (available: ${this.languageList.join(', ') || 'none, not loaded'})`,
      );
    }
    const norm = (s: string): string => s.trim().toLowerCase().replace('_', '-');
    if (voice !== undefined) {
      const byVoice = candidates.find((s) => norm(s.files.id) === norm(voice) || norm(s.files.tag) === norm(voice));
      if (byVoice !== undefined) return byVoice.files.id;
      this.logger.debug({ voice, language }, 'unknown Pico voice, using the language default');
    }
    const byRegion = candidates.find((s) => norm(s.files.tag) === norm(language));
    if (byRegion !== undefined) return byRegion.files.id;
    const preferred = PREFERRED_REGION[primary];
    return (candidates.find((s) => s.files.tag === preferred) ?? candidates[0]).files.id;
  }

  private acquireLane(slot: VoiceSlot, signal: AbortSignal | undefined): Promise<Lane> {
    const idle = slot.idle.pop();
    if (idle !== undefined) return Promise.resolve(idle);
    if (slot.lanes < this.maxLanes) {
      try {
        const lane = this.createLane(slot);
        slot.lanes++;
        this.logger.debug({ voice: slot.files.id, lanes: slot.lanes }, 'new Pico lane');
        return Promise.resolve(lane);
      } catch (err) {
        if (slot.lanes === 0) return Promise.reject(err instanceof Error ? err : new Error(String(err)));
        this.logger.warn({ voice: slot.files.id, err }, 'cannot create another Pico lane; queueing');
      }
    }
    return new Promise<Lane>((resolve, reject) => {
      const waiter = {
        resolve,
        reject,
        signal,
        onAbort: () => {
          slot.waiters.splice(slot.waiters.indexOf(waiter), 1);
          reject(signal !== undefined ? abortError(signal) : new Error('aborted'));
        },
      };
      signal?.addEventListener('abort', waiter.onAbort, { once: true });
      slot.waiters.push(waiter);
    });
  }

  private releaseLane(slot: VoiceSlot, lane: Lane): void {
    const waiter = slot.waiters.shift();
    if (waiter !== undefined) {
      waiter.signal?.removeEventListener('abort', waiter.onAbort);
      waiter.resolve(lane);
    } else {
      slot.idle.push(lane);
    }
  }

  /** initialise → load ta + sg → voice definition → engine, in a fresh arena. Synchronous, ~5–10 ms. */
  private createLane(slot: VoiceSlot): Lane {
    const mod = this.requireModule();
    const memArea = mod._malloc(slot.arenaBytes);
    if (memArea === 0) throw new Error(`SVOX Pico: cannot allocate ${slot.arenaBytes} bytes of WASM memory`);
    let system = 0;
    const temps: number[] = [];
    const cString = (s: string): number => {
      const ptr = this.cString(s);
      temps.push(ptr);
      return ptr;
    };
    try {
      this.check(0, mod._pico_initialize(memArea, slot.arenaBytes, this.scratch), 'pico_initialize');
      system = mod.HEAPU32[this.scratch >> 2];
      const resourceNames: number[] = [];
      for (const file of [slot.taPath, slot.sgPath]) {
        this.check(system, mod._pico_loadResource(system, cString(file), this.scratch), `loadResource ${file}`);
        const resource = mod.HEAPU32[this.scratch >> 2];
        const namePtr = mod._malloc(PICO_MAX_RESOURCE_NAME_SIZE + 1);
        temps.push(namePtr);
        this.check(system, mod._pico_getResourceName(system, resource, namePtr), 'getResourceName');
        resourceNames.push(namePtr);
      }
      const voiceName = cString('voice');
      this.check(system, mod._pico_createVoiceDefinition(system, voiceName), 'createVoiceDefinition');
      for (const namePtr of resourceNames) {
        this.check(system, mod._pico_addResourceToVoiceDefinition(system, voiceName, namePtr), 'addResourceToVoiceDefinition');
      }
      this.check(system, mod._pico_newEngine(system, voiceName, this.scratch), 'newEngine');
      return { system, memArea, engine: mod.HEAPU32[this.scratch >> 2] };
    } catch (err) {
      if (system !== 0) {
        mod.HEAPU32[this.scratch >> 2] = system;
        mod._pico_terminate(this.scratch);
      }
      mod._free(memArea);
      throw err;
    } finally {
      for (const ptr of temps) mod._free(ptr);
    }
  }

  async close(): Promise<void> {
    await this.loading?.catch(() => undefined);
    const mod = this.mod;
    if (mod === null) return;
    for (const slot of this.slots.values()) {
      for (const w of slot.waiters) w.reject(new Error('SVOX Pico closed'));
    }
    // Dropping the module frees all WASM memory at once; lanes still streaming see `this.mod`
    // change and stop at their next yield.
    this.mod = null;
    this.slots.clear();
    this.languageList = [];
    this.loading = null;
  }

  private requireModule(): PicoModule {
    if (this.mod === null) throw new Error('SvoxPicoTts: call load() first');
    return this.mod;
  }

  private cString(s: string): number {
    const mod = this.requireModule();
    const bytes = new TextEncoder().encode(`${s}\0`);
    const ptr = mod._malloc(bytes.length);
    mod.HEAPU8.set(bytes, ptr);
    return ptr;
  }

  private readCString(ptr: number): string {
    const heap = this.requireModule().HEAPU8;
    let end = ptr;
    while (heap[end] !== 0) end++;
    return new TextDecoder().decode(heap.subarray(ptr, end));
  }

  private check(system: number, code: number, what: string): void {
    if (code === PICO_OK) return;
    let message = `status ${code}`;
    if (system !== 0) {
      const msgPtr = this.scratch + 64;
      this.requireModule()._pico_getSystemStatusMessage(system, code, msgPtr);
      message = `${this.readCString(msgPtr)} (${code})`;
    }
    throw new Error(`SVOX Pico ${what} failed: ${message}`);
  }

  private checkEngine(engine: number, code: number, what: string): void {
    if (code === PICO_OK) return;
    const mod = this.requireModule();
    const msgPtr = this.scratch + 64;
    mod._pico_getEngineStatusMessage(engine, code, msgPtr);
    throw new Error(`SVOX Pico ${what} failed: ${this.readCString(msgPtr)} (${code})`);
  }
}
