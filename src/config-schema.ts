/**
 * JSON Schema of ServiceConfig (the one configuration file) and its validation.
 *
 * loadConfig() validates the merged result (defaults ← file ← environment), so an error names the path a user
 * wrote, e.g. `providers.llm.baseUrl: must be a string`. Objects reject unknown keys (typos are the commonest
 * config bug), except that any key present in DEFAULT_CONFIG but not described here is accepted unchecked: a
 * section added to the defaults by another module must never make every existing deployment fail to start.
 */
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';
import type { ServiceConfig } from './config.js';
import { WEBHOOK_EVENTS } from './integration/webhooks.js';

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
const httpUrl: Schema = { type: 'string', pattern: '^https?://' };
const wsUrl: Schema = { type: 'string', pattern: '^wss?://' };
const ms = (minimum = 0): Schema => int(minimum);

function obj(properties: Record<string, Schema>, required: string[] = Object.keys(properties)): Schema {
  return { type: 'object', properties, required, additionalProperties: false };
}

/** A provider block: `provider` picks the branch (ajv's discriminator keeps errors about that branch only). */
function providerUnion(branches: Record<string, { properties: Record<string, Schema>; required?: string[]; anyOf?: Schema[] }>): Schema {
  return {
    type: 'object',
    required: ['provider'],
    discriminator: { propertyName: 'provider' },
    oneOf: Object.entries(branches).map(([name, b]) => ({
      ...obj({ provider: { const: name }, ...b.properties }, ['provider', ...(b.required ?? [])]),
      ...(b.anyOf ? { anyOf: b.anyOf } : {}),
    })),
  };
}

/** Several URLs for one remote stage (src/providers/backends.ts). */
const failover: Schema = obj({ strategy: { enum: ['ordered', 'round-robin'] }, downMs: int(0) }, []);
/** An OpenAI-compatible server (or several, with failover) and the model asked for there. */
const remoteEndpoint: Record<string, Schema> = {
  baseUrl: httpUrl,
  baseUrls: { type: 'array', minItems: 1, items: httpUrl },
  failover,
  model: nonEmpty,
  apiKey: nonEmpty,
};

