import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { Static } from './core/options.js';
import { validateConfig } from './config-schema.js';
import { AGENT_DEFAULTS, AGENTS_DEFAULTS, type AgentConfig, type AgentsConfig } from './agents/options.js';
import { ASR_SERVER_DEFAULTS, type AsrServerConfig } from './asr-server-options.js';
import { AUTH_DEFAULTS, type AuthConfig } from './auth/options.js';
import { INTEGRATION_DEFAULTS, type IntegrationConfig } from './integration/options.js';
import { LIMITS_DEFAULTS, type LimitsConfig } from './limits/options.js';
import { PRIVACY_DEFAULTS, type PrivacyConfig } from './privacy/options.js';
import type { AsrProviderConfig, LlmProviderConfig, TtsProviderConfig, VadProviderConfig } from './providers/options.js';
import type { FAILOVER_OPTIONS } from './providers/remote-options.js';
import { RECORDING_DEFAULTS, type RecordingConfig } from './recording/options.js';
import {
  DEMO_DEFAULTS,
  DRAIN_DEFAULTS,
  MAX_LENGTH_NOTICE_DEFAULTS,
  SERVICE_DEFAULTS,
  type DemoConfig,
  type DrainConfig,
  type ServiceKeysConfig,
} from './service-options.js';
import { AUDIO_OUT_DEFAULTS, TURN_DEFAULTS, type AudioOutConfig, type TurnConfig } from './session/options.js';
import { STORE_DEFAULTS, type StoreConfig } from './store/options.js';
import { CHAT_COMPLETIONS_DEFAULTS, type ChatCompletionsConfig } from './transports/openai-chat/options.js';
import { SIP_DEFAULTS, type SipConfig } from './transports/sip/options.js';
import { TELEPHONY_DEFAULTS, type TelephonyConfig } from './transports/telephony/options.js';
import { WEBRTC_DEFAULTS, type WebRtcConfig } from './transports/webrtc/options.js';

// Each section declares its options beside its code (an options.ts); the types and defaults derive from those
// declarations, and this module only composes them.
export type { AgentConfig, AgentsConfig } from './agents/options.js';
export type { AudioOutConfig, TurnConfig } from './session/options.js';
export type { DemoConfig } from './service-options.js';
export type { AsrProviderConfig, LlmProviderConfig, TtsProviderConfig, VadProviderConfig } from './providers/options.js';
export type { SipConfig } from './transports/sip/options.js';
export type { TelephonyConfig } from './transports/telephony/options.js';
export type { WebRtcConfig } from './transports/webrtc/options.js';
/** Several URLs for one remote stage: 'ordered' (default) or 'round-robin'; a failed URL rests `downMs` (default 5000). */
export type RemoteFailoverConfig = Static<typeof FAILOVER_OPTIONS>;

/** The service's own keys (src/service-options.ts) and every section, each declared beside its code. */
export interface ServiceConfig extends ServiceKeysConfig {
  auth: AuthConfig;
  /** Durable call records (transcripts, turn metrics). */
  store: StoreConfig;
  limits: LimitsConfig;
  /** Caller and agent words stay out of logs unless logTranscripts is on (they are in the call record). */
  privacy: PrivacyConfig;
  /** Call recordings (stereo Ogg Opus, consent first): off by default; docs/compliance.md. */
  recording: RecordingConfig;
  /** SIGTERM: how long calls may go on, and what the agent says when it must end them. */
  drain: DrainConfig;
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
  integration: IntegrationConfig;
  /** `asr-server` mode (src/asr-server.ts): the configured ASR served under vLLM's realtime protocol. */
  asrServer: AsrServerConfig;
}

export const DEFAULT_CONFIG: ServiceConfig = {
  ...SERVICE_DEFAULTS,
  auth: AUTH_DEFAULTS,
  store: STORE_DEFAULTS,
  privacy: PRIVACY_DEFAULTS,
  recording: RECORDING_DEFAULTS,
  limits: LIMITS_DEFAULTS,
  maxLengthNotice: MAX_LENGTH_NOTICE_DEFAULTS,
  drain: DRAIN_DEFAULTS,
  turn: TURN_DEFAULTS,
  audioOut: AUDIO_OUT_DEFAULTS,
  webrtc: WEBRTC_DEFAULTS,
  demo: DEMO_DEFAULTS,
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
  integration: INTEGRATION_DEFAULTS,
  asrServer: ASR_SERVER_DEFAULTS,
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
