import type { Static } from './core/options.js';
import { AGENT_DEFAULTS, AGENTS_DEFAULTS, type AgentConfig, type AgentsConfig } from './agents/options.js';
import { AUDIO_OUT_DEFAULTS, TURN_DEFAULTS, type AudioOutConfig, type TurnConfig } from './session/options.js';
import type { AsrProviderConfig, LlmProviderConfig, TtsProviderConfig, VadProviderConfig } from './providers/options.js';
import type { FAILOVER_OPTIONS } from './providers/remote-options.js';
import { CHAT_COMPLETIONS_DEFAULTS, type ChatCompletionsConfig } from './transports/openai-chat/options.js';
import { SIP_DEFAULTS, type SipConfig } from './transports/sip/options.js';
import { TELEPHONY_DEFAULTS, type TelephonyConfig } from './transports/telephony/options.js';
import { WEBRTC_DEFAULTS, type WebRtcConfig } from './transports/webrtc/options.js';
import { DEFAULT_WEBHOOKS, type WebhooksConfig } from './integration/webhooks.js';
import { readFileSync, existsSync } from 'node:fs';
import { AUTH_DEFAULTS, type AuthConfig } from './auth/options.js';
import { STORE_DEFAULTS, type StoreConfig } from './store/options.js';
import { LIMITS_DEFAULTS, type LimitsConfig } from './limits/options.js';
import path from 'node:path';
import { validateConfig } from './config-schema.js';
import { PRIVACY_DEFAULTS, type PrivacyConfig } from './privacy/options.js';
import { RECORDING_DEFAULTS, type RecordingConfig } from './recording/options.js';

// Each provider, transport and section declares its options beside its code; the types derive from those declarations.
export type { AgentConfig, AgentsConfig } from './agents/options.js';
export type { AudioOutConfig, TurnConfig } from './session/options.js';
export type { AsrProviderConfig, LlmProviderConfig, TtsProviderConfig, VadProviderConfig } from './providers/options.js';
export type { SipConfig } from './transports/sip/options.js';
export type { TelephonyConfig } from './transports/telephony/options.js';
export type { WebRtcConfig } from './transports/webrtc/options.js';
/** Several URLs for one remote stage: 'ordered' (default) or 'round-robin'; a failed URL rests `downMs` (default 5000). */
export type RemoteFailoverConfig = Static<typeof FAILOVER_OPTIONS>;

/**
 * The demo page at `/`: it fetches a session token from `GET /v1/demo/token`, answered to loopback clients only.
 * Off unless asked for (`npm start -- --demo`, VOICE_AGENT_DEMO=1 or `demo.enabled`): see docs/security.md.
 */
export interface DemoConfig {
  enabled: boolean;
  /** Host header values (without port) the demo answers to: a DNS-rebinding page names its own host. */
  allowedHosts: string[];
}

export interface ServiceConfig {
  host: string;
  /**
   * Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto / X-Forwarded-Host are believed (addresses or
   * CIDRs, e.g. ["127.0.0.1"] for an nginx on this host); empty: none, the socket's address is the client's.
   */
  trustProxy: string[];
  port: number;
  logLevel: string;
  /** Models directory for downloaded models (see audio-models/). */
  modelsDir: string;
  /** Require an API key on GET /metrics. */
  metricsRequireApiKey: boolean;
  /** Largest WebSocket message accepted without an error (bytes). */
  maxMessageBytes: number;
  auth: AuthConfig;
  /** Durable call records (transcripts, turn metrics). */
  store: StoreConfig;
  limits: LimitsConfig;
  /** Caller and agent words stay out of logs unless logTranscripts is on (they are in the call record). */
  privacy: PrivacyConfig;
  /** Call recordings (stereo Ogg Opus, consent first): off by default; docs/compliance.md. */
  recording: RecordingConfig;
  /** SIGTERM: how long calls may go on, and what the agent says when it must end them. */
  drain: { deadlineMs: number; notice: Record<string, string> };
  /** Spoken when a call reaches limits.maxSessionMs, per language. */
  maxLengthNotice: Record<string, string>;
  turn: TurnConfig;
  audioOut: AudioOutConfig;
  webrtc: WebRtcConfig;
  demo: DemoConfig;
  telephony: TelephonyConfig;
  sip: SipConfig;
  agent: AgentConfig;
  /** Several agents, chosen per call and reloaded without a restart. */
  agents: AgentsConfig;
  providers: {
    vad: VadProviderConfig;
    asr: AsrProviderConfig;
    llm: LlmProviderConfig;
    tts: TtsProviderConfig;
  };
  /** `POST /v1/chat/completions` serving this service's own LLM to other services (off by default). */
  chatCompletions: ChatCompletionsConfig;
  /** The operator's systems: signed webhooks out (docs/integration.md). HTTP tools live in the agent file. */
  integration: { webhooks: WebhooksConfig };
  /** `asr-server` mode (src/asr-server.ts): the configured ASR served under vLLM's realtime protocol. */
  asrServer: { path: string; model: string; maxSessions: number; maxUtteranceMs: number };
}

