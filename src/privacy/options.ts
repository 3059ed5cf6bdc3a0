/** The `privacy` section (src/privacy): its options, defaults and type. */
import { defaultsOf, t, type Resolved } from '../core/options.js';

export const PRIVACY_OPTIONS = t.object({
  /** Caller and agent words stay out of logs unless this is on (they are in the call record). */
  logTranscripts: t.default(t.boolean(), false),
  /**
   * Payment data redacted from what callers say or type, whatever the agent asked (src/privacy/redact.ts):
   * 'card' (Luhn-valid 13–19 digit runs, spoken digits too), 'iban', 'digits' (any run of 13+ digits: catches
   * numbers the recogniser got slightly wrong). Empty turns it off.
   */
  redact: t.default(t.array(t.enum(['card', 'iban', 'digits']), { uniqueItems: true }), ['card', 'iban']),
});
export type PrivacyConfig = Resolved<typeof PRIVACY_OPTIONS>;
export const PRIVACY_DEFAULTS: PrivacyConfig = defaultsOf(PRIVACY_OPTIONS);
