/** `agent.tools` in the config: which built-in tools the agent may call, their timezone and timeout. */
import type { Logger } from 'pino';
import type { ToolExecutor } from '../../session/reply.js';
import { httpTool, type AgentToolsFile } from '../../integration/http-tools.js';
import { ToolRegistry, type ToolContext } from './tools.js';
import type { ToolCall, ToolDefinition } from './types.js';

/** Declared in ./tools-options.ts (`agent.tools`). */
export type { AgentToolsConfig } from './tools-options.js';
import type { AgentToolsConfig } from './tools-options.js';

/** Only the enabled tools are offered to the model, and a call to another one is refused as unknown. */
export class FilteredTools implements ToolExecutor {
  private readonly enabled: ReadonlySet<string>;

  constructor(
    readonly registry: ToolRegistry,
    enabled: readonly string[],
    /** Declared in the agent file (HTTP tools): always offered. */
    declared: readonly string[] = [],
  ) {
    const unknown = enabled.filter((name) => !registry.has(name));
    if (unknown.length > 0) {
      const known = registry.definitions().map((d) => d.name);
      throw new Error(`agent.tools.enabled: unknown tool(s) ${unknown.join(', ')} (known: ${known.join(', ')})`);
    }
    this.enabled = new Set([...enabled, ...declared]);
  }

  definitions(): ToolDefinition[] {
    return this.registry.definitions().filter((d) => this.enabled.has(d.name));
  }

  maskArguments(call: ToolCall): string {
    return this.registry.maskArguments(call);
  }

  mayHold(call: ToolCall): boolean {
    return this.enabled.has(call.name) && this.registry.mayHold(call);
  }

  execute(call: ToolCall, ctx: ToolContext): Promise<{ content: string; action?: 'hangup' | 'transfer' }> {
    if (!this.enabled.has(call.name)) return Promise.resolve({ content: JSON.stringify({ error: `unknown tool "${call.name}"` }) });
    return this.registry.execute(call, ctx);
  }
}

/**
 * The built-in tools plus the agent file's HTTP tools (`agentTools`: its `tools` and `toolDefaults`). Throws when
 * an HTTP tool's signing secret is missing from the environment: the service must not start half-configured.
 */
export function createToolExecutor(config: AgentToolsConfig | undefined, agentTools: AgentToolsFile = {}, logger?: Logger): ToolExecutor {
  const registry = new ToolRegistry({ timezone: config?.timezone, timeoutMs: config?.timeoutMs, bank: config?.bank, handover: agentTools.handover });
  const declared = agentTools.tools ?? [];
  for (const spec of declared) registry.register(httpTool(spec, agentTools.toolDefaults, { logger }));
  return config?.enabled ? new FilteredTools(registry, config.enabled, declared.map((t) => t.name)) : registry;
}