export const CONFIG_SCHEMA: Schema = obj(
  {
    host: nonEmpty,
    trustProxy: strings,
    port: int(0, 65535),
    logLevel: { enum: ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] },
    modelsDir: nonEmpty,
    maxMessageBytes: int(1024),
    metricsRequireApiKey: bool,
    auth: obj(
      {
        apiKeyHashes: { type: 'array', items: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
        tokenSecret: str({ minLength: 16 }),
        tokenTtlS: int(1, 3600),
        required: bool,
        generatedKeyFile: { type: ['string', 'null'], minLength: 1 },
        adminKeyHashes: { type: 'array', items: { type: 'string', pattern: '^[0-9a-f]{64}$' } },
      },
      ['apiKeyHashes', 'tokenTtlS', 'required'],
    ),
    store: obj(
      {
        kind: { enum: ['sqlite', 'postgres'] },
        path: nonEmpty,
        // A cluster's shared store (docs/scale-out.md); the URL may come from VOICE_AGENT_DATABASE_URL instead.
        postgres: obj({
          url: { type: 'string', pattern: '^postgres(ql)?://' },
          nodeId: { type: 'string', pattern: '^[A-Za-z0-9._:-]{1,64}$' },
          leaseMs: { type: 'integer', minimum: 1000, maximum: 600_000 },
          poolSize: int(1, 100),
        }, []),
        retentionDays: int(0),
        networkCallsOwner: { type: 'string', pattern: '^[0-9a-f]{8}$' },
        // 32-byte AES keys, base64: the first encrypts, all decrypt (docs/compliance.md, key rotation).
        encryptionKeys: { type: 'array', items: { type: 'string', pattern: '^[A-Za-z0-9+/]{43}=$' } },
        // Utterances/metrics wait at most this long in memory: what kill -9 can lose (docs/operations.md).
        flushIntervalMs: { type: 'integer', minimum: 1, maximum: 1000 },
      },
      ['path', 'retentionDays'],
    ),
    limits: obj({
      maxSessionsPerKey: int(0),
      sessionsPerMinutePerKey: int(0),
      maxSessions: int(0),
      maxSessionMs: ms(),
      idleTimeoutMs: ms(),
      maxMessagesPerSecond: int(0),
      maxBufferedBytes: int(0),
    }),
    privacy: obj({ logTranscripts: bool, redact: { type: 'array', items: { enum: ['card', 'iban', 'digits'] }, uniqueItems: true } }),
    recording: obj({
      enabled: bool,
      dir: nonEmpty,
      retentionDays: int(0),
      bitrate: int(6000, 510_000),
      consentLine: langMap(nonEmpty),
      refusedLine: langMap(nonEmpty),
    }),
    drain: obj({ deadlineMs: ms(), notice: langMap(nonEmpty) }),
    maxLengthNotice: langMap(nonEmpty),
    turn: obj(
      {
        speechThreshold: num(0, 1),
        silenceThreshold: num(0, 1),
        minSpeechMs: ms(),
        preemptiveSilenceMs: ms(),
        endpointSilenceMs: ms(20),
        grammarEndpoint: obj({ completeMs: ms(20), incompleteMs: { type: 'integer', minimum: 20, maximum: 3000 } }, ['completeMs', 'incompleteMs']),
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
      // grammarEndpoint (only meaningful with a grammar decoder) and echoGuard are optional; every other key is required.
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
    providers: obj({
      vad: providerUnion({
        silero: {
          properties: {
            modelPath: nonEmpty,
            // 'cuda' falls back to 'cpu' (logged) when this onnxruntime-node build has no CUDA provider.
            executionProviders: { type: 'array', minItems: 1, items: { enum: ['cpu', 'cuda', 'dml', 'coreml', 'webgpu', 'tensorrt'] } },
            // false: the batched inference runs on the event loop's thread (it blocks it for each batch).
            worker: { type: 'boolean' },
          },
        },
      }),
      asr: providerUnion({
        pocketsphinx: {
          properties: {
            modelDir: nonEmpty,
            spareDecoders: int(1, 64),
            maxIdleDecoders: int(0, 256),
            grammar: { enum: ['auto', 'on', 'off'] },
            languages: { type: 'array', minItems: 1, items: langTag },
            spanishModelDir: nonEmpty,
            names: langMap(strings),
            garbageWeight: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
            stickiness: num(0, 5),
            switchFloor: num(-20, 0),
            firstSwitchFloor: num(-20, 0),
          },
        },
        'vllm-realtime': {
          properties: {
            url: wsUrl,
            urls: { type: 'array', minItems: 1, items: wsUrl },
            failover,
            trailingSilenceMs: ms(),
            model: nonEmpty,
            apiKey: nonEmpty,
            languages: { type: 'array', minItems: 1, items: { anyOf: [langTag, { const: '*' }] } },
            connectTimeoutMs: ms(1),
            finalTimeoutMs: ms(1),
          },
          required: ['model'],
          anyOf: [{ required: ['url'] }, { required: ['urls'] }],
        },
        'openai-batch': {
          properties: {
            baseUrl: httpUrl,
            model: nonEmpty,
            apiKey: nonEmpty,
            languages: { type: 'array', minItems: 1, items: { anyOf: [langTag, { const: '*' }] } },
            timeoutMs: ms(1),
            retries: int(0, 10),
            responseFormat: { enum: ['json', 'verbose_json'] },
          },
          required: ['baseUrl', 'model'],
        },
      }),
      llm: providerUnion({
        rules: { properties: { rulesPath: nonEmpty } },
        openai: {
          properties: {
            ...remoteEndpoint,
            temperature: num(0, 2),
            maxTokens: int(1),
            timeoutMs: ms(1),
            idleTimeoutMs: ms(1),
            retries: int(0, 10),
            retryBaseDelayMs: ms(),
            extraHeaders: { type: 'object', additionalProperties: { type: 'string' } },
          },
          required: ['model'],
          anyOf: [{ required: ['baseUrl'] }, { required: ['baseUrls'] }],
        },
        llamacpp: {
          properties: {
            modelPath: nonEmpty,
            gpu: { enum: ['auto', false] },
            contextSize: int(256),
            sequences: int(1, 64),
            temperature: num(0, 2),
            maxTokens: int(1),
            tools: bool,
            threads: int(1),
          },
          required: ['modelPath'],
        },
      }),
      tts: providerUnion({
        'openai-speech': {
          properties: {
            ...remoteEndpoint,
            voices: langMap(nonEmpty),
            sampleRate: int(8000, 192_000),
            streamFormat: { const: 'audio' },
            speed: num(0.25, 4),
            timeoutMs: ms(1),
            idleTimeoutMs: ms(1),
            embeddedFallback: { enum: ['auto', 'svoxpico', 'espeak', 'none'] },
            embeddedVoices: langMap(nonEmpty),
            espeakEngine: { enum: ['wasm', 'process', 'none'] },
          },
          required: ['model', 'voices'],
          anyOf: [{ required: ['baseUrl'] }, { required: ['baseUrls'] }],
        },
        ...Object.fromEntries(
          ['auto', 'svoxpico', 'espeak'].map((name) => [
            name,
            {
              properties: {
                voicesDir: nonEmpty,
                // Per-language voice, e.g. { "en": "en-GB", "pt": "roa/pt-BR" }.
                voices: langMap(nonEmpty),
                fallback: bool,
                gainDb: num(-40, 20),
                espeakWorkers: int(1, 64),
                espeakEngine: { enum: ['wasm', 'process', 'none'] },
              },
            },
          ]),
        ),
      }),
    }),
    webrtc: obj(
      {
        iceServers: {
          type: 'array',
          items: obj(
            {
              urls: { anyOf: [nonEmpty, { type: 'array', items: nonEmpty, minItems: 1 }] },
              username: { type: 'string' },
              credential: { type: 'string' },
            },
            ['urls'],
          ),
        },
        corsOrigins: { type: 'array', items: nonEmpty },
        candidateAddresses: { type: 'array', items: nonEmpty },
        portRange: obj({ min: int(1, 65535), max: int(1, 65535) }),
        maxPeers: int(0),
        iceGatheringTimeoutMs: ms(),
        disconnectGraceMs: ms(),
        maxConcurrentOffers: int(1),
        maxOfferMediaSections: int(1, 16),
        maxRemoteCandidates: int(0, 256),
        remoteCandidateNetworks: strings,
      },
      ['iceServers', 'corsOrigins', 'candidateAddresses', 'maxPeers', 'iceGatheringTimeoutMs', 'disconnectGraceMs'],
    ),
    demo: obj({ enabled: bool, allowedHosts: strings }, ['enabled']),
    chatCompletions: obj({ enabled: bool, model: nonEmpty }),
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

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Adds keys the defaults have but the schema does not describe, accepting any value for them (see top). */
function tolerateDefaults(schema: Schema, defaults: unknown): Schema {
  if (!isRecord(defaults) || !isRecord(schema.properties) || schema.oneOf !== undefined) return schema;
  const properties: Record<string, unknown> = { ...schema.properties };
  for (const [key, value] of Object.entries(defaults)) {
    const known = properties[key];
    properties[key] = isRecord(known) ? tolerateDefaults(known, value) : {};
  }
  return { ...schema, properties };
}

let compiled: { validate: ValidateFunction; forDefaults: unknown } | undefined;

function validator(defaults: unknown): ValidateFunction {
  if (compiled !== undefined && compiled.forDefaults === defaults) return compiled.validate;
  const ajv = new Ajv({ allErrors: true, discriminator: true, strict: false });
  const validate = ajv.compile(tolerateDefaults(CONFIG_SCHEMA, defaults));
  compiled = { validate, forDefaults: defaults };
  return validate;
}

/** `providers.llm.baseUrl`-style path of an ajv error. */
function errorPath(e: ErrorObject): string {
  const parts = e.instancePath
    .split('/')
    .slice(1)
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'));
  if (e.keyword === 'required') parts.push(String((e.params as { missingProperty: string }).missingProperty));
  if (e.keyword === 'additionalProperties') parts.push(String((e.params as { additionalProperty: string }).additionalProperty));
  return parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '') || '(top level)';
}

function describe(e: ErrorObject): string {
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties':
      return 'is not a known setting (check the spelling)';
    case 'enum':
      return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'type': {
      const t = String((e.params as { type: string }).type);
      const article: Record<string, string> = { integer: 'an integer', object: 'an object', array: 'an array', boolean: 'true or false', string: 'a string', number: 'a number' };
      return `must be ${article[t] ?? t}`;
    }
    case 'const':
      return `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    case 'discriminator': {
      const p = e.params as { error: string; tag: string; tagValue?: unknown };
      return p.error === 'mapping' ? `unknown provider ${JSON.stringify(p.tagValue)}` : 'must be a string naming the provider';
    }
    case 'pattern': {
      const pattern = (e.params as { pattern: string }).pattern;
      if (pattern === '^https?://') return 'must be an http:// or https:// URL';
      if (pattern === '^wss?://') return 'must be a ws:// or wss:// URL';
      if (pattern.startsWith('^[a-z]{2,3}')) return 'must be a language tag such as "en" or "fr-FR"';
      if (pattern === '^[0-9a-f]{64}$') return 'must be a SHA-256 hex digest (64 lower-case hex characters)';
      if (pattern === '^[A-Za-z0-9+/]{43}=$') return 'must be 32 random bytes in base64 (openssl rand -base64 32)';
      return `must match ${pattern}`;
    }
    default:
      return e.message ?? e.keyword;
  }
}

/** The list of problems with `config` (empty when valid), one `path: message` per line. */
export function configProblems(config: unknown, defaults: unknown): string[] {
  const validate = validator(defaults);
  if (validate(config)) return [];
  const errors = validate.errors ?? [];
  // With a discriminator the branch's own errors are precise; drop oneOf's summary noise.
  const lines = errors.filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'if').map((e) => `${errorPath(e)}: ${describe(e)}`);
  return [...new Set(lines)];
}

/**
 * Every agent `agents` routes to must be one of its files or "default" (the agent of providers.llm, unless a file
 * is named so); `agents.default` must be a file.
 */
function agentsProblems(agents: ServiceConfig['agents'] | undefined): string[] {
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

/**
 * Throws a ConfigError listing every problem; returns the config unchanged when it is valid. `defaults` is
 * DEFAULT_CONFIG (passed in: config.ts imports this module).
 */
export function validateConfig(config: ServiceConfig, source: string, defaults: unknown): ServiceConfig {
  const problems = configProblems(config, defaults);
  problems.push(...agentsProblems(config.agents));
  const portRange = (config as { webrtc?: { portRange?: { min: number; max: number } } }).webrtc?.portRange;
  if (portRange && portRange.min > portRange.max) problems.push('webrtc.portRange: min must not exceed max');
  if (problems.length > 0) throw new ConfigError(source, problems);
  return config;
}
