/** ASR backend selection from `providers.asr`. */
import type { Logger } from 'pino';
import type { AsrProviderConfig } from '../../config.js';
import { OpenAiBatchAsr } from './openai-batch/index.js';
import { PocketSphinxAsr } from './pocketsphinx/index.js';
import type { AsrProvider } from './types.js';
import { VllmRealtimeAsr } from './vllm-realtime/index.js';

export function createAsrProvider(config: AsrProviderConfig, logger: Logger): AsrProvider {
  switch (config.provider) {
    case 'pocketsphinx':
      return new PocketSphinxAsr({
        modelDir: config.modelDir,
        spareDecoders: config.spareDecoders ?? 4,
        maxIdleDecoders: config.maxIdleDecoders ?? 4,
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
