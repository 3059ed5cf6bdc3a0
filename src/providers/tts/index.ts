/**
 * TTS provider selection: SVOX Pico where it has a voice (clearest here; en, fr, de, es, it),
 * eSpeak NG for everything else and on machines without the Pico voice files.
 */
import { unionCapabilities, type ProviderCapabilities } from '../capabilities.js';
import type { Logger } from 'pino';
import { createRequire } from 'node:module';
import { spawnSync } from 'node:child_process';
import { EspeakTts } from './espeak/index.js';
import { EspeakProcessTts } from './espeak-process/index.js';
import { SvoxPicoTts, defaultPicoVoicesDir, findPicoVoices } from './svoxpico/index.js';
import { OpenAiSpeechTts } from './openai-speech/index.js';
import type { TtsOptions, TtsProvider } from './types.js';
import type { BackendPool, HasBackends } from '../backends.js';
import type { EmbeddedTtsSettings, EspeakEngine } from './embedded-options.js';
import { OPENAI_SPEECH_DEFAULTS, type OpenAiSpeechSettings } from './openai-speech/options.js';

export type { TtsOptions, TtsProvider } from './types.js';
export { EspeakTts, type EspeakTtsOptions, type EspeakVoice } from './espeak/index.js';
export { SvoxPicoTts, type SvoxPicoTtsOptions, defaultPicoVoicesDir, findPicoVoices } from './svoxpico/index.js';
export { OpenAiSpeechTts, TtsHttpError, type OpenAiSpeechTtsOptions } from './openai-speech/index.js';

/** A remote `/v1/audio/speech` server (vLLM-Omni, Kokoro-FastAPI, …) with its embedded fallback: openai-speech/options.ts. */
export type RemoteTtsConfig = { provider: 'openai-speech' } & OpenAiSpeechSettings;

/** The voices in this process ('auto': Pico, plus eSpeak for other languages, when Pico voice files exist): embedded-options.ts. */
export type EmbeddedTtsConfig = { provider: 'svoxpico' | 'espeak' | 'auto' } & EmbeddedTtsSettings;

export type TtsFactoryConfig = EmbeddedTtsConfig | RemoteTtsConfig;
export type { EspeakEngine };

/** The eSpeak NG engine to use when none is configured: whatever is installed, the in-process build first. */
export function defaultEspeakEngine(
  env: NodeJS.ProcessEnv = process.env,
  has: { wasm: () => boolean; program: () => boolean } = { wasm: wasmBuildInstalled, program: espeakProgramInstalled },
): EspeakEngine {
  const chosen = env.VOICE_AGENT_ESPEAK;
  if (chosen === 'wasm' || chosen === 'process' || chosen === 'none') return chosen;
  if (has.wasm()) return 'wasm';
  return has.program() ? 'process' : 'none';
}

function wasmBuildInstalled(): boolean {
  try {
    createRequire(import.meta.url).resolve('@echogarden/espeak-ng-emscripten');
    return true;
  } catch {
    return false;
  }
}

function espeakProgramInstalled(): boolean {
  return spawnSync('espeak-ng', ['--version'], { stdio: 'ignore' }).status === 0;
}

function primaryTag(language: string): string {
  return language.trim().split(/[-_]/)[0].toLowerCase();
}

/**
 * Routes each call to the first provider that speaks its language (order = preference).
 * load() loads all of them and rejects if any fails, so a misconfigured primary is not hidden.
 */
export class CompositeTts implements TtsProvider {
  readonly name: string;

  constructor(
    private readonly providers: readonly TtsProvider[],
    private readonly defaultVoices: Readonly<Record<string, string>> = {},
  ) {
    if (providers.length === 0) throw new Error('CompositeTts needs at least one provider');
    this.name = providers.map((p) => p.name).join('+');
  }

  get languages(): readonly string[] {
    return [...new Set(this.providers.flatMap((p) => p.languages))];
  }

  get capabilities(): ProviderCapabilities {
    return unionCapabilities(this.providers);
  }

  async load(): Promise<void> {
    await Promise.all(this.providers.map((p) => p.load()));
  }

  /** The provider that will speak `language`, or undefined. */
  providerFor(language: string): TtsProvider | undefined {
    const primary = primaryTag(language);
    return this.providers.find((p) => p.languages.includes(primary));
  }

  synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array> {
    const provider = this.providerFor(options.language);
    if (provider === undefined) {
      const err = new Error(`no TTS voice for language '${options.language}' (providers: ${this.name})`);
      return {
        [Symbol.asyncIterator]: () => ({ next: () => Promise.reject(err) }),
      };
    }
    const voice =
      options.voice ?? this.defaultVoices[options.language] ?? this.defaultVoices[primaryTag(options.language)];
    return provider.synthesize(text, voice === undefined ? options : { ...options, voice });
  }

