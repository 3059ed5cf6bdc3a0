import { DEFAULT_ECHO_GUARD, type EchoGuardConfig } from './session/echo-guard.js';
import type { BankCustomer } from './providers/llm/tools.js';
import type { RemoteTtsConfig } from './providers/tts/index.js';
import { DEFAULT_WEBHOOKS, type WebhooksConfig } from './integration/webhooks.js';
import { readFileSync, existsSync } from 'node:fs';
import type { AuthConfig } from './auth/auth.js';
import type { StoreConfig } from './store/call-store.js';
import { DEFAULT_CONTEXT_WINDOW, type ContextWindow } from './session/context-window.js';
import type { LimitsConfig } from './limits/limits.js';
import path from 'node:path';
import { validateConfig } from './config-schema.js';
import type { RedactKind } from './privacy/redact.js';
import type { RecordingConfig } from './recording/recorder.js';

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
  /**
   * Optional endpoint from the ASR grammar (partials that tell whether they complete a sentence): silence
   * that ends the turn when the running hypothesis is a whole sentence, and when it is a strict prefix
   * ("book a table for"). Without it, or without a grammar decoder, endpointSilenceMs applies.
   */
  grammarEndpoint?: { completeMs: number; incompleteMs: number };
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
  /** ASR's final transcript within this after the endpoint, or the turn fails with asr_failed. */
  asrFinalTimeoutMs: number;
  /** Keypad digits are gathered until '#' or this much time without a new digit. */
  dtmfTimeoutMs: number;
  /** Longest caller turn before it is ended regardless of pauses. */
  maxTurnMs: number;
  /**
   * The agent's own voice coming back on the caller's line (phone hybrids, speakerphones) is not the caller
   * barging in (src/session/echo-guard.ts). Optional: on by default.
   */
  echoGuard?: EchoGuardConfig;
}

export interface AudioOutConfig {
  /** How far ahead of real time agent audio is sent to the client (its playout buffer). */
  leadMs: number;
}

/** `worker` (default true): run Silero's batched inference in a worker thread instead of on the event loop. */
export type VadProviderConfig = { provider: 'silero'; modelPath?: string; executionProviders?: string[]; worker?: boolean };
export type AsrProviderConfig =
  | {
      provider: 'pocketsphinx';
      modelDir?: string;
      /** Decoders kept ready for new calls (~95 MB each, default 4); a burst of new calls beyond it waits ~0.4 s per decoder. */
      spareDecoders?: number;
      /** Idle decoders kept for reuse after calls end. */
      maxIdleDecoders?: number;
      /**
       * Decode against grammars compiled from what the agent understands (see src/providers/asr/grammar):
       * 'auto' (default) with the embedded rules agent, not with an LLM backend (a model handles open speech);
       * 'on' always (from the rules file); 'off' the generic English LM only.
       */
      grammar?: 'auto' | 'on' | 'off';
      /** Grammar languages to load when their model is present (default: all of en, es). */
      languages?: string[];
      /** Spanish acoustic model directory (default env POCKETSPHINX_ES_DIR, else ../shared/models/pocketsphinx-es). */
      spanishModelDir?: string;
      /** Extra names callers may give, per language, added to the agent's name slots (the rules file's `names` always are). */
      names?: Record<string, string[]>;
      /** Per-phone weight of the garbage loop that absorbs out-of-domain sound (default 1e-20). */
      garbageWeight?: number;
      /**
       * Language choice between grammar lanes (src/providers/asr/pocketsphinx/grammar.ts): the margin another
       * language's score (likelihood ratio against its own phone loop, thousandths of a nat per frame) needs over the
       * current language's to take a turn (default 0.2), and the least score with which a turn leaves a language the
       * caller has spoken (default -3, a confidence of 0.5): weaker evidence keeps the language.
       */
      stickiness?: number;
      switchFloor?: number;
      /** The floor while the call is still in its default language, not yet spoken by the caller (default -3.4). */
      firstSwitchFloor?: number;
    }
  /** A vLLM realtime server (`vllm serve mistralai/Voxtral-Mini-4B-Realtime-2602`) or this service's asr-server mode. */
  | {
      provider: 'vllm-realtime';
      /** One server, or several in `urls` (failover, docs/gpu.md). */
      url?: string;
      urls?: string[];
      failover?: RemoteFailoverConfig;
      model: string;
      apiKey?: string;
      languages?: string[];
      connectTimeoutMs?: number;
      finalTimeoutMs?: number;
      /** Silence sent before the final commit so Voxtral decodes the last window (default 500 ms). */
      trailingSilenceMs?: number;
    }
  /** Batch OpenAI-compatible `/v1/audio/transcriptions` (Whisper / Voxtral servers): final-only, re-decodes each utterance. */
  | { provider: 'openai-batch'; baseUrl: string; model: string; apiKey?: string; languages?: string[]; timeoutMs?: number; retries?: number; responseFormat?: 'json' | 'verbose_json' };
