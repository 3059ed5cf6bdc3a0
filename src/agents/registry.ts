/**
 * Several agents in one process (config `agents`, docs/integration.md "Several agents"): each agent file (rules
 * JSON) is its own rule-based agent, HTTP tools and ASR grammars on the shared VAD/ASR/TTS engines. A call is given
 * one agent version when it opens and keeps it to the end; changed files are reloaded off the audio path, and an
 * invalid one is logged while the version before it goes on serving.
 */
import { createHash } from 'node:crypto';
import { EventEmitter } from 'node:events';
import { existsSync, readFileSync, watch, type FSWatcher } from 'node:fs';
import { readFile, stat } from 'node:fs/promises';
import path from 'node:path';
import type { Logger } from 'pino';
import type { ServiceConfig } from '../config.js';
import type { CallerVars } from '../integration/context.js';
import { agentToolsOfJson } from '../integration/http-tools.js';
import type { HandoverConfig } from '../integration/handover.js';
import { grammarWanted } from '../providers/asr/index.js';
import { grammarSource } from '../providers/asr/grammar/from-rules.js';
import type { AgentGrammarAware } from '../providers/asr/grammar/spec.js';
import type { AsrProvider } from '../providers/asr/types.js';
import { RuleBasedAgent } from '../providers/llm/rules/index.js';
import { defaultRulesPath, RulesConfigError, validateRulesConfig } from '../providers/llm/rules/config.js';
import { createToolExecutor } from '../providers/llm/tool-filter.js';
import type { LlmProvider } from '../providers/llm/types.js';
import type { ToolExecutor } from '../session/reply.js';
import type { SessionProviders } from '../session/session.js';

/** The name of the agent of `providers.llm` (the one agent of a deployment without `agents.files`). */
export const DEFAULT_AGENT = 'default';

/** One loaded version of an agent: what a call on it uses from start to end. */
export interface AgentVersion {
  readonly name: string;
  /** Short content hash of the agent file (of the LLM settings for a model-backed default agent). */
  readonly version: string;
  readonly llm: LlmProvider;
  readonly tools: ToolExecutor;
  /** The shared recogniser, decoding against this version's own grammars when it has them. */
  readonly asr: AsrProvider;
  /** Key of this version's grammars in the shared recogniser, if it has its own. */
  readonly grammarKey?: string;
  /** Where this agent's transfers go (its file's `handover`; src/integration/handover.ts). */
  readonly handover?: HandoverConfig;
  /** Its own voice per language (its file's `voices`). */
  readonly voices?: Readonly<Record<string, string>>;
}

/** A call asked for an agent this deployment does not have, or dialled a number no agent answers. */
export class AgentSelectionError extends Error {
  override readonly name = 'AgentSelectionError';
  constructor(
    readonly code: 'unknown_agent' | 'unknown_number',
    message: string,
  ) {
    super(message);
  }
}

interface Entry {
  readonly name: string;
  readonly file: string;
  current: AgentVersion | undefined;
  /** mtime and size last read: the poll reloads when they change. */
  stamp: string;
  /** Reloads of one agent run one after the other. */
  chain: Promise<unknown>;
  debounce?: NodeJS.Timeout;
}

export interface AgentReloadEvent {
  name: string;
  version?: string;
  previous?: string;
  error?: string;
}

function shortHash(text: string): string {
  return createHash('sha256').update(text).digest('hex').slice(0, 8);
}

/** Digits and a leading +: "+44 20 7946-0000" and "+442079460000" are one number. */
function normalizeNumber(n: string): string {
  return n.replace(/[^0-9+]/g, '');
}

const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

function isAgentGrammarAware(value: unknown): value is AgentGrammarAware {
  return typeof value === 'object' && value !== null && typeof (value as Partial<AgentGrammarAware>).setAgentGrammars === 'function';
}

