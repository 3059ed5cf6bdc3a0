/** `agent.tools` (which built-in tools the agent may call, ./tool-filter.ts) and the demo bank's customer table. */
import { common, t, type Static } from '../../core/options.js';

const digits = t.string({ pattern: '^[0-9]+$' });
/** One customer of the demo bank that stands in for a bank's own systems (./tools.ts). */
export const BANK_CUSTOMER_OPTIONS = t.object({
  customerNumber: digits,
  pin: digits,
  name: t.text(),
  cards: t.array(t.object({ last4: t.string({ pattern: '^[0-9]{4}$' }), blocked: t.optional(t.boolean()) })),
});
export type BankCustomer = Static<typeof BANK_CUSTOMER_OPTIONS>;

/** `agent.tools` in the config: which built-in tools the agent may call, their timezone and timeout. */
export const AGENT_TOOLS_OPTIONS = t.object({
  /** Tool names the agent may call (default: every registered tool). */
  enabled: t.optional(common.texts),
  /** Agent file whose `tools` (HTTP tools) are registered; default: the rules file with the rules agent. */
  file: t.optional(t.text()),
  timezone: t.optional(t.text()),
  timeoutMs: t.optional(common.ms(1)),
  /** Register the demo bank's tools (verify_customer, block_card), with this customer table or the demo one. */
  bank: t.optional(t.object({ customers: t.optional(t.array(BANK_CUSTOMER_OPTIONS)) })),
});
export type AgentToolsConfig = Static<typeof AGENT_TOOLS_OPTIONS>;
