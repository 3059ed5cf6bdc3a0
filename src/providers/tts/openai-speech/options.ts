/** `providers.tts` with provider "openai-speech" (a remote `/v1/audio/speech` server): options and defaults. */
import { common, defaultsOf, langMap, t, type Static } from '../../../core/options.js';
import { ONE_BASE_URL, REMOTE_ENDPOINT } from '../../remote-options.js';
import { ESPEAK_ENGINE } from '../embedded-options.js';

/** What the client itself takes (src/providers/tts/openai-speech). */
const CLIENT = {
  ...REMOTE_ENDPOINT,
  /** Voice per language, e.g. { "en": "af_heart", "fr": "ff_siwis" }: the languages this provider speaks. */
  voices: langMap(t.text()),
  /** Sample rate of the server's PCM. */
  sampleRate: t.default(t.integer(8000, 192_000), 24_000),
  /** Also send `stream_format` ("audio"): for servers that know it (OpenAI); others ignore or refuse it. Default off. */
  streamFormat: t.optional(t.literal('audio')),
  speed: t.optional(t.number(0.25, 4)),
  /** Request to first audio byte. */
  timeoutMs: t.default(common.ms(1), 5000),
  /** Longest gap between audio chunks once they flow. */
  idleTimeoutMs: t.default(common.ms(1), 5000),
};
export const OPENAI_SPEECH_CLIENT_OPTIONS = t.object(CLIENT, ONE_BASE_URL);
export type OpenAiSpeechClientSettings = Static<typeof OPENAI_SPEECH_CLIENT_OPTIONS>;

export const OPENAI_SPEECH_OPTIONS = t.object(
  {
    ...CLIENT,
    /**
     * The embedded TTS that speaks when the server cannot (down, refusing, or a language without a remote voice):
     * 'auto' | 'svoxpico' | 'espeak', or 'none' (default): the caller then hears nothing of that segment and the
     * device gets `tts_failed`.
     */
    embeddedFallback: t.default(t.enum(['auto', 'svoxpico', 'espeak', 'none']), 'none'),
    /** Voices for the embedded fallback (its own names, e.g. { "en": "en-GB" }). */
    embeddedVoices: t.optional(langMap(t.text())),
    /** The embedded fallback's eSpeak NG engine, as for the embedded providers. */
    espeakEngine: t.optional(ESPEAK_ENGINE),
  },
  ONE_BASE_URL,
);
export type OpenAiSpeechSettings = Static<typeof OPENAI_SPEECH_OPTIONS>;
export const OPENAI_SPEECH_DEFAULTS = defaultsOf(OPENAI_SPEECH_OPTIONS);
