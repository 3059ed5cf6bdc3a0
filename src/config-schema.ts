/**
 * JSON Schema of ServiceConfig (the one configuration file) and its validation.
 *
 * loadConfig() validates the merged result (defaults ← file ← environment), so an error names the path a user
 * wrote, e.g. `providers.llm.baseUrl: must be a string`. Every object rejects unknown keys (typos are the commonest
 * config bug), naming the nearest known key. Providers and transports declare their own options beside their code
 * (src/core/options.ts); this module composes them with the service-wide sections. It imports nothing from
 * config.ts: config.ts imports it.
 */
import { AGENT_OPTIONS, AGENTS_OPTIONS, agentsProblems, type AgentsConfig } from './agents/options.js';
import { AUTH_OPTIONS } from './auth/options.js';
import { schemaProblems } from './core/validate.js';
import { LIMITS_OPTIONS } from './limits/options.js';
import { PRIVACY_OPTIONS } from './privacy/options.js';
import { RECORDING_OPTIONS } from './recording/options.js';
import { AUDIO_OUT_OPTIONS, TURN_OPTIONS } from './session/options.js';
import { STORE_OPTIONS } from './store/options.js';
import { WEBHOOK_EVENTS } from './integration/webhooks.js';
import { PROVIDERS_OPTIONS } from './providers/options.js';
import { CHAT_COMPLETIONS_OPTIONS } from './transports/openai-chat/options.js';
import { SIP_OPTIONS, sipProblems, type SipConfig } from './transports/sip/options.js';
import { TELEPHONY_OPTIONS } from './transports/telephony/options.js';
import { WEBRTC_OPTIONS, webRtcProblems, type WebRtcConfig } from './transports/webrtc/options.js';

type Schema = Record<string, unknown>;

const str = (extra: Schema = {}): Schema => ({ type: 'string', ...extra });
const nonEmpty: Schema = { type: 'string', minLength: 1 };
const int = (minimum: number, maximum?: number): Schema => ({ type: 'integer', minimum, ...(maximum !== undefined ? { maximum } : {}) });
const num = (minimum?: number, maximum?: number): Schema => ({
  type: 'number',
  ...(minimum !== undefined ? { minimum } : {}),
  ...(maximum !== undefined ? { maximum } : {}),
});
const bool: Schema = { type: 'boolean' };
const strings: Schema = { type: 'array', items: nonEmpty };
const langTag: Schema = { type: 'string', pattern: '^[a-z]{2,3}(-[A-Za-z0-9]+)*$' };
const langMap = (value: Schema): Schema => ({ type: 'object', propertyNames: langTag, additionalProperties: value });
const ms = (minimum = 0): Schema => int(minimum);

function obj(properties: Record<string, Schema>, required: string[] = Object.keys(properties)): Schema {
  return { type: 'object', properties, required, additionalProperties: false };
}

export const CONFIG_SCHEMA: Schema = obj(
  {
    host: nonEmpty,
    trustProxy: strings,
    port: int(0, 65535),
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    modelsDir: nonEmpty,
    maxMessageBytes: int(1024),
    metricsRequireApiKey: bool,
    auth: AUTH_OPTIONS,
    store: STORE_OPTIONS,
    limits: LIMITS_OPTIONS,
    privacy: PRIVACY_OPTIONS,
    recording: RECORDING_OPTIONS,
    drain: obj({ deadlineMs: ms(), notice: langMap(nonEmpty) }),
    maxLengthNotice: langMap(nonEmpty),
    turn: TURN_OPTIONS,
    audioOut: AUDIO_OUT_OPTIONS,
    agent: AGENT_OPTIONS,
    agents: AGENTS_OPTIONS,
    providers: PROVIDERS_OPTIONS,
    webrtc: WEBRTC_OPTIONS,
    telephony: TELEPHONY_OPTIONS,
    sip: SIP_OPTIONS,
    demo: obj({ enabled: bool, allowedHosts: strings }, ['enabled']),
    chatCompletions: CHAT_COMPLETIONS_OPTIONS,
    integration: obj(
      {
        webhooks: obj(
          {
            // Empty: off.
            url: { type: 'string', pattern: '^(https?://.+)?$' },
            secretEnv: { type: 'string', pattern: '^[A-Z_][A-Z0-9_]*$' },
            events: { type: 'array', items: { enum: [...WEBHOOK_EVENTS] } },
            timeoutMs: ms(100),
            maxAttempts: int(1, 50),
            backoffMs: ms(1),
            maxBackoffMs: ms(1),
            maxQueue: int(1),
          },
          [],
        ),
      },
      [],
    ),
    asrServer: obj({
      path: { type: 'string', pattern: '^/[A-Za-z0-9/_.-]*$' },
      model: nonEmpty,
      maxSessions: int(1),
      maxUtteranceMs: ms(1000),
    }),
  },
  ['host', 'port', 'logLevel', 'modelsDir', 'maxMessageBytes', 'auth', 'turn', 'audioOut', 'agent', 'providers'],
);

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
