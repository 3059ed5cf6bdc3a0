/** `providers.tts` with provider "auto", "svoxpico" or "espeak" (the voices in this process): their options. */
import { langMap, t, type Static } from '../../core/options.js';

/**
 * Which eSpeak NG: 'wasm' (the GPL-3.0 npm build, inside this process), 'process' (the system's `espeak-ng`
 * program, a separate process), 'none' (Pico only). Default (or env VOICE_AGENT_ESPEAK): 'wasm' when that package
 * is installed, else 'process' when `espeak-ng` is on PATH, else 'none'. docs/compliance.md.
 */
export const ESPEAK_ENGINE = t.enum(['wasm', 'process', 'none']);
export type EspeakEngine = Static<typeof ESPEAK_ENGINE>;

export const EMBEDDED_TTS_OPTIONS = t.object({
  /** SVOX Pico voices directory (default: env SVOX_PICO_DIR, else ../shared/models/svox-pico). */
  voicesDir: t.optional(t.text()),
  /** Default voice per language, e.g. `{ "en": "en-GB", "pt": "roa/pt-BR" }`. */
  voices: t.optional(langMap(t.text())),
  /** With 'svoxpico': also speak Pico's missing languages with eSpeak. Default true. */
  fallback: t.optional(t.boolean()),
  /** Pico output gain (default -3 dB). */
  gainDb: t.optional(t.number(-40, 20)),
  /** eSpeak worker threads (default min(2, cores)). */
  espeakWorkers: t.optional(t.integer(1, 64)),
  espeakEngine: t.optional(ESPEAK_ENGINE),
});
export type EmbeddedTtsSettings = Static<typeof EMBEDDED_TTS_OPTIONS>;
