import { readFileSync, existsSync } from 'node:fs';
import type { AuthConfig } from './auth/auth.js';
import path from 'node:path';

/** Endpointing and barge-in: the knobs that trade latency against cutting callers off. */
export interface TurnConfig {
  /** Speech probability at or above which a frame counts as speech. */
  speechThreshold: number;
  /** Probability below which a frame counts as silence (hysteresis between the two). */
  silenceThreshold: number;
  /** Speech needed before a turn is considered started (filters clicks). */
  minSpeechMs: number;
  /** Silence after speech at which a reply is prepared preemptively (discarded if the caller goes on). */
  preemptiveSilenceMs: number;
  /** Silence after speech that ends the caller's turn. */
  endpointSilenceMs: number;
  /** Audio kept from before speech onset and given to ASR, so first phonemes are not clipped. */
  preRollMs: number;
  /** Caller speech while the agent talks pauses agent audio at once; this much confirms an interruption. */
  minInterruptionMs: number;
  /** Agent audio paused on a caller sound resumes after this long if the sound never became speech. */
  pauseTimeoutMs: number;
  /** Words that never count as an interruption on their own (backchannels), lower-case. */
  backchannels: string[];
  /**
   * Caller speech that interrupts the agent this soon after the caller's previous words continues that turn
   * (they were pausing mid-thought) rather than starting a new one.
   */
  continuationWindowMs: number;
  /** Keypad digits are gathered until '#' or this much time without a new digit. */
  dtmfTimeoutMs: number;
  /** Longest caller turn before it is ended regardless of pauses. */
  maxTurnMs: number;
}

export interface AudioOutConfig {
  /** How far ahead of real time agent audio is sent to the client (its playout buffer). */
  leadMs: number;
}

export type VadProviderConfig = { provider: 'silero'; modelPath?: string; executionProviders?: string[] };
export type AsrProviderConfig = { provider: 'pocketsphinx'; modelDir?: string };
export type LlmProviderConfig =
  | { provider: 'rules'; rulesPath?: string }
  | {
      provider: 'openai';
      baseUrl: string;
      model: string;
      apiKey?: string;
      temperature?: number;
      maxTokens?: number;
      timeoutMs?: number;
      retries?: number;
    }
  | { provider: 'llamacpp'; modelPath: string; gpu?: 'auto' | false; contextSize?: number; temperature?: number; maxTokens?: number };
export type TtsProviderConfig = { provider: 'auto' | 'svoxpico' | 'espeak'; voicesDir?: string; voices?: Record<string, string> };

export interface AgentConfig {
  /** Language assumed until ASR reports one. */
  defaultLanguage: string;
  /** System prompt for model-backed LLMs. */
  systemPrompt: string;
  /** Spoken when a backend fails mid-turn, per language. */
  fallbackReplies: Record<string, string>;
  /** Rounds of tool calls allowed in one turn before the agent must answer. */
  maxToolRounds: number;
}

export interface ServiceConfig {
  host: string;
  port: number;
  logLevel: string;
  /** Models directory for downloaded models (see audio-models/). */
  modelsDir: string;
  /** Largest WebSocket message accepted without an error (bytes). */
  maxMessageBytes: number;
  auth: AuthConfig;
  turn: TurnConfig;
  audioOut: AudioOutConfig;
  agent: AgentConfig;
  providers: {
    vad: VadProviderConfig;
    asr: AsrProviderConfig;
    llm: LlmProviderConfig;
    tts: TtsProviderConfig;
  };
}

