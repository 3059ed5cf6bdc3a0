/**
 * Where the service's grammars come from. One source of truth: the rule-based agent's own
 * `grammarSpecs()` (src/providers/llm/rules/grammar.ts). When the configured LLM is that agent it describes
 * itself; when it is not (grammar: 'on' with a model backend) a RuleBasedAgent is loaded from the rules file
 * only to describe what it would understand.
 */
import type { LlmProvider } from '../../llm/types.js';
import { RuleBasedAgent } from '../../llm/rules/index.js';
import type { GrammarSpec, VocabularySource } from './spec.js';

export function isVocabularySource(value: unknown): value is VocabularySource {
  return typeof value === 'object' && value !== null && typeof (value as Partial<VocabularySource>).grammarSpecs === 'function';
}

export interface GrammarSourceConfig {
  /** Rules file for the stand-in agent when the LLM cannot describe itself (default: config/agent-rules.json). */
  rulesPath?: string;
  /** Languages to keep (default: every language of the agent). */
  languages?: readonly string[];
  /** Extra names callers may give, per language, added to every name slot of that language. */
  names?: Record<string, readonly string[]>;
}

/** The GrammarSpecs of a rules file, from a RuleBasedAgent loaded from it. */
async function rulesGrammarSpecs(rulesPath?: string): Promise<{ agent: RuleBasedAgent; specs: GrammarSpec[] }> {
  const agent = new RuleBasedAgent({ rulesPath });
  await agent.load();
  return { agent, specs: agent.grammarSpecs() };
}

/**
 * The agent's grammars when it can describe what it understands, else those of a RuleBasedAgent loaded from
 * the rules file; filtered to `languages`, with the configured extra names added to name slots.
 */
export async function grammarSource(llm: LlmProvider, config: GrammarSourceConfig): Promise<GrammarSpec[]> {
  let specs: GrammarSpec[];
  let nameSlots: ReadonlySet<string>;
  if (llm instanceof RuleBasedAgent) {
    await llm.load();
    specs = llm.grammarSpecs();
    nameSlots = nameSlotsOf(llm);
  } else if (isVocabularySource(llm)) {
    specs = llm.grammarSpecs();
    nameSlots = new Set(['name']);
  } else {
    const { agent, specs: built } = await rulesGrammarSpecs(config.rulesPath);
    specs = built;
    nameSlots = nameSlotsOf(agent);
  }
  if (config.languages) specs = specs.filter((s) => config.languages?.includes(s.language));
  return config.names ? specs.map((s) => withNames(s, nameSlots, config.names?.[s.language] ?? [])) : specs;
}

function nameSlotsOf(agent: RuleBasedAgent): Set<string> {
  return new Set(agent.rules.intents.flatMap((i) => (i.slots ?? []).filter((s) => s.type === 'name').map((s) => s.name)));
}

function withNames(spec: GrammarSpec, slots: ReadonlySet<string>, names: readonly string[]): GrammarSpec {
  if (names.length === 0) return spec;
  const extra = names.map((n) => n.toLowerCase().trim()).filter(Boolean);
  const merged = { ...spec.slots };
  for (const slot of Object.keys(merged)) if (slots.has(slot)) merged[slot] = [...new Set([...merged[slot], ...extra])];
  return { ...spec, slots: merged };
}
