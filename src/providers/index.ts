import { existsSync } from 'node:fs';
import type { Logger } from 'pino';
import type { ServiceConfig } from '../config.js';
import type { SessionProviders } from '../session/session.js';
import { createAsrProvider, grammarWanted } from './asr/index.js';
import { grammarSource } from './asr/grammar/from-rules.js';
import type { GrammarAware } from './asr/grammar/spec.js';
import { createLlmProvider } from './llm/index.js';
import { createToolExecutor } from './llm/tool-filter.js';
import { defaultRulesPath } from './llm/rules/config.js';
import { loadAgentTools } from '../integration/http-tools.js';
import { createTtsProvider } from './tts/index.js';
import { SileroVad } from './vad/silero/index.js';
import { quietWindowsOf } from './vad/quiet-windows.js';
import { FallbackVad } from './vad/execution-providers.js';

/** Build the providers the config names. Nothing is loaded yet: see loadProviders. */
export function createProviders(config: ServiceConfig, logger: Logger): SessionProviders {
  const { vad, asr, tts } = config.providers;
  const agentTools = agentToolsOf(config);
  return {
    // 'cuda' where this onnxruntime-node build has it, else CPU (logged): see vad/execution-providers.ts.
    vad: new FallbackVad(
      (executionProviders) =>
        new SileroVad({
          modelPath: vad.modelPath,
          executionProviders,
          worker: vad.worker,
          workerDeadlineMs: vad.workerDeadlineMs,
          quietWindows: quietWindowsOf(vad),
          logger: logger.child({ provider: 'vad' }),
        }),
      vad.executionProviders,
      logger.child({ provider: 'vad' }),
    ),
    // With grammars coming (applyGrammars), the generic LM decoders (~95 MB, ~1 s each) are built only if needed.
    asr: createAsrProvider(asr, logger.child({ provider: 'asr' }), { grammarExpected: grammarWanted(asr.provider === 'pocketsphinx' ? asr.grammar : 'off', config.providers.llm.provider) }),
    llm: createLlmProvider(config.providers.llm, logger.child({ provider: 'llm' })),
    tts: createTtsProvider(tts, logger.child({ provider: 'tts' })),
    tools: createToolExecutor(config.agent.tools, agentTools, logger.child({ component: 'tools' })),
    ...(agentTools.handover ? { handover: agentTools.handover } : {}),
    ...(agentTools.voices ? { voices: agentTools.voices } : {}),
  };
}

/** The agent file's HTTP tools: `agent.tools.file`, else the rules file when the rules agent runs. */
function agentToolsOf(config: ServiceConfig): ReturnType<typeof loadAgentTools> {
  const llm = config.providers.llm;
  const file = config.agent.tools?.file ?? (llm.provider === 'rules' ? (llm.rulesPath ?? defaultRulesPath()) : undefined);
  // An unreadable rules file is the rules agent's to report (at load, /healthz 503), not a crash here.
  return file && existsSync(file) ? loadAgentTools(file) : {};
}

function isGrammarAware(value: unknown): value is GrammarAware {
  return typeof value === 'object' && value !== null && typeof (value as Partial<GrammarAware>).setGrammars === 'function';
}

/**
 * Compiles what the agent understands into the ASR's grammars (grammarSource: the agent's own
 * grammarSpecs() when it has them, else the rules file). A failure is logged and the ASR keeps its
 * open-vocabulary model: the service still starts.
 */
export async function applyGrammars(providers: SessionProviders, config: ServiceConfig, logger: Logger): Promise<void> {
  const asrConfig = config.providers.asr;
  const llmConfig = config.providers.llm;
  if (asrConfig.provider !== 'pocketsphinx' || !isGrammarAware(providers.asr)) return;
  if (!grammarWanted(asrConfig.grammar, llmConfig.provider)) {
    logger.info({ grammar: asrConfig.grammar ?? 'auto', llm: llmConfig.provider }, 'asr grammar off: open-vocabulary decoding');
    return;
  }
  const t0 = performance.now();
  try {
    const specs = await grammarSource(providers.llm, {
      rulesPath: llmConfig.provider === 'rules' ? llmConfig.rulesPath : undefined,
      languages: asrConfig.languages,
      names: asrConfig.names,
    });
    await providers.asr.setGrammars(specs);
    logger.info({ languages: providers.asr.languages, ms: Math.round(performance.now() - t0) }, 'asr grammars ready');
  } catch (err) {
    logger.error({ err }, 'asr grammars failed to compile; decoding with the generic model');
  }
}

/** Load every stage's models, logging each as it becomes ready; then the ASR's grammars when config is given. */
export async function loadProviders(providers: SessionProviders, logger: Logger, config?: ServiceConfig): Promise<void> {
  const stages = [
    ['vad', providers.vad],
    ['asr', providers.asr],
    ['llm', providers.llm],
    ['tts', providers.tts],
  ] as const;
  const started = performance.now();
  let loaded = 0;
  const loads = new Map(
    stages.map(([stage, provider]) => [stage, (async () => {
      const t0 = performance.now();
      logger.info({ stage, provider: provider.name }, 'loading model');
      try {
        await provider.load();
      } catch (err) {
        throw new Error(`${stage} provider "${provider.name}" failed to load: ${(err as Error).message}`, { cause: err });
      }
      loaded++;
      logger.info({ stage, provider: provider.name, ms: Math.round(performance.now() - t0), progress: `${loaded}/${stages.length}` }, 'model loaded');
    })()]),
  );
  // The grammars need only the recogniser and the agent: they compile while the voices are still loading.
  const grammars = (async () => {
    await Promise.all([loads.get('asr'), loads.get('llm')]);
    if (config) await applyGrammars(providers, config, logger);
  })();
  await Promise.all([...loads.values(), grammars]);
  logger.info({ ms: Math.round(performance.now() - started) }, 'all models loaded');
}
