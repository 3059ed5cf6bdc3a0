/**
 * The service's own keys (listener, logging, models) and the sections the service itself runs: `drain`
 * (SIGTERM), `maxLengthNotice` (limits.maxSessionMs reached) and `demo` (the page at `/`): options, defaults, types.
 */
import { common, defaultsOf, langMap, t, type Resolved } from './core/options.js';

export const SERVICE_OPTIONS = {
  host: t.default(t.text(), '0.0.0.0'),
  /**
   * Reverse proxies whose X-Forwarded-For / X-Forwarded-Proto / X-Forwarded-Host are believed (addresses or
   * CIDRs, e.g. ["127.0.0.1"] for an nginx on this host); empty: none, the socket's address is the client's.
   */
  trustProxy: t.default(common.texts, []),
  port: t.default(t.integer(0, 65535), 8080),
  logLevel: t.default(t.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']), 'info'),
  /** Models directory for downloaded models (see audio-models/). */
  modelsDir: t.default(t.text(), 'models'),
  /** Largest WebSocket message accepted without an error (bytes). */
  maxMessageBytes: t.default(t.integer(1024), 64 * 1024),
  /** Require an API key on GET /metrics. */
  metricsRequireApiKey: t.default(t.boolean(), false),
};
const SERVICE_KEYS = t.object(SERVICE_OPTIONS);
/** logLevel stays a string: LOG_LEVEL and cluster overrides arrive as one and are checked with the rest. */
export type ServiceKeysConfig = Omit<Resolved<typeof SERVICE_KEYS>, 'logLevel'> & { logLevel: string };
export const SERVICE_DEFAULTS: ServiceKeysConfig = defaultsOf(SERVICE_KEYS);

/** SIGTERM: how long calls may go on, and what the agent says when it must end them. */
export const DRAIN_OPTIONS = t.object({
  deadlineMs: t.default(common.ms(), 30_000),
  notice: t.default(langMap(t.text()), {
    en: 'I am sorry, this service is restarting and I have to end the call now. Please call back in a minute. Goodbye.',
    fr: 'Désolé, le service redémarre et je dois mettre fin à l’appel. Merci de rappeler dans une minute. Au revoir.',
    de: 'Entschuldigung, der Dienst startet neu und ich muss das Gespräch beenden. Bitte rufen Sie in einer Minute wieder an. Auf Wiederhören.',
    es: 'Lo siento, el servicio se está reiniciando y tengo que terminar la llamada. Vuelva a llamar en un minuto. Adiós.',
    it: 'Mi dispiace, il servizio si sta riavviando e devo chiudere la chiamata. Richiami tra un minuto. Arrivederci.',
  }),
});
export type DrainConfig = Resolved<typeof DRAIN_OPTIONS>;
export const DRAIN_DEFAULTS: DrainConfig = defaultsOf(DRAIN_OPTIONS);

/** Spoken when a call reaches limits.maxSessionMs, per language. */
export const MAX_LENGTH_NOTICE_OPTIONS = langMap(t.text());
export const MAX_LENGTH_NOTICE_DEFAULTS: Record<string, string> = {
  en: 'We have reached the maximum length for this call. Thank you for calling. Goodbye.',
  fr: 'Nous avons atteint la durée maximale de cet appel. Merci de votre appel. Au revoir.',
  de: 'Die maximale Gesprächsdauer ist erreicht. Danke für Ihren Anruf. Auf Wiederhören.',
  es: 'Hemos alcanzado la duración máxima de esta llamada. Gracias por llamar. Adiós.',
  it: 'Abbiamo raggiunto la durata massima della chiamata. Grazie per aver chiamato. Arrivederci.',
};

/**
 * The demo page at `/`: it fetches a session token from `GET /v1/demo/token`, answered to loopback clients only.
 * Off unless asked for (`npm start -- --demo`, VOICE_AGENT_DEMO=1 or `demo.enabled`): see docs/security.md.
 */
export const DEMO_OPTIONS = t.object({
  enabled: t.default(t.boolean(), false),
  /** Host header values (without port) the demo answers to: a DNS-rebinding page names its own host. */
  allowedHosts: t.default(common.texts, ['localhost', '127.0.0.1', '::1']),
});
export type DemoConfig = Resolved<typeof DEMO_OPTIONS>;
export const DEMO_DEFAULTS: DemoConfig = defaultsOf(DEMO_OPTIONS);