  async close(): Promise<void> {
    await Promise.all(this.providers.map((p) => p.close?.()));
  }
}

/**
 * A remote TTS with an embedded one behind it: a segment the remote cannot start (every server down or refusing,
 * no remote voice for the language) is spoken by the embedded TTS. Once audio flowed a failure is thrown (the
 * session reports `tts_failed` and goes on); the failed server is then marked down, so the next segments go
 * straight to the embedded voice until it recovers.
 */
export class FallbackTts implements TtsProvider {
  readonly name: string;

  constructor(
    private readonly primary: TtsProvider & { readonly healthy?: boolean },
    private readonly fallback: TtsProvider,
    private readonly logger: Logger,
  ) {
    this.name = `${primary.name}>${fallback.name}`;
  }

  get languages(): readonly string[] {
    return [...new Set([...this.primary.languages, ...this.fallback.languages])];
  }

  get capabilities(): ProviderCapabilities {
    return unionCapabilities([this.primary, this.fallback]);
  }

  /** The remote's servers (for registerBackendMetrics). */
  get backends(): BackendPool | undefined {
    return (this.primary as Partial<HasBackends>).backends;
  }

  async load(): Promise<void> {
    await Promise.all([this.primary.load(), this.fallback.load()]);
  }

  async *synthesize(text: string, options: TtsOptions): AsyncGenerator<Int16Array> {
    const { voice: _remoteVoice, ...embedded } = options;
    if (!this.primary.languages.includes(primaryTag(options.language)) || this.primary.healthy === false) {
      yield* this.fallback.synthesize(text, embedded);
      return;
    }
    let produced = false;
    try {
      for await (const chunk of this.primary.synthesize(text, options)) {
        produced = true;
        yield chunk;
      }
      return;
    } catch (err) {
      if (options.signal?.aborted) return;
      if (produced) throw err;
      this.logger.warn({ err: (err as Error).message, fallback: this.fallback.name }, 'remote TTS failed before any audio; speaking with the embedded TTS');
    }
    yield* this.fallback.synthesize(text, embedded);
  }

  async close(): Promise<void> {
    await Promise.all([this.primary.close?.(), this.fallback.close?.()]);
  }
}

/** Build (not load) the configured TTS provider. */
export function createTtsProvider(config: TtsFactoryConfig, logger: Logger): TtsProvider {
  if (config.provider === 'openai-speech') {
    const { provider: _p, embeddedFallback, embeddedVoices, espeakEngine, ...options } = config;
    const remote = new OpenAiSpeechTts({ ...options, logger });
    const fallback = embeddedFallback ?? OPENAI_SPEECH_DEFAULTS.embeddedFallback;
    if (fallback === 'none') return remote;
    const embedded = createTtsProvider({ provider: fallback, voices: embeddedVoices, espeakEngine }, logger);
    return new FallbackTts(remote, embedded, logger);
  }
  const voicesDir = config.voicesDir ?? defaultPicoVoicesDir();
  const pico = (): SvoxPicoTts => new SvoxPicoTts({ voicesDir, logger, gainDb: config.gainDb });
  const engine = config.espeakEngine ?? defaultEspeakEngine();
  const espeakOne = (): TtsProvider =>
    engine === 'process' ? new EspeakProcessTts({ logger }) : new EspeakTts({ logger, workers: config.espeakWorkers });
  // eSpeak where it is wanted and there; with 'none' only Pico speaks.
  const espeak = (): TtsProvider[] => (engine === 'none' ? [] : [espeakOne()]);
  const voices = config.voices ?? {};
  logger.info({ espeak: engine }, 'TTS: eSpeak NG engine');

  switch (config.provider) {
    case 'espeak':
      if (engine === 'none') throw new Error("providers.tts.provider 'espeak' needs an eSpeak NG engine ('wasm' or 'process')");
      return new CompositeTts(espeak(), voices);
    case 'svoxpico':
      return new CompositeTts(config.fallback === false ? [pico()] : [pico(), ...espeak()], voices);
    case 'auto': {
      const found = findPicoVoices(voicesDir);
      logger.info(
        { voicesDir, picoVoices: found.map((v) => v.id) },
        found.length > 0 ? 'TTS: SVOX Pico with eSpeak NG fallback' : 'TTS: SVOX Pico voices not found, using eSpeak NG',
      );
      const chosen = found.length > 0 ? [pico(), ...espeak()] : espeak();
      if (chosen.length === 0) throw new Error('no TTS: no SVOX Pico voice files and no eSpeak NG (install espeak-ng, or the Pico voices)');
      return new CompositeTts(chosen, voices);
    }
    default: {
      const unknown: never = config;
      throw new Error(`unknown TTS provider '${String((unknown as { provider: unknown }).provider)}'`);
    }
  }
}