/** Several URLs for one remote stage: 'ordered' (default) or 'round-robin'; a failed URL rests `downMs` (default 5000). */
export type RemoteFailoverConfig = { strategy?: 'ordered' | 'round-robin'; downMs?: number };
export type LlmProviderConfig =
  | { provider: 'rules'; rulesPath?: string }
  | {
      provider: 'openai';
      /** One server, or several in `baseUrls` (failover, docs/gpu.md). */
      baseUrl?: string;
      baseUrls?: string[];
      failover?: RemoteFailoverConfig;
      model: string;
      apiKey?: string;
      temperature?: number;
      maxTokens?: number;
      timeoutMs?: number;
      retries?: number;
    }
  | { provider: 'llamacpp'; modelPath: string; gpu?: 'auto' | false; contextSize?: number; temperature?: number; maxTokens?: number };
export type TtsProviderConfig =
  | {
      provider: 'auto' | 'svoxpico' | 'espeak';
      voicesDir?: string;
      voices?: Record<string, string>;
      /** 'wasm' (GPL-3.0 build in this process), 'process' (system espeak-ng), 'none'; see src/providers/tts/index.ts. */
      espeakEngine?: 'wasm' | 'process' | 'none';
    }
  /** A remote `/v1/audio/speech` server (vLLM-Omni, Kokoro-FastAPI, Orpheus-FastAPI): src/providers/tts/openai-speech. */
  | RemoteTtsConfig;

/** Browser calls over WebRTC (src/transports/webrtc, signaling/). docs/webrtc.md explains each field. */
export interface WebRtcConfig {
  /** STUN/TURN servers for the server's own ICE agent (empty: host candidates only, no traffic to third parties). */
  iceServers: { urls: string | string[]; username?: string; credential?: string }[];
  /** Origins allowed to call the signaling routes from a page on another origin ("*" allows any). */
  corsOrigins: string[];
  /** Only these local IPs are offered as host candidates (empty: every interface libwebrtc finds). */
  candidateAddresses: string[];
  /** UDP ports the server's ICE agent may use (open these in the firewall). */
  portRange?: { min: number; max: number };
  /** Concurrent browser calls one process accepts; more get 503. */
  maxPeers: number;
  /** Longest wait for ICE gathering before the answer is sent with the candidates found so far. */
  iceGatheringTimeoutMs: number;
  /** A peer whose connection dropped (tab closed, network gone) is hung up after this long. */
  disconnectGraceMs: number;
  /** Offers being negotiated at once; more get 503 with Retry-After (docs/security.md). */
  maxConcurrentOffers: number;
  /** m= sections an offer may hold (several must be BUNDLEd); more get 400. */
  maxOfferMediaSections: number;
  /** Distinct ICE candidates an offer may list; more get 400. */
  maxRemoteCandidates: number;
  /** Non-public networks (CIDRs) a caller's ICE candidates may name; by default only public addresses are probed. */
  remoteCandidateNetworks: string[];
}

/** Phone calls through providers' media-stream WebSockets (src/transports/telephony, docs/telephony.md). */
export interface TelephonyConfig {
  /**
   * The public base URL providers connect to (e.g. `wss://voice.example.com`), when a proxy sits in front:
   * Twilio signs the URL it requested, so it is needed to verify X-Twilio-Signature. Default: from the
   * request's Host and X-Forwarded-Proto headers.
   */
  publicUrl?: string;
  /** With `authToken` set, every Twilio upgrade must carry a valid X-Twilio-Signature. */
  twilio: { authToken?: string };
  /** A stream that has not sent its start message this long after connecting is closed. */
  startTimeoutMs: number;
  /** Media frames held back waiting for a missing one (Telnyx may reorder), 20 ms each. */
  reorderDepth: number;
}

