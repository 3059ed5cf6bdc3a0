/**
 * JSON Schema of ServiceConfig (the one configuration file) and its validation.
 *
 * loadConfig() validates the merged result (defaults ← file ← environment), so an error names the path a user
 * wrote, e.g. `providers.llm.baseUrl: must be a string`. Every object rejects unknown keys (typos are the commonest
 * config bug), naming the nearest known key. Providers and transports declare their own options beside their code
 * (src/core/options.ts); this module composes them with the service-wide sections. It imports nothing from
 * config.ts: config.ts imports it.
 */
import { AUTH_OPTIONS } from './auth/options.js';
import { schemaProblems } from './core/validate.js';
import { LIMITS_OPTIONS } from './limits/options.js';
import { PRIVACY_OPTIONS } from './privacy/options.js';
import { RECORDING_OPTIONS } from './recording/options.js';
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
    turn: obj(
      {
        speechThreshold: num(0, 1),
        silenceThreshold: num(0, 1),
        minSpeechMs: ms(),
        preemptiveSilenceMs: ms(),
        endpointSilenceMs: ms(20),
        grammarEndpoint: { oneOf: [{ const: false }, obj({ completeMs: ms(20), incompleteMs: { type: 'integer', minimum: 20, maximum: 3000 } }, ['completeMs', 'incompleteMs'])] },
        preRollMs: ms(),
        minInterruptionMs: ms(),
        pauseTimeoutMs: ms(),
        backchannels: { type: 'array', items: { type: 'string' } },
        continuationWindowMs: ms(),
        asrFinalTimeoutMs: ms(1),
        dtmfTimeoutMs: ms(100),
        maxTurnMs: ms(1000),
        echoGuard: obj({ enabled: { type: 'boolean' }, maxDelayMs: { type: 'integer', minimum: 20, maximum: 2000 }, marginDb: num(0, 40) }, ['enabled', 'maxDelayMs', 'marginDb']),
      },
      // grammarEndpoint (false turns it off; only meaningful with a grammar decoder) and echoGuard are optional; every other key is required.
      ['speechThreshold', 'silenceThreshold', 'minSpeechMs', 'preemptiveSilenceMs', 'endpointSilenceMs', 'preRollMs', 'minInterruptionMs',
        'pauseTimeoutMs', 'backchannels', 'continuationWindowMs', 'asrFinalTimeoutMs', 'dtmfTimeoutMs', 'maxTurnMs'],
    ),
    audioOut: obj({ leadMs: int(0, 1000) }),
    agent: obj(
      {
        defaultLanguage: langTag,
        systemPrompt: { type: 'string' },
        fallbackReplies: langMap(nonEmpty),
        maxToolRounds: int(0, 10),
        llmFirstTokenTimeoutMs: ms(1),
        llmStallTimeoutMs: ms(1),
        ttsTimeoutMs: ms(1),
        toolHoldMs: ms(0),
        toolHoldReplies: langMap(nonEmpty),
        // What a model is sent each turn: the system prompt and the latest messages within both limits (0: none).
        contextWindow: obj({ maxMessages: int(0), maxChars: int(0) }, ['maxMessages', 'maxChars']),
        tools: obj(
          {
            enabled: strings,
            file: nonEmpty,
            timezone: nonEmpty,
            timeoutMs: ms(1),
            bank: obj(
              {
                customers: {
                  type: 'array',
                  items: obj({
                    customerNumber: { type: 'string', pattern: '^[0-9]+$' },
                    pin: { type: 'string', pattern: '^[0-9]+$' },
                    name: nonEmpty,
                    cards: { type: 'array', items: obj({ last4: { type: 'string', pattern: '^[0-9]{4}$' }, blocked: bool }, ['last4']) },
                  }),
                },
              },
              [],
            ),
          },
          [],
        ),
      },
      ['defaultLanguage', 'systemPrompt', 'fallbackReplies', 'maxToolRounds', 'llmFirstTokenTimeoutMs', 'llmStallTimeoutMs', 'ttsTimeoutMs'],
    ),
    agents: obj(
      {
        // Names are what token claims, logs and call records carry.
        files: { type: 'object', propertyNames: { pattern: '^[A-Za-z0-9_.-]{1,64}$' }, additionalProperties: nonEmpty },
        default: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
        numbers: { type: 'object', propertyNames: { minLength: 1, maxLength: 64 }, additionalProperties: nonEmpty },
        apiKeys: { type: 'object', propertyNames: { minLength: 1, maxLength: 64 }, additionalProperties: nonEmpty },
        unknownNumber: { enum: ['default', 'refuse'] },
        reload: obj({ enabled: bool, debounceMs: ms(), pollMs: ms() }, []),
      },
      [],
    ),
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

interface AgentsRouting {
  files?: Record<string, string>;
  default?: string;
  numbers?: Record<string, string>;
  apiKeys?: Record<string, string>;
}

/**
 * Every agent `agents` routes to must be one of its files or "default" (the agent of providers.llm, unless a file
 * is named so); `agents.default` must be a file.
 */
function agentsProblems(agents: AgentsRouting | undefined): string[] {
  if (!agents) return [];
  const names = new Set([...Object.keys(agents.files ?? {}), 'default']);
  const problems: string[] = [];
  if (agents.default !== undefined && !(agents.default in (agents.files ?? {}))) problems.push(`agents.default: "${agents.default}" is not one of agents.files`);
  for (const section of ['numbers', 'apiKeys'] as const) {
    for (const [key, name] of Object.entries(agents[section] ?? {})) {
      if (!names.has(name)) problems.push(`agents.${section}.${key}: "${name}" is not one of agents.files`);
    }
  }
  return problems;
}

/** What a schema cannot say: relations between keys, each checked by the section that owns them. */
interface CrossChecked {
  agents?: AgentsRouting;
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