export const DEFAULT_CONFIG: ServiceConfig = {
  host: '0.0.0.0',
  trustProxy: [],
  port: 8080,
  logLevel: 'info',
  modelsDir: 'models',
  metricsRequireApiKey: false,
  maxMessageBytes: 64 * 1024,
  auth: AUTH_DEFAULTS,
  store: STORE_DEFAULTS,
  privacy: PRIVACY_DEFAULTS,
  recording: RECORDING_DEFAULTS,
  limits: LIMITS_DEFAULTS,
  maxLengthNotice: {
    en: 'We have reached the maximum length for this call. Thank you for calling. Goodbye.',
    fr: 'Nous avons atteint la durée maximale de cet appel. Merci de votre appel. Au revoir.',
    de: 'Die maximale Gesprächsdauer ist erreicht. Danke für Ihren Anruf. Auf Wiederhören.',
    es: 'Hemos alcanzado la duración máxima de esta llamada. Gracias por llamar. Adiós.',
    it: 'Abbiamo raggiunto la durata massima della chiamata. Grazie per aver chiamato. Arrivederci.',
  },
  drain: {
    deadlineMs: 30_000,
    notice: {
      en: 'I am sorry, this service is restarting and I have to end the call now. Please call back in a minute. Goodbye.',
      fr: 'Désolé, le service redémarre et je dois mettre fin à l’appel. Merci de rappeler dans une minute. Au revoir.',
      de: 'Entschuldigung, der Dienst startet neu und ich muss das Gespräch beenden. Bitte rufen Sie in einer Minute wieder an. Auf Wiederhören.',
      es: 'Lo siento, el servicio se está reiniciando y tengo que terminar la llamada. Vuelva a llamar en un minuto. Adiós.',
      it: 'Mi dispiace, il servizio si sta riavviando e devo chiudere la chiamata. Richiami tra un minuto. Arrivederci.',
    },
  },
  turn: TURN_DEFAULTS,
  audioOut: AUDIO_OUT_DEFAULTS,
  webrtc: WEBRTC_DEFAULTS,
  demo: { enabled: false, allowedHosts: ['localhost', '127.0.0.1', '::1'] },
  telephony: TELEPHONY_DEFAULTS,
  sip: SIP_DEFAULTS,
  agent: AGENT_DEFAULTS,
  agents: AGENTS_DEFAULTS,
  providers: {
    vad: { provider: 'silero' },
    asr: { provider: 'pocketsphinx' },
    llm: { provider: 'rules' },
    tts: { provider: 'auto' },
  },
  chatCompletions: CHAT_COMPLETIONS_DEFAULTS,
  integration: { webhooks: DEFAULT_WEBHOOKS },
  asrServer: { path: '/v1/realtime', model: 'pocketsphinx-en-us', maxSessions: 64, maxUtteranceMs: 60_000 },
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
  // The demo page hands out session tokens: only when asked for by name.
  if (argv.includes('--demo') || env.VOICE_AGENT_DEMO === '1') envOverrides.demo = { enabled: true };
  // One schema check of the result, so every error names its path (src/config-schema.ts).
  return validateConfig(mergeConfig(config, envOverrides), file ? path.resolve(file) : 'configuration');
}