/** Native SIP + RTP phone calls (src/transports/sip, docs/sip.md). */
export interface SipConfig {
  enabled: boolean;
  /** Address the SIP UDP and TCP listeners bind (and RTP sockets, unless `rtpHost`). */
  host: string;
  /** SIP port, UDP and TCP (0: a free one). */
  port: number;
  /** Address written into SDP and Contact when `host` is a wildcard or behind NAT (default: the address the request reached). */
  publicAddress?: string;
  /** Source addresses allowed to send SIP (CIDRs); others get 403. Default: loopback only. */
  allowFrom: string[];
  /** Optional Digest authentication of INVITEs (trunks that require it). */
  digest?: { realm: string; users: Record<string, string> };
  /** Even UDP ports for RTP (RTCP on port+1). */
  rtpPortMin: number;
  rtpPortMax: number;
  /** A call with no RTP for this long is hung up (BYE). */
  rtpTimeoutMs: number;
  /** Ringing before the 200 OK (0: answer at once). */
  ringMs: number;
  /** Codecs accepted, in the caller's preference order. */
  codecs: ('pcmu' | 'pcma' | 'opus')[];
  /** Where `call.action: transfer` sends the caller (SIP REFER), e.g. "sip:desk@pbx.example.com"; unset: no transfer. */
  transferTarget?: string;
  /**
   * The call's language by dialled number (the Request-URI user, else the To user), e.g. `{ "+34910000000": "es" }`:
   * such a call is heard and answered in that language only (no per-turn detection, one recogniser lane).
   */
  languageByNumber?: Record<string, string>;
  /** Concurrent SIP calls; more get 486 Busy Here. */
  maxCalls: number;
  /** SIP messages above this get 513. */
  maxMessageBytes: number;
  /**
   * Where RTP may be sent besides the INVITE's source address (CIDRs), e.g. a trunk's media servers when they
   * differ from its signalling servers. An SDP naming anything else is refused with 488.
   */
  mediaNetworks: string[];
}

/**
 * The demo page at `/`: it fetches a session token from `GET /v1/demo/token`, answered to loopback clients only.
 * Off unless asked for (`npm start -- --demo`, VOICE_AGENT_DEMO=1 or `demo.enabled`): see docs/security.md.
 */
export interface DemoConfig {
  enabled: boolean;
  /** Host header values (without port) the demo answers to: a DNS-rebinding page names its own host. */
  allowedHosts: string[];
}

export interface AgentConfig {
  /** Language assumed until ASR reports one. */
  defaultLanguage: string;
  /** System prompt for model-backed LLMs. */
  systemPrompt: string;
  /** Spoken when a backend fails mid-turn, per language. */
  fallbackReplies: Record<string, string>;
  /** Rounds of tool calls allowed in one turn before the agent must answer. */
  maxToolRounds: number;
  /** No first token within this → the LLM counts as failed and the fallback is spoken. */
  llmFirstTokenTimeoutMs: number;
  /** A gap this long between tokens mid-reply → failed. */
  llmStallTimeoutMs: number;
  /** TTS first audio (and each later chunk) within this, or the segment fails. */
  ttsTimeoutMs: number;
  /** Which built-in tools the agent may call (default: all), their timezone and timeout. */
  tools?: { enabled?: string[]; timezone?: string; timeoutMs?: number; bank?: { customers?: BankCustomer[] }; file?: string };
  /** A tool still running after this long: the caller hears a holdReplies line ("one moment") meanwhile; 0: never. */
  toolHoldMs: number;
  /** The "one moment" line, per language. */
  toolHoldReplies: Record<string, string>;
  /** How much of the conversation a model is sent each turn (src/session/context-window.ts); default 40 messages, 16000 chars. */
  contextWindow?: ContextWindow;
}

/**
 * Several agents in one deployment (docs/integration.md, "Several agents"): rule-based agent files by name, which
 * calls each one answers, and how changed files are reloaded. With no `files` the single agent of `providers.llm`
 * answers every call, as before.
 */
