/**
 * The `agent` section (what the single agent says and how long it waits for its backends; the session runs it,
 * src/session/reply.ts) and the `agents` section (several agents in one deployment, ./registry.ts): their
 * options, defaults and types.
 */
import { common, defaultsOf, langMap, t, type LeftOutOk, type Resolved } from '../core/options.js';
import { AGENT_TOOLS_OPTIONS } from '../providers/llm/tools-options.js';
import { CONTEXT_WINDOW_OPTIONS, DEFAULT_CONTEXT_WINDOW } from '../session/options.js';

export const AGENT_OPTIONS = t.object({
  /** Language assumed until ASR reports one. */
  defaultLanguage: t.default(common.langTag, 'en'),
  /** System prompt for model-backed LLMs. */
  systemPrompt: t.default(
    t.string(),
    'You are a helpful voice assistant on a phone call. Answer in the language the caller speaks. ' +
      'Keep answers short and conversational: one or two sentences, no lists, no markdown.',
  ),
  /** Spoken when a backend fails mid-turn, per language. */
  fallbackReplies: t.default(langMap(t.text()), {
    en: 'Sorry, I am having trouble right now. Please try again in a moment.',
    fr: 'Désolé, je rencontre un problème. Veuillez réessayer dans un instant.',
    de: 'Entschuldigung, es gibt gerade ein Problem. Bitte versuchen Sie es gleich noch einmal.',
    es: 'Lo siento, tengo un problema en este momento. Inténtelo de nuevo en un momento.',
    it: 'Mi dispiace, ho un problema in questo momento. Riprovi tra un attimo.',
  }),
  /** Rounds of tool calls allowed in one turn before the agent must answer. */
  maxToolRounds: t.default(t.integer(0, 10), 3),
  /** No first token within this → the LLM counts as failed and the fallback is spoken. */
  llmFirstTokenTimeoutMs: t.default(common.ms(1), 8000),
  /** A gap this long between tokens mid-reply → failed. */
  llmStallTimeoutMs: t.default(common.ms(1), 10_000),
  /** TTS first audio (and each later chunk) within this, or the segment fails. */
  ttsTimeoutMs: t.default(common.ms(1), 5000),
  /** A tool still running after this long: the caller hears a holdReplies line ("one moment") meanwhile; 0: never. */
  toolHoldMs: t.default(common.ms(0), 1000),
  /** The "one moment" line, per language. */
  toolHoldReplies: t.default(langMap(t.text()), {
    en: 'One moment, please.',
    fr: 'Un instant, s’il vous plaît.',
    de: 'Einen Moment, bitte.',
    es: 'Un momento, por favor.',
    it: 'Un attimo, per favore.',
  }),
  /** What a model is sent each turn: the system prompt and the latest messages within both limits (0: none). */
  contextWindow: t.default(CONTEXT_WINDOW_OPTIONS, { ...DEFAULT_CONTEXT_WINDOW }),
  /** Which built-in tools the agent may call (default: all), their timezone and timeout. */
  tools: t.optional(AGENT_TOOLS_OPTIONS),
});
/** An agent built without a config (tests, tools) may leave contextWindow out: the default window applies. */
export type AgentConfig = LeftOutOk<Resolved<typeof AGENT_OPTIONS>, 'contextWindow'>;
export const AGENT_DEFAULTS: AgentConfig = defaultsOf(AGENT_OPTIONS);

/** Names are what token claims, logs and call records carry. */
const agentName = t.string({ pattern: '^[A-Za-z0-9_.-]{1,64}$' });
const routeKey = t.string({ minLength: 1, maxLength: 64 });

/**
 * Several agents in one deployment (docs/integration.md, "Several agents"): rule-based agent files by name, which
 * calls each one answers, and how changed files are reloaded. With no `files` the single agent of `providers.llm`
 * answers every call, as before.
 */
export const AGENTS_OPTIONS = t.object({
  /** Agent name → rules JSON file (src/providers/llm/rules; its HTTP tools and ASR grammars come with it). */
  files: t.default(t.record(t.text(), agentName), {}),
  /** The agent of calls nothing else selects: a name in `files`; unset: the agent of `providers.llm`, named "default". */
  default: t.optional(agentName),
  /** Dialled number (SIP Request-URI or To user, media-stream `to` parameter) → agent name. */
  numbers: t.default(t.record(t.text(), routeKey), {}),
  /** API key id (8 hex characters, as in logs and /v1/calls owners) → agent name. */
  apiKeys: t.default(t.record(t.text(), routeKey), {}),
  /** A call to a number missing from `numbers`: the default agent, or refused (SIP 404, media stream closed). */
  unknownNumber: t.default(t.enum(['default', 'refuse']), 'default'),
  /** Changed files are reloaded without a restart: fs.watch (debounced) and an mtime check every pollMs as backup. */
  reload: t.default(t.object({ enabled: t.boolean(), debounceMs: common.ms(), pollMs: common.ms() }), { enabled: true, debounceMs: 200, pollMs: 5000 }),
});
export type AgentsConfig = Resolved<typeof AGENTS_OPTIONS>;
export const AGENTS_DEFAULTS: AgentsConfig = defaultsOf(AGENTS_OPTIONS);

/**
 * What the schema cannot say: every agent `agents` routes to must be one of its files or "default" (the agent of
 * providers.llm, unless a file is named so); `agents.default` must be a file.
 */
export function agentsProblems(agents: Partial<AgentsConfig> | undefined): string[] {
  if (!agents) return [];
  const names = new Set([...Object.keys(agents.files ?? {}), 'default']);
  const problems: string[] = [];
  if (agents.default !== undefined && !(agents.default in (agents.files ?? {}))) problems.push(`agents.default: "${agents.default}" is not one of agents.files`);
  for (const section of ['numbers', 'apiKeys'] as const) {
    for (const [key, name] of Object.entries(agents[section] ?? {})) {
      if (!names.has(name)) problems.push(`agents.${section}.${key}: "${name}" is not one of agents.files`);
    }
  }
  return problems;
}
