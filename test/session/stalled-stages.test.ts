import { afterEach, describe, expect, it } from 'vitest';
import type { LlmEvent, LlmProvider, LlmRequest } from '../../src/providers/llm/types.js';
import { FRAME_MS } from '../../src/audio/format.js';
import { CallHarness } from './harness.js';

/** A model that never says anything (until the request is aborted). */
class SilentLlm implements LlmProvider {
  readonly name = 'silent';
  readonly capabilities = { runsOn: ['cpu'] as const, streaming: true };
  requests = 0;
  async load(): Promise<void> {}
  async *stream(request: LlmRequest): AsyncIterable<LlmEvent> {
    this.requests++;
    await new Promise<void>((resolve) => request.signal.addEventListener('abort', () => resolve(), { once: true }));
  }
}

describe('a stage that stops answering', () => {
  let call: CallHarness;
  afterEach(async () => call?.close());

  it('a recogniser that never finalises fails the turn after asrFinalTimeoutMs, and the next turn works', async () => {
    call = new CallHarness();
    call.asr.stalled = true;
    await call.say('hello', 400);
    const lastVoiced = call.clock.now() - FRAME_MS;
    await call.silence(400);
    expect(call.of('error')).toHaveLength(0);
    await call.wait(call.config.turn.asrFinalTimeoutMs);
    const failedAt = call.timeOf((e) => e.type === 'error')!;
    expect(call.of('error').map((e) => e.code)).toEqual(['asr_failed']);
    // Timed from the likely end (60 ms after the last voiced frame), on the session's clock.
    expect(failedAt - lastVoiced).toBe(call.config.turn.preemptiveSilenceMs + call.config.turn.asrFinalTimeoutMs);
    expect(call.metrics.errors).toEqual(['asr_failed']);
    // The caller is not left in silence: the fallback line is said, as when the model fails.
    await call.silenceUntil((e) => e.type === 'response.done', 8_000);
    const fallback = call.config.agent.fallbackReplies.en;
    expect(call.of('response.done')[0]).toMatchObject({ text: fallback });
    expect(call.audio.length).toBe(fallback.split(/\s+/).length * 5);

    call.asr.stalled = false;
    await call.say('are you there', 400);
    await call.silenceUntil(() => call.of('response.done').length === 2);
    expect(call.of('response.done')[1]).toMatchObject({ status: 'completed', text: 'You said are you there. Anything else?' });
  });

  it('a model that never answers gets the fallback line said after llmFirstTokenTimeoutMs', async () => {
    const llm = new SilentLlm();
    call = new CallHarness({ llm });
    await call.say('book a table', 400);
    await call.silence(300);
    expect(llm.requests).toBe(1);
    expect(call.audio).toHaveLength(0);
    await call.wait(call.config.agent.llmFirstTokenTimeoutMs);
    expect(call.of('error').map((e) => e.code)).toEqual(['llm_failed']);
    await call.wait(8_000);
    const fallback = call.config.agent.fallbackReplies.en;
    expect(call.of('response.done')[0]).toMatchObject({ status: 'failed', text: fallback });
    expect(call.audio.length).toBe(fallback.split(/\s+/).length * 5);
  });
});
