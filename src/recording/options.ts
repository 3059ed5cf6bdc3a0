/** The `recording` section (stereo Ogg Opus recordings, consent first; docs/compliance.md): options, defaults, type. */
import { defaultsOf, langMap, t, type Resolved } from '../core/options.js';

export const RECORDING_OPTIONS = t.object({
  /** Off by default. */
  enabled: t.default(t.boolean(), false),
  /** Where recordings are written (`<call id>.ogg`; `.part` while the call lasts). */
  dir: t.default(t.text(), 'data/recordings'),
  /** Recordings older than this are deleted (with their records, or alone when the record is kept longer); 0 keeps them. */
  retentionDays: t.default(t.integer(0), 30),
  /** Opus bitrate of the stereo stream, bits per second. */
  bitrate: t.default(t.integer(6000, 510_000), 32_000),
  /** Said first, per language: what is recorded and how to refuse ("say no"). */
  consentLine: t.default(langMap(t.text()), {
    en: 'This call is recorded. If you do not want it recorded, say no, or press 9.',
    fr: "Cet appel est enregistré. Si vous ne le souhaitez pas, dites non, ou appuyez sur 9.",
    de: 'Dieser Anruf wird aufgezeichnet. Wenn Sie das nicht möchten, sagen Sie nein oder drücken Sie die 9.',
    es: 'Esta llamada se graba. Si no desea que se grabe, diga no o pulse 9.',
    it: 'Questa chiamata viene registrata. Se non desidera che sia registrata, dica no o prema 9.',
  }),
  /** Said when the caller refuses. */
  refusedLine: t.default(langMap(t.text()), {
    en: 'All right, this call will not be recorded. How can I help you?',
    fr: "D'accord, cet appel ne sera pas enregistré. Comment puis-je vous aider ?",
    de: 'In Ordnung, dieser Anruf wird nicht aufgezeichnet. Wie kann ich Ihnen helfen?',
    es: 'De acuerdo, esta llamada no se grabará. ¿En qué puedo ayudarle?',
    it: 'Va bene, questa chiamata non sarà registrata. Come posso aiutarla?',
  }),
});
export type RecordingConfig = Resolved<typeof RECORDING_OPTIONS>;
export const RECORDING_DEFAULTS: RecordingConfig = defaultsOf(RECORDING_OPTIONS);