export interface AgentsConfig {
  /** Agent name → rules JSON file (src/providers/llm/rules; its HTTP tools and ASR grammars come with it). */
  files: Record<string, string>;
  /** The agent of calls nothing else selects: a name in `files`; unset: the agent of `providers.llm`, named "default". */
  default?: string;
  /** Dialled number (SIP Request-URI or To user, media-stream `to` parameter) → agent name. */
  numbers: Record<string, string>;
  /** API key id (8 hex characters, as in logs and /v1/calls owners) → agent name. */
  apiKeys: Record<string, string>;
  /** A call to a number missing from `numbers`: the default agent, or refused (SIP 404, media stream closed). */
  unknownNumber: 'default' | 'refuse';
  /** Changed files are reloaded without a restart: fs.watch (debounced) and an mtime check every pollMs as backup. */
  reload: { enabled: boolean; debounceMs: number; pollMs: number };
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
  privacy: {
    logTranscripts: boolean;
    /**
     * Payment data redacted from what callers say or type, whatever the agent asked (src/privacy/redact.ts):
     * 'card' (Luhn-valid 13–19 digit runs, spoken digits too), 'iban', 'digits' (any run of 13+ digits: catches
     * numbers the recogniser got slightly wrong). Empty turns it off.
     */
    redact: RedactKind[];
  };
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
  chatCompletions: { enabled: boolean; model: string };
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
  auth: { apiKeyHashes: [], tokenTtlS: 300, required: true, generatedKeyFile: 'data/api-key' },
  store: { path: 'data/calls.db', retentionDays: 30 },
  privacy: { logTranscripts: false, redact: ['card', 'iban'] },
  recording: {
    enabled: false,
    dir: 'data/recordings',
    retentionDays: 30,
    bitrate: 32_000,
    consentLine: {
      en: 'This call is recorded. If you do not want it recorded, say no, or press 9.',
      fr: "Cet appel est enregistré. Si vous ne le souhaitez pas, dites non, ou appuyez sur 9.",
      de: 'Dieser Anruf wird aufgezeichnet. Wenn Sie das nicht möchten, sagen Sie nein oder drücken Sie die 9.',
      es: 'Esta llamada se graba. Si no desea que se grabe, diga no o pulse 9.',
      it: 'Questa chiamata viene registrata. Se non desidera che sia registrata, dica no o prema 9.',
    },
    refusedLine: {
      en: 'All right, this call will not be recorded. How can I help you?',
      fr: "D'accord, cet appel ne sera pas enregistré. Comment puis-je vous aider ?",
      de: 'In Ordnung, dieser Anruf wird nicht aufgezeichnet. Wie kann ich Ihnen helfen?',
      es: 'De acuerdo, esta llamada no se grabará. ¿En qué puedo ayudarle?',
      it: 'Va bene, questa chiamata non sarà registrata. Come posso aiutarla?',
    },
  },
  limits: {
    maxSessionsPerKey: 100,
    sessionsPerMinutePerKey: 600,
    maxSessions: 0,
    maxSessionMs: 60 * 60_000,
    idleTimeoutMs: 60_000,
    maxMessagesPerSecond: 200,
    maxBufferedBytes: 512 * 1024,
  },
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
  turn: {
    speechThreshold: 0.5,
    silenceThreshold: 0.35,
    minSpeechMs: 60,
    preemptiveSilenceMs: 60,
    endpointSilenceMs: 180,
    preRollMs: 200,
    minInterruptionMs: 300,
    pauseTimeoutMs: 240,
    backchannels: ['ok', 'okay', 'mhm', 'mm', 'uh-huh', 'yeah', 'yes', 'right', 'oui', 'ja', 'si', 'sí', 'd accord', 'hm'],
    continuationWindowMs: 1000,
    asrFinalTimeoutMs: 5000,
    dtmfTimeoutMs: 1500,
    maxTurnMs: 30_000,
    echoGuard: DEFAULT_ECHO_GUARD,
  },
  audioOut: { leadMs: 40 },
  webrtc: {
    iceServers: [],
    corsOrigins: [],
    candidateAddresses: [],
    maxPeers: 200,
    iceGatheringTimeoutMs: 3000,
    disconnectGraceMs: 5000,
    maxConcurrentOffers: 8,
    maxOfferMediaSections: 4,
    maxRemoteCandidates: 50,
    remoteCandidateNetworks: [],
  },
  demo: { enabled: false, allowedHosts: ['localhost', '127.0.0.1', '::1'] },
  telephony: { twilio: {}, startTimeoutMs: 10_000, reorderDepth: 3 },
  sip: {
    enabled: true,
    host: '0.0.0.0',
    port: 5060,
    allowFrom: ['127.0.0.0/8', '::1/128'],
    rtpPortMin: 10_000,
    rtpPortMax: 20_000,
    rtpTimeoutMs: 30_000,
    ringMs: 0,
    codecs: ['pcmu', 'pcma', 'opus'],
    maxCalls: 200,
    maxMessageBytes: 16 * 1024,
    mediaNetworks: [],
  },
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
    llmFirstTokenTimeoutMs: 8000,
    llmStallTimeoutMs: 10_000,
    ttsTimeoutMs: 5000,
    toolHoldMs: 1000,
    toolHoldReplies: {
      en: 'One moment, please.',
      fr: 'Un instant, s’il vous plaît.',
      de: 'Einen Moment, bitte.',
      es: 'Un momento, por favor.',
      it: 'Un attimo, per favore.',
    },
    contextWindow: { ...DEFAULT_CONTEXT_WINDOW },
  },
  agents: { files: {}, numbers: {}, apiKeys: {}, unknownNumber: 'default', reload: { enabled: true, debounceMs: 200, pollMs: 5000 } },
  providers: {
    vad: { provider: 'silero' },
    asr: { provider: 'pocketsphinx' },
    llm: { provider: 'rules' },
    tts: { provider: 'auto' },
  },
  chatCompletions: { enabled: false, model: 'voice-agent' },
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
  return validateConfig(mergeConfig(config, envOverrides), file ? path.resolve(file) : 'configuration', DEFAULT_CONFIG);
}
