import type { ChatMessage, ToolCall, ToolDefinition } from '../../providers/llm/types.js';
import type { ToolExecutor } from '../../session/reply.js';
import { toToolDefinition, type ClientTool } from './protocol.js';
import { BoundedMap, BoundedSet } from '../../core/bounded.js';

/**
 * Tool calls of one call remembered at once (shown, released, outputs not yet taken). A client that sends
 * outputs nobody asks for, or calls cancelled before their output came, cannot grow these beyond it.
 */
const MAX_PENDING_CALLS = 64;

/**
 * The tool executor of one realtime call. Tools the client declared in `session.update` run on the client:
 * the call is shown to it (response.function_call_arguments.*), the response ends, and the agent's reply
 * continues once the client has sent its `function_call_output` and `response.create`. Every other tool runs
 * on the service's shared registry, as on any other transport. A client tool named like a built-in one
 * (get_current_time, …) replaces it for this call.
 */
export interface ClientToolHooks {
  /**
   * A client tool call is waiting for the client: end the realtime response it belongs to. Resolves once
   * done (after the agent's audio so far has played).
   */
  awaiting(call: ToolCall): Promise<void>;
}

interface Waiter {
  call: ToolCall;
  resolve: (result: { content: string }) => void;
}

export class ClientToolExecutor implements ToolExecutor {
  private tools = new Map<string, ClientTool>();
  private toolChoice = 'auto';
  /** Calls the client has been shown (their tool_call event reached the transport). */
  private readonly announced = new BoundedSet<string>(MAX_PENDING_CALLS);
  private readonly announceWaiters = new Map<string, (outcome: 'shown' | 'cancelled') => void>();
  /** Outputs the client sent, by call_id, until the agent takes them. */
  private readonly outputs = new BoundedMap<string, string>(MAX_PENDING_CALLS);
  /** Calls released by a response.create: executing them answers at once. */
  private readonly released = new BoundedSet<string>(MAX_PENDING_CALLS);
  private readonly waiting = new Map<string, Waiter>();

  constructor(
    private readonly shared: ToolExecutor,
    private readonly hooks: ClientToolHooks,
    private readonly timeoutMs: number,
  ) {}

  setTools(tools: ClientTool[], toolChoice: string): void {
    this.tools = new Map(tools.map((t) => [t.name, t]));
    this.toolChoice = toolChoice;
  }

  /** With tool_choice "none" the client's tools are withdrawn (built-ins they shadowed come back). */
  isClientTool(name: string): boolean {
    return this.toolChoice !== 'none' && this.tools.has(name);
  }

  definitions(): ToolDefinition[] {
    const own = this.toolChoice === 'none' ? [] : [...this.tools.values()].map(toToolDefinition);
    return [...own, ...this.shared.definitions().filter((d) => !this.isClientTool(d.name))];
  }

  /** The transport has shown this call to the client. */
  announce(callId: string): void {
    this.announced.add(callId);
    this.announceWaiters.get(callId)?.('shown');
  }

  /** A function_call_output item from the client. Returns true when it answers a call the agent waits for. */
  addOutput(callId: string, output: string): boolean {
    this.outputs.set(callId, output);
    return this.announced.has(callId);
  }

  /** Call ids remembered (shown, released, outputs not taken): at most a few times MAX_PENDING_CALLS. */
  get remembered(): number {
    return this.announced.size + this.released.size + this.outputs.size + this.announceWaiters.size + this.waiting.size;
  }

  /** True while the agent waits for the client's tool results (a response.create then resumes it). */
  get awaitingClient(): boolean {
    return this.waiting.size > 0;
  }

  /** response.create: hand the client's outputs to the waiting reply. */
  resume(): void {
    for (const id of this.announced) this.released.add(id);
    for (const [id, waiter] of [...this.waiting]) {
      this.waiting.delete(id);
      waiter.resolve(this.takeOutput(waiter.call));
    }
  }

  maskArguments(call: ToolCall): string {
    return this.isClientTool(call.name) ? call.arguments : (this.shared.maskArguments?.(call) ?? call.arguments);
  }

  async execute(call: ToolCall, ctx: { callId: string; signal: AbortSignal; messages?: readonly ChatMessage[] }): Promise<{ content: string; action?: 'hangup' | 'transfer' }> {
    if (!this.isClientTool(call.name)) return this.shared.execute(call, ctx);
    const { signal } = ctx;
    if (signal.aborted) return error('cancelled');
    // A reply prepared before the caller's turn was confirmed must not reach the client until committed.
    if (!this.announced.has(call.id)) {
      // Bounded: a reply that is neither committed nor cancelled (a lost turn) must not hold the call forever.
      const shown = await new Promise<'shown' | 'cancelled' | 'timeout'>((resolve) => {
        const finish = (outcome: 'shown' | 'cancelled' | 'timeout') => {
          clearTimeout(timer);
          signal.removeEventListener('abort', onAbort);
          resolve(outcome);
        };
        const onAbort = () => finish('cancelled');
        const timer = setTimeout(() => finish('timeout'), this.timeoutMs);
        signal.addEventListener('abort', onAbort, { once: true });
        this.announceWaiters.set(call.id, finish);
      });
      this.announceWaiters.delete(call.id);
      if (shown === 'cancelled') return error('cancelled');
      if (shown === 'timeout') {
        return error(`the call to ${call.name} was not shown to the client within ${Math.round(this.timeoutMs / 1000)} s (its response never started)`);
      }
    }
    if (this.released.has(call.id)) return this.takeOutput(call);

    await this.hooks.awaiting(call);
    if (signal.aborted) return error('cancelled');
    return new Promise((resolve) => {
      const finish = (result: { content: string }) => {
        clearTimeout(timer);
        signal.removeEventListener('abort', onAbort);
        this.waiting.delete(call.id);
        resolve(result);
      };
      const timer = setTimeout(() => finish(error(`the client did not return a result for ${call.name} within ${Math.round(this.timeoutMs / 1000)} s`)), this.timeoutMs);
      const onAbort = () => finish(error('cancelled'));
      signal.addEventListener('abort', onAbort, { once: true });
      this.waiting.set(call.id, { call, resolve: finish });
    });
  }

  private takeOutput(call: ToolCall): { content: string } {
    const output = this.outputs.get(call.id);
    this.outputs.delete(call.id);
    this.announced.delete(call.id);
    this.released.delete(call.id);
    return output === undefined ? error(`the client sent no output for ${call.name}`) : { content: output };
  }

  /** The call ended: release everything still waiting. */
  close(): void {
    for (const waiter of [...this.waiting.values()]) waiter.resolve(error('cancelled'));
    this.waiting.clear();
    for (const finish of [...this.announceWaiters.values()]) finish('cancelled');
    this.announceWaiters.clear();
  }
}

function error(message: string): { content: string } {
  return { content: JSON.stringify({ error: message }) };
}
