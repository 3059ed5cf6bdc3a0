/**
 * Text dialogues against the embedded rules agent and the real tool registry (with its confirmation gate), at a
 * fixed time: Sunday 2026-11-29, 11:00 in Paris.
 */
import { RuleBasedAgent } from '../../src/providers/llm/rules/index.js';
import { TextDialogue } from '../../src/providers/llm/rules/driver.js';
import { ToolRegistry } from '../../src/providers/llm/tools.js';

export const NOW = new Date('2026-11-29T10:00:00Z');
export const restaurant = new RuleBasedAgent({ now: () => NOW, timezone: 'Europe/Paris' });
export const bank = new RuleBasedAgent({ rulesPath: 'config/agent-bank.json', now: () => NOW, timezone: 'Europe/Paris' });

/** A new call on `agent`: its dialogue and the registry that records what the tools did. */
export async function call(agent: RuleBasedAgent, language = 'en', options: { bank?: boolean } = {}): Promise<{ dialogue: TextDialogue; registry: ToolRegistry }> {
  await agent.load();
  const registry = new ToolRegistry({ timezone: 'Europe/Paris', now: () => NOW, ...(options.bank ? { bank: {} } : {}) });
  return { dialogue: new TextDialogue(agent, registry, { language, callId: `c-${Math.random()}` }), registry };
}