export const DEFAULT_CONFIG: ServiceConfig = {
  host: '0.0.0.0',
  port: 8080,
  logLevel: 'info',
  modelsDir: 'models',
  maxMessageBytes: 64 * 1024,
  auth: { apiKeyHashes: [], tokenTtlS: 300, required: true },
  turn: {
    speechThreshold: 0.5,
    silenceThreshold: 0.35,
    minSpeechMs: 60,
    preemptiveSilenceMs: 80,
    endpointSilenceMs: 200,
    preRollMs: 200,
    minInterruptionMs: 300,
    pauseTimeoutMs: 240,
    backchannels: ['ok', 'okay', 'mhm', 'mm', 'uh-huh', 'yeah', 'yes', 'right', 'oui', 'ja', 'si', 'sí', 'd accord', 'hm'],
    continuationWindowMs: 1000,
    dtmfTimeoutMs: 1500,
    maxTurnMs: 30_000,
  },
  audioOut: { leadMs: 40 },
  agent: {
    defaultLanguage: 'en',
    systemPrompt:
      'You are a helpful voice assistant on a phone call. Answer in the language the caller speaks. ' +
      'Keep answers short and conversational: one or two sentences, no lists, no markdown.',
    fallbackReplies: {
      en: 'Sorry, I am having trouble right now. Please try again in a moment.',
      fr: 'Désolé, je rencontre un problème. Veuillez réessayer dans un instant.',
      de: 'Entschuldigung, es gibt gerade ein Problem. Bitte versuchen Sie es gleich noch einmal.',
      es: 'Lo siento, tengo un problema en este momento. Inténtelo de nuevo en un momento.',
      it: 'Mi dispiace, ho un problema in questo momento. Riprovi tra un attimo.',
    },
    maxToolRounds: 3,
  },
  providers: {
    vad: { provider: 'silero' },
    asr: { provider: 'pocketsphinx' },
    llm: { provider: 'rules' },
    tts: { provider: 'auto' },
  },
};

type DeepPartial<T> = { [K in keyof T]?: T[K] extends object ? (T[K] extends unknown[] ? T[K] : DeepPartial<T[K]>) : T[K] };
export type ConfigOverrides = DeepPartial<ServiceConfig>;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** Merge `override` onto `base`; arrays and provider blocks replace, objects merge. */
export function mergeConfig<T>(base: T, override: unknown): T {
  if (!isPlainObject(override) || !isPlainObject(base)) return (override === undefined ? base : override) as T;
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(override)) {
    if (value === undefined) continue;
    const current = out[key];
    // A provider block with a different provider replaces the old block entirely.
    const replaces = isPlainObject(value) && isPlainObject(current) && 'provider' in value && value.provider !== current.provider;
    out[key] = replaces ? value : mergeConfig(current, value);
  }
  return out as T;
}

/**
 * Configuration: defaults ← JSON file (VOICE_AGENT_CONFIG or --config) ← environment (HOST, PORT, LOG_LEVEL).
 */
export function loadConfig(argv: string[] = process.argv.slice(2), env: NodeJS.ProcessEnv = process.env): ServiceConfig {
  let config = DEFAULT_CONFIG;
  const flagIndex = argv.indexOf('--config');
  const file = flagIndex >= 0 ? argv[flagIndex + 1] : env.VOICE_AGENT_CONFIG;
  if (file) {
    const resolved = path.resolve(file);
    if (!existsSync(resolved)) throw new Error(`config file not found: ${resolved}`);
    let parsed: unknown;
    try {
      parsed = JSON.parse(readFileSync(resolved, 'utf8'));
    } catch (err) {
      throw new Error(`config file ${resolved} is not valid JSON: ${(err as Error).message}`);
    }
    if (!isPlainObject(parsed)) throw new Error(`config file ${resolved} must hold a JSON object`);
    config = mergeConfig(config, parsed);
  }
  const envOverrides: ConfigOverrides = {};
  if (env.HOST) envOverrides.host = env.HOST;
  if (env.PORT) {
    const port = Number(env.PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`PORT must be 0..65535, got ${env.PORT}`);
    envOverrides.port = port;
  }
  if (env.LOG_LEVEL) envOverrides.logLevel = env.LOG_LEVEL;
  return mergeConfig(config, envOverrides);
}
