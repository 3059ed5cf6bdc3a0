/** ASR backend selection from `providers.asr`. */
import type { Logger } from 'pino';
import type { AsrProviderConfig } from '../options.js';
import { POCKETSPHINX_DEFAULTS } from './pocketsphinx/options.js';
import { OpenAiBatchAsr } from './openai-batch/index.js';
import { PocketSphinxAsr } from './pocketsphinx/index.js';
import type { AsrProvider } from './types.js';
import { VllmRealtimeAsr } from './vllm-realtime/index.js';

/** Whether the service compiles grammars for this ASR: 'auto' only with the embedded rules agent. */
export function grammarWanted(mode: 'auto' | 'on' | 'off' | undefined, llmProvider: string | undefined): boolean {
  const chosen = mode ?? POCKETSPHINX_DEFAULTS.grammar;
  if (chosen === 'off') return false;
  if (chosen === 'on') return true;
  return llmProvider === undefined || llmProvider === 'rules';
}

export function createAsrProvider(config: AsrProviderConfig, logger: Logger, options: { grammarExpected?: boolean } = {}): AsrProvider {
  switch (config.provider) {
    case 'pocketsphinx':
      return new PocketSphinxAsr({
        modelDir: config.modelDir,
        spareDecoders: config.spareDecoders ?? POCKETSPHINX_DEFAULTS.spareDecoders,
        maxIdleDecoders: config.maxIdleDecoders ?? POCKETSPHINX_DEFAULTS.maxIdleDecoders,
        grammarSpareDecoders: config.grammarSpareDecoders ?? POCKETSPHINX_DEFAULTS.grammarSpareDecoders,
        // Without grammars coming the generic LM loads at once; with them it is built only if they fail (setGrammars
        // falls back to it) or a stream is asked for before any grammar was set.
        lazyGenericLm: options.grammarExpected === true,
        grammar: {
          languages: config.languages,
          spanishModelDir: config.spanishModelDir,
          garbageWeight: config.garbageWeight,
          spanishDialects: config.spanishDialects ?? POCKETSPHINX_DEFAULTS.spanishDialects,
          languageEvidenceScale: config.languageEvidenceScale,
          languageSwitchProbability: config.languageSwitchProbability,
          languagePrior: config.languagePrior,
          switchFloor: config.switchFloor,
          firstSwitchFloor: config.firstSwitchFloor,
          doubtConfidence: config.doubtConfidence,
          focusConfidence: config.focusConfidence,
        },
        logger,
      });
    case 'vllm-realtime': {
      const { provider: _p, ...options } = config;
      return new VllmRealtimeAsr({ ...options, logger });
    }
    case 'openai-batch': {
      const { provider: _p, ...options } = config;
      return new OpenAiBatchAsr({ ...options, logger });
    }
    default: {
      const never: never = config;
      throw new Error(`ASR config: unknown provider "${String((never as { provider: unknown }).provider)}" (expected pocketsphinx | vllm-realtime | openai-batch)`);
    }
  }
}

export { OpenAiBatchAsr, PocketSphinxAsr, VllmRealtimeAsr };
