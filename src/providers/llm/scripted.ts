import type { LlmEvent, LlmProvider, LlmRequest } from './types.js';

/** Says one fixed line: for service notices (shutdown, limits) that must not depend on a model. */
export class ScriptedLine implements LlmProvider {
  readonly name = 'scripted';

  constructor(private readonly line: string) {}

  async load(): Promise<void> {}

  async *stream(request: LlmRequest): AsyncIterable<LlmEvent> {
    if (request.signal.aborted) return;
    yield { type: 'text', text: this.line };
    yield { type: 'done', finishReason: 'stop' };
  }
}
