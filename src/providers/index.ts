import type { Logger } from 'pino';
import type { ServiceConfig } from '../config.js';
import type { SessionProviders } from '../session/session.js';
import { createAsrProvider } from './asr/index.js';
import { createLlmProvider } from './llm/index.js';
import { createToolExecutor } from './llm/tool-filter.js';
import { createTtsProvider } from './tts/index.js';
import { SileroVad } from './vad/silero/index.js';
import { FallbackVad } from './vad/execution-providers.js';

/** Build the providers the config names. Nothing is loaded yet: see loadProviders. */
export function createProviders(config: ServiceConfig, logger: Logger): SessionProviders {
  const { vad, asr, tts } = config.providers;
  return {
    // 'cuda' where this onnxruntime-node build has it, else CPU (logged): see vad/execution-providers.ts.
    vad: new FallbackVad(
      (executionProviders) => new SileroVad({ modelPath: vad.modelPath, executionProviders }),
      vad.executionProviders,
      logger.child({ provider: 'vad' }),
    ),
    asr: createAsrProvider(asr, logger.child({ provider: 'asr' })),
    llm: createLlmProvider(config.providers.llm, logger.child({ provider: 'llm' })),
    tts: createTtsProvider(tts, logger.child({ provider: 'tts' })),
    tools: createToolExecutor(config.agent.tools),
  };
}

/** Load every stage's models, logging each as it becomes ready. */
export async function loadProviders(providers: SessionProviders, logger: Logger): Promise<void> {
  const stages = [
    ['vad', providers.vad],
    ['asr', providers.asr],
    ['llm', providers.llm],
    ['tts', providers.tts],
  ] as const;
  const started = performance.now();
  let loaded = 0;
  await Promise.all(
    stages.map(async ([stage, provider]) => {
      const t0 = performance.now();
      logger.info({ stage, provider: provider.name }, 'loading model');
      try {
        await provider.load();
      } catch (err) {
        throw new Error(`${stage} provider "${provider.name}" failed to load: ${(err as Error).message}`, { cause: err });
      }
      loaded++;
      logger.info({ stage, provider: provider.name, ms: Math.round(performance.now() - t0), progress: `${loaded}/${stages.length}` }, 'model loaded');
    }),
  );
  logger.info({ ms: Math.round(performance.now() - started) }, 'all models loaded');
}