/** Emits 'reloaded' and 'reload_failed' (AgentReloadEvent) as files change. */
export class AgentRegistry extends EventEmitter {
  private readonly entries = new Map<string, Entry>();
  private readonly implicit: AgentVersion;
  private readonly numbers: Map<string, string>;
  /** Calls on each version; a replaced version is freed when its last call ends. */
  private readonly refs = new Map<AgentVersion, number>();
  private readonly retired = new Set<AgentVersion>();
  private watchers: FSWatcher[] = [];
  private poll: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    private readonly config: ServiceConfig,
    private readonly shared: SessionProviders,
    private readonly logger: Logger,
  ) {
    super();
    const agents = config.agents;
    for (const [name, file] of Object.entries(agents?.files ?? {})) {
      this.entries.set(name, { name, file: path.resolve(file), current: undefined, stamp: '', chain: Promise.resolve() });
    }
    this.numbers = new Map(Object.entries(agents?.numbers ?? {}).map(([n, name]) => [normalizeNumber(n), name]));
    this.implicit = {
      name: DEFAULT_AGENT,
      version: this.implicitVersion(),
      llm: shared.llm,
      tools: shared.tools,
      asr: shared.asr,
      ...(shared.handover ? { handover: shared.handover } : {}),
      ...(shared.voices ? { voices: shared.voices } : {}),
    };
  }

  /** Whether `agents.files` names any agent (else token `agent` claims select nothing, as before). */
  get configured(): boolean {
    return this.entries.size > 0;
  }

  /** Agent names calls may ask for. */
  get names(): string[] {
    return [...new Set([...this.entries.keys(), DEFAULT_AGENT])];
  }

  has(name: string): boolean {
    return name === DEFAULT_AGENT || this.entries.has(name);
  }

  /**
   * Whether calls can reach the agent of `providers.llm`: not once `agents.default` names a file (it then answers
   * nothing, and the service compiles no grammars for it).
   */
  get usesImplicit(): boolean {
    return this.config.agents?.default === undefined;
  }

  /** The version new calls to `name` get now; "default" is the default agent. */
  current(name: string): AgentVersion | undefined {
    const entry = this.entries.get(name);
    if (entry) return entry.current;
    if (name !== DEFAULT_AGENT) return undefined;
    const chosen = this.config.agents?.default;
    return chosen === undefined ? this.implicit : this.entries.get(chosen)?.current;
  }

  /** Loads every agent file (an invalid one fails the service's load, as an invalid rules file does), then watches them. */
  async load(): Promise<void> {
    const t0 = performance.now();
    await Promise.all(
      [...this.entries.values()].map(async (entry) => {
        const { text, stamp } = await this.read(entry);
        entry.stamp = stamp;
        entry.current = await this.build(entry, text);
      }),
    );
    if (this.entries.size > 0) {
      this.logger.info(
        { agents: [...this.entries.values()].map((e) => `${e.name}@${e.current?.version}`), ms: Math.round(performance.now() - t0) },
        'agents loaded',
      );
    }
    if (this.entries.size > 0 && this.config.agents?.reload.enabled !== false && !this.closed) this.watch();
  }

  /**
   * The agent of a new call, in this order: the `agent` the caller context names (token claim, media-stream
   * parameter), the dialled number (SIP Request-URI user, then To user / `to` parameter), the API key, the default.
   */
  select(keyId: string | undefined, caller: CallerVars = {}): AgentVersion {
    if (!this.configured) return this.implicit;
    const agents = this.config.agents;
    if (caller.agent !== undefined) {
      const chosen = this.current(caller.agent);
      if (!chosen) throw new AgentSelectionError('unknown_agent', `no agent named "${caller.agent}" (known: ${this.names.join(', ')})`);
      return chosen;
    }
    const dialled = [caller.request_uri, caller.to].filter((n): n is string => typeof n === 'string' && n !== '');
    for (const number of dialled) {
      const name = this.numbers.get(normalizeNumber(number));
      const chosen = name === undefined ? undefined : this.current(name);
      if (chosen) return chosen;
    }
    const byKey = keyId === undefined ? undefined : agents.apiKeys?.[keyId];
    if (byKey !== undefined) {
      const chosen = this.current(byKey);
      if (chosen) return chosen;
    }
    if (dialled.length > 0 && agents.unknownNumber === 'refuse') {
      throw new AgentSelectionError('unknown_number', `no agent answers ${dialled[0]}`);
    }
    return this.current(DEFAULT_AGENT) ?? this.implicit;
  }

  /** A call starts on `version`: it stays loaded until release(). */
  acquire(version: AgentVersion): void {
    this.refs.set(version, (this.refs.get(version) ?? 0) + 1);
  }

  release(version: AgentVersion): void {
    const left = (this.refs.get(version) ?? 1) - 1;
    if (left > 0) return void this.refs.set(version, left);
    this.refs.delete(version);
    if (this.retired.delete(version)) void this.dispose(version);
  }

  /**
   * Reads `name`'s file now and, when its content changed, loads the new version for new calls. Resolves with
   * the version serving afterwards; an invalid file is logged and leaves the previous one serving.
   */
  reload(name: string): Promise<AgentVersion | undefined> {
    const entry = this.entries.get(name);
    if (!entry) return Promise.resolve(this.current(name));
    const run = entry.chain.then(() => this.reloadNow(entry));
    entry.chain = run.catch(() => undefined);
    return run;
  }

  private async reloadNow(entry: Entry): Promise<AgentVersion | undefined> {
    if (this.closed) return entry.current;
    const previous = entry.current;
    const t0 = performance.now();
    let next: AgentVersion;
    try {
      const { text, stamp } = await this.read(entry);
      entry.stamp = stamp;
      if (previous && shortHash(text) === previous.version) return previous;
      next = await this.build(entry, text);
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      this.logger.error({ agent: entry.name, file: entry.file, version: previous?.version, err: error }, 'agent file invalid: the previous version keeps serving');
      this.emit('reload_failed', { name: entry.name, version: previous?.version, error } satisfies AgentReloadEvent);
      return previous;
    }
    if (this.closed) {
      await this.dispose(next);
      return previous;
    }
    entry.current = next;
    this.logger.info({ agent: entry.name, version: next.version, previous: previous?.version, ms: Math.round(performance.now() - t0) }, 'agent reloaded');
    this.emit('reloaded', { name: entry.name, version: next.version, previous: previous?.version } satisfies AgentReloadEvent);
    if (previous) this.retire(previous);
    return next;
  }

  private async read(entry: Entry): Promise<{ text: string; stamp: string }> {
    try {
      const info = await stat(entry.file);
      return { text: await readFile(entry.file, 'utf8'), stamp: `${info.mtimeMs}:${info.size}` };
    } catch (err) {
      throw new RulesConfigError(`${entry.file}: cannot read agent file "${entry.name}" (${err instanceof Error ? err.message : String(err)})`);
    }
  }

  /** Parses, validates and compiles one version: its rules, HTTP tools and (with a grammar recogniser) grammars. */
  private async build(entry: Entry, text: string): Promise<AgentVersion> {
    const version = shortHash(text);
    let raw: unknown;
    try {
      raw = JSON.parse(text);
    } catch (err) {
      throw new RulesConfigError(`${entry.file}: not valid JSON (${err instanceof Error ? err.message : String(err)})`);
    }
    const rules = validateRulesConfig(raw, entry.file);
    // Every step of a reload (tens of ms each) runs in its own event-loop turn: calls in progress keep their pacing.
    await nextTurn();
    const llm = new RuleBasedAgent({ rules, warmDateParsers: true });
    const log = this.logger.child({ agent: entry.name, agentVersion: version });
    const agentTools = agentToolsOfJson(raw, entry.file);
    const tools = createToolExecutor(this.config.agent.tools, agentTools, log.child({ component: 'tools' }));
    const base = {
      name: entry.name,
      version,
      llm,
      tools,
      ...(agentTools.handover ? { handover: agentTools.handover } : {}),
      ...(agentTools.voices ? { voices: agentTools.voices } : {}),
    };
    const asrConfig = this.config.providers.asr;
    const asr = this.shared.asr;
    if (asrConfig.provider !== 'pocketsphinx' || !grammarWanted(asrConfig.grammar, 'rules') || !isAgentGrammarAware(asr)) return { ...base, asr };
    const grammarKey = `${entry.name}@${version}`;
    const t0 = performance.now();
    try {
      await nextTurn();
      const specs = await grammarSource(llm, { languages: asrConfig.languages, names: asrConfig.names });
      await nextTurn();
      await asr.setAgentGrammars(grammarKey, specs);
    } catch (err) {
      // As for the default agent (providers/index.ts applyGrammars): the call still works, on the shared decoding.
      log.error({ err }, 'agent grammars failed to compile; its calls decode with the default grammars');
      return { ...base, asr };
    }
    log.info({ ms: Math.round(performance.now() - t0) }, 'agent grammars ready');
    return { ...base, asr: asr.forAgent(grammarKey), grammarKey };
  }

  private retire(version: AgentVersion): void {
    if ((this.refs.get(version) ?? 0) > 0) this.retired.add(version);
    else void this.dispose(version);
  }

  private async dispose(version: AgentVersion): Promise<void> {
    if (version.grammarKey && isAgentGrammarAware(this.shared.asr)) await this.shared.asr.dropAgentGrammars(version.grammarKey);
  }

  /** fs.watch on the files' directories (editors replace files, which a watch on the file itself would miss) and a poll. */
  private watch(): void {
    const { debounceMs = 200, pollMs = 5000 } = this.config.agents?.reload ?? {};
    const schedule = (entry: Entry): void => {
      if (entry.debounce) clearTimeout(entry.debounce);
      entry.debounce = setTimeout(() => void this.reload(entry.name), debounceMs);
      entry.debounce.unref();
    };
    const dirs = new Map<string, Entry[]>();
    for (const entry of this.entries.values()) dirs.set(path.dirname(entry.file), [...(dirs.get(path.dirname(entry.file)) ?? []), entry]);
    for (const [dir, entries] of dirs) {
      try {
        const watcher = watch(dir, { persistent: false }, (_event, filename) => {
          for (const entry of entries) if (filename === null || filename === path.basename(entry.file)) schedule(entry);
        });
        watcher.on('error', (err) => this.logger.warn({ err, dir }, 'agent file watch failed; the periodic check goes on'));
        this.watchers.push(watcher);
      } catch (err) {
        this.logger.warn({ err, dir }, 'cannot watch agent files; changes are found by the periodic check');
      }
    }
    if (pollMs > 0) {
      this.poll = setInterval(() => {
        for (const entry of this.entries.values()) {
          stat(entry.file).then(
            (info) => {
              if (`${info.mtimeMs}:${info.size}` !== entry.stamp) schedule(entry);
            },
            () => undefined,
          );
        }
      }, pollMs);
      this.poll.unref();
    }
  }

  /** The default agent of `providers.llm`: its rules file's hash, or that of the model settings (no secrets). */
  private implicitVersion(): string {
    const llm = this.config.providers.llm;
    if (llm.provider === 'rules') {
      const file = llm.rulesPath ?? defaultRulesPath();
      if (existsSync(file)) {
        try {
          return shortHash(readFileSync(file, 'utf8'));
        } catch {
          // Unreadable: the rules agent reports it at load.
        }
      }
      return shortHash(file);
    }
    const { apiKey: _key, ...settings } = llm as typeof llm & { apiKey?: string };
    return shortHash(JSON.stringify({ ...settings, extraHeaders: undefined }));
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.poll) clearInterval(this.poll);
    for (const w of this.watchers) w.close();
    this.watchers = [];
    for (const entry of this.entries.values()) if (entry.debounce) clearTimeout(entry.debounce);
    await Promise.allSettled([...this.entries.values()].map((e) => e.chain));
  }
}
