import { describe, expect, it } from 'vitest';
import { ClientToolExecutor } from '../src/transports/realtime/client-tools.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';

/**
 * A realtime client tool call waits until its response is shown to the client (a reply prepared before the
 * caller's turn was confirmed must not leak). That wait is bounded: a reply that is never shown nor cancelled
 * ends with a clear error result instead of holding the call forever.
 */
const lookup = { type: 'function' as const, name: 'lookup_order', description: 'Find an order', parameters: { type: 'object', properties: {} } };

function executor(timeoutMs: number): ClientToolExecutor {
  const tools = new ClientToolExecutor(new ToolRegistry({ timezone: 'UTC' }), { awaiting: async () => {} }, timeoutMs);
  tools.setTools([lookup], 'auto');
  return tools;
}

const within = <T>(promise: Promise<T>, ms: number): Promise<T | 'still waiting'> =>
  Promise.race([promise, new Promise<'still waiting'>((resolve) => setTimeout(() => resolve('still waiting'), ms))]);

describe('realtime client tool calls never wait forever to be announced', () => {
  it('a call that is never shown to the client ends with an error result after the tool timeout', async () => {
    const tools = executor(300);
    const started = performance.now();
    const result = await within(tools.execute({ id: 'call_1', name: 'lookup_order', arguments: '{}' }, { callId: 'c', signal: new AbortController().signal }), 3000);
    expect(result).not.toBe('still waiting');
    const elapsed = performance.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(290);
    expect(elapsed).toBeLessThan(2000);
    expect(JSON.parse((result as { content: string }).content).error).toMatch(/lookup_order was not shown to the client/);
    expect(tools.remembered).toBe(0);
  });

  it('a shown call goes on to wait for its output; closing the call releases a call still unshown', async () => {
    const tools = executor(5000);
    const shown = tools.execute({ id: 'call_2', name: 'lookup_order', arguments: '{}' }, { callId: 'c', signal: new AbortController().signal });
    tools.announce('call_2');
    expect(tools.addOutput('call_2', '{"status":"shipped"}')).toBe(true);
    await new Promise((r) => setTimeout(r, 10));
    tools.resume();
    expect(await within(shown, 1000)).toEqual({ content: '{"status":"shipped"}' });

    const unshown = tools.execute({ id: 'call_3', name: 'lookup_order', arguments: '{}' }, { callId: 'c', signal: new AbortController().signal });
    tools.close();
    const result = await within(unshown, 1000);
    expect(result).not.toBe('still waiting');
    expect(JSON.parse((result as { content: string }).content).error).toBe('cancelled');
  });
});
