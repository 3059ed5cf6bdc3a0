import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createProviders } from '../src/providers/index.js';
import type { GrammarAware, GrammarSpec } from '../src/providers/asr/grammar/spec.js';
import type { AsrProvider, AsrStream, AsrStreamOptions } from '../src/providers/asr/types.js';
import type { LlmEvent, LlmProvider, LlmRequest } from '../src/providers/llm/types.js';
import type { TtsOptions, TtsProvider } from '../src/providers/tts/types.js';
import { speak } from './helpers/speech.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { TestDevice } from './helpers/device.js';

/**
 * Real providers behind wrappers that fail on demand, through the provider interfaces: a backend that
 * throws, stalls or dies mid-stream must cost the caller one turn at most, never the call.
 */
type Fault = 'none' | 'throw' | 'stall' | 'die-mid-stream';
const faults: { asr: Fault; llm: Fault; tts: Fault } = { asr: 'none', llm: 'none', tts: 'none' };

const never = () => new Promise<never>(() => {});

class FaultyLlm implements LlmProvider {
  readonly name: string;
  readonly capabilities = { runsOn: ['server'] as const, streaming: true };
  constructor(private readonly inner: LlmProvider) {
    this.name = `faulty-${inner.name}`;
  }
  load() {
    return this.inner.load();
  }
  async *stream(request: LlmRequest): AsyncIterable<LlmEvent> {
    if (faults.llm === 'throw') throw new Error('connection refused (injected)');
    if (faults.llm === 'stall') await never();
    let n = 0;
    for await (const event of this.inner.stream(request)) {
      if (faults.llm === 'die-mid-stream' && event.type === 'text' && ++n > 2) throw new Error('socket hang up (injected)');
      yield event;
    }
  }
}

class FaultyTts implements TtsProvider {
  readonly name = 'faulty-tts';
  readonly capabilities = { runsOn: ['server'] as const, streaming: true };
  readonly languages: readonly string[];
  constructor(private readonly inner: TtsProvider) {
    this.languages = inner.languages;
  }
  load() {
    return this.inner.load();
  }
  async *synthesize(text: string, options: TtsOptions): AsyncIterable<Int16Array> {
    if (faults.tts === 'throw') throw new Error('voice engine crashed (injected)');
    if (faults.tts === 'stall') await never();
    yield* this.inner.synthesize(text, options);
  }
}

class FaultyAsr implements AsrProvider, GrammarAware {
  readonly name = 'faulty-asr';
  readonly capabilities = { runsOn: ['server'] as const, streaming: true };
  constructor(private readonly inner: AsrProvider & Partial<GrammarAware>) {}
  get languages(): readonly string[] {
    return this.inner.languages;
  }
  load() {
    return this.inner.load();
  }
  /** The service compiles the agent's grammars into the real recogniser, as it does without the wrapper. */
  async setGrammars(specs: readonly GrammarSpec[]): Promise<void> {
    await this.inner.setGrammars?.(specs);
  }
  createStream(options: AsrStreamOptions): AsrStream {
    const stream = this.inner.createStream(options);
    return {
      push: (pcm) => stream.push(pcm),
      finalize: async () => {
        if (faults.asr === 'throw') {
          stream.cancel();
          throw new Error('recogniser disconnected (injected)');
        }
        if (faults.asr === 'stall') return never();
        return stream.finalize();
      },
      cancel: () => stream.cancel(),
      close: () => stream.close(),
    };
  }
}

let server: TestServer;
let askTime: Int16Array;

beforeAll(async () => {
  const config = mergeConfig(DEFAULT_CONFIG, {
    agent: { llmFirstTokenTimeoutMs: 1500, llmStallTimeoutMs: 1500, ttsTimeoutMs: 1500 },
    turn: { asrFinalTimeoutMs: 1500 },
  });
  const real = createProviders(config, silentLogger());
  const providers = { ...real, llm: new FaultyLlm(real.llm), tts: new FaultyTts(real.tts), asr: new FaultyAsr(real.asr) };
  [server, askTime] = await Promise.all([
    startTestServer({ agent: config.agent, turn: config.turn }, providers),
    speak('What time is it?'),
  ]);
});
afterAll(async () => server?.stop());

async function turn(device: TestDevice): Promise<{ done: Record<string, unknown> | undefined; errors: string[]; voicedFrames: number }> {
  const since = performance.now();
  await device.stream(askTime);
  let done: Record<string, unknown> | undefined;
  try {
    done = await device.silenceUntil((e) => e.type === 'response.done' || (e.type === 'error' && e.code === 'asr_failed'), 12_000, since);
  } catch {
    done = undefined;
  }
  await device.silence(300);
  const errors = device.eventsOf('error', since).map((e) => String(e.code));
  const voicedFrames = device.audio.filter((a) => a.atMs >= since && a.dbfs > -40).length;
  return { done: done?.type === 'response.done' ? done : undefined, errors, voicedFrames };
}

describe('faults in model backends', () => {
  it('speaks a fallback when the LLM throws, stalls or dies mid-stream, and the call goes on', async () => {
    const device = new TestDevice(server.wsUrl);
    await device.connect();

    for (const fault of ['throw', 'stall', 'die-mid-stream'] as const) {
      faults.llm = fault;
      const result = await turn(device);
      expect(result.errors, fault).toContain('llm_failed');
      expect(String(result.done?.text), fault).toMatch(/trouble/);
      expect(result.voicedFrames, fault).toBeGreaterThan(25);
    }

    faults.llm = 'none';
    const healthy = await turn(device);
    expect(healthy.errors).toEqual([]);
    expect(String(healthy.done?.text)).toMatch(/\d/);

    const metrics = await (await fetch(`${server.httpUrl}/metrics`)).text();
    expect(metrics).toMatch(/voice_agent_errors_total\{code="llm_failed"\} 3/);
    await device.close();
  });

  it('reports ASR and TTS failures and timeouts (a failed recognition spoken as the fallback), and answers normally afterwards', async () => {
    const device = new TestDevice(server.wsUrl);
    await device.connect();

    for (const fault of ['throw', 'stall'] as const) {
      faults.asr = fault;
      const since = performance.now();
      const result = await turn(device);
      expect(result.errors, `asr ${fault}`).toContain('asr_failed');
      // A phone caller sees no error event: the caller hears the fallback line instead of silence.
      const said = await device.silenceUntil((e) => e.type === 'response.done' && /trouble/.test(String(e.text)), 10_000, since);
      expect(String(said.text), `asr ${fault}`).toMatch(/trouble/);
      await device.silence(300);
      expect(device.audio.filter((a) => a.atMs >= since && a.dbfs > -40).length, `asr ${fault}`).toBeGreaterThan(25);
    }
    faults.asr = 'none';

    for (const fault of ['throw', 'stall'] as const) {
      faults.tts = fault;
      const result = await turn(device);
      expect(result.errors, `tts ${fault}`).toContain('tts_failed');
      // The text still reaches the client even when it cannot be spoken.
      expect(String(result.done?.text ?? ''), `tts ${fault}`).not.toBe('');
    }
    faults.tts = 'none';

    const healthy = await turn(device);
    expect(healthy.errors).toEqual([]);
    expect(healthy.voicedFrames).toBeGreaterThan(25);
    await device.close();
  });
});
