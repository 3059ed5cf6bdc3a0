import { afterEach, describe, expect, it } from 'vitest';
import type { ChatMessage, ToolCall } from '../../src/providers/llm/types.js';
import type { FakeClock } from '../../src/session/clock.js';
import type { ToolExecutor } from '../../src/session/reply.js';
import { CallHarness } from './harness.js';

/** An operator's system that answers after `ms` of clock time. */
function slowTool(clock: () => FakeClock, ms: number): ToolExecutor {
  return {
    definitions: () => [{ name: 'check_booking', description: 'Look a booking up', parameters: { type: 'object', properties: {} } }],
    execute: (_call: ToolCall) => new Promise((resolve) => clock().setTimeout(() => resolve({ content: '{"status":"confirmed"}' }), ms)),
    mayHold: () => true,
  };
}

/** Calls the tool, then says what it answered. */
function bookingAgent(messages: readonly ChatMessage[]) {
  const last = messages.at(-1);
  if (last?.role === 'tool') return { text: `Your booking is ${(JSON.parse(last.content) as { status: string }).status}.` };
  return { text: 'Let me check.', toolCalls: [{ id: 'call-1', name: 'check_booking', arguments: '{}' }] };
}

describe('a slow tool', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('gets the hold line said once toolHoldMs has passed, then the answer', async () => {
    let harness: CallHarness | undefined;
    call = harness = new CallHarness({ agent: bookingAgent, tools: slowTool(() => harness!.clock, 2_500) });
    call.session.submitText('is my booking confirmed');
    await call.wait(900);
    const said = () => call.of('response.text.delta').map((e) => e.text).join('');
    expect(said()).toBe('Let me check.');
    await call.wait(200); // toolHoldMs (1000) has passed
    expect(said()).toBe('Let me check. One moment, please. ');
    await call.wait(3_000);
    const done = call.of('response.done')[0];
    expect(done).toMatchObject({ status: 'completed' });
    expect(done.text).toBe('Let me check. One moment, please. Your booking is confirmed.');
  });

  it('says nothing extra when the tool answers within toolHoldMs', async () => {
    let harness: CallHarness | undefined;
    call = harness = new CallHarness({ agent: bookingAgent, tools: slowTool(() => harness!.clock, 600) });
    call.session.submitText('is my booking confirmed');
    await call.wait(3_000);
    expect(call.of('response.done')[0].text).toBe('Let me check. Your booking is confirmed.');
  });
});
