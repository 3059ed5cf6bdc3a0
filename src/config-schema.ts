/**
 * JSON Schema of ServiceConfig (the one configuration file) and its validation.
 *
 * loadConfig() validates the merged result (defaults ← file ← environment), so an error names the path a user
 * wrote, e.g. `providers.llm.baseUrl: must be a string`. Every object rejects unknown keys (typos are the commonest
 * config bug), naming the nearest known key. Every section declares its options beside the code that owns it
 * (an `options.ts`, built with src/core/options.ts); this module only composes them. It imports nothing from
 * config.ts: config.ts imports it.
 */
import { AGENT_OPTIONS, AGENTS_OPTIONS, agentsProblems, type AgentsConfig } from './agents/options.js';
import { ASR_SERVER_OPTIONS } from './asr-server-options.js';
import { AUTH_OPTIONS } from './auth/options.js';
import { t } from './core/options.js';
import { schemaProblems } from './core/validate.js';
import { INTEGRATION_OPTIONS } from './integration/options.js';
import { LIMITS_OPTIONS } from './limits/options.js';
import { PRIVACY_OPTIONS } from './privacy/options.js';
import { PROVIDERS_OPTIONS } from './providers/options.js';
import { RECORDING_OPTIONS } from './recording/options.js';
import { DEMO_OPTIONS, DRAIN_OPTIONS, MAX_LENGTH_NOTICE_OPTIONS, SERVICE_OPTIONS } from './service-options.js';
import { AUDIO_OUT_OPTIONS, TURN_OPTIONS } from './session/options.js';
import { STORE_OPTIONS } from './store/options.js';
import { CHAT_COMPLETIONS_OPTIONS } from './transports/openai-chat/options.js';
import { SIP_OPTIONS, sipProblems, type SipConfig } from './transports/sip/options.js';
import { TELEPHONY_OPTIONS } from './transports/telephony/options.js';
import { WEBRTC_OPTIONS, webRtcProblems, type WebRtcConfig } from './transports/webrtc/options.js';

/**
 * Sections the file may leave out are optional here; loadConfig validates the merged result, in which every
 * section is there with its defaults.
 */
export const CONFIG_SCHEMA = t.object({
  ...SERVICE_OPTIONS,
  auth: AUTH_OPTIONS,
  store: t.optional(STORE_OPTIONS),
  limits: t.optional(LIMITS_OPTIONS),
  privacy: t.optional(PRIVACY_OPTIONS),
  recording: t.optional(RECORDING_OPTIONS),
  drain: t.optional(DRAIN_OPTIONS),
  maxLengthNotice: t.optional(MAX_LENGTH_NOTICE_OPTIONS),
  turn: TURN_OPTIONS,
  audioOut: AUDIO_OUT_OPTIONS,
  agent: AGENT_OPTIONS,
  agents: t.optional(AGENTS_OPTIONS),
  providers: PROVIDERS_OPTIONS,
  webrtc: t.optional(WEBRTC_OPTIONS),
  telephony: t.optional(TELEPHONY_OPTIONS),
  sip: t.optional(SIP_OPTIONS),
  demo: t.optional(DEMO_OPTIONS),
  chatCompletions: t.optional(CHAT_COMPLETIONS_OPTIONS),
  integration: t.optional(INTEGRATION_OPTIONS),
  asrServer: t.optional(ASR_SERVER_OPTIONS),
});

export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  constructor(
    readonly source: string,
    readonly problems: string[],
  ) {
    super(`${source}: invalid configuration:\n  - ${problems.join('\n  - ')}`);
  }
}

/**
 * The list of problems with `config` (empty when valid), one `path: message` per line. (`_defaults` is no longer
 * used: every section has a schema, and test/config-options.test.ts keeps it so.)
 */
export function configProblems(config: unknown, _defaults?: unknown): string[] {
  return schemaProblems(CONFIG_SCHEMA, config);
}

/** What a schema cannot say: relations between keys, each checked by the section that owns them. */
interface CrossChecked {
  agents?: Partial<AgentsConfig>;
  webrtc?: WebRtcConfig;
  sip?: SipConfig;
}

/**
 * Throws a ConfigError listing every problem; returns the config unchanged when it is valid. Relations between
 * keys are checked only once the shapes are right.
 */
export function validateConfig<T extends object>(config: T, source: string, _defaults?: unknown): T {
  const problems = configProblems(config);
  if (problems.length === 0) {
    const c = config as CrossChecked;
    problems.push(...agentsProblems(c.agents), ...(c.webrtc ? webRtcProblems(c.webrtc) : []), ...(c.sip ? sipProblems(c.sip) : []));
  }
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}
