/** `providers.llm` with provider "rules": the options it accepts. */
import { t, type Static } from '../../../core/options.js';

export const RULES_OPTIONS = t.object({
  /** Path to the rules JSON; default: the nearest `config/agent-rules.json` above this module. */
  rulesPath: t.optional(t.text()),
});
export type RulesSettings = Static<typeof RULES_OPTIONS>;
