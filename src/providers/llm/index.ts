/** LLM backend selection. node-llama-cpp's native addon is only loaded when 'llamacpp' is load()ed. */
import type { Logger } from 'pino';
import { LlamaCppLlm, type LlamaCppLlmOptions } from './llamacpp/index.js';
import { OpenAiCompatibleLlm, type OpenAiCompatibleLlmOptions } from './openai/index.js';
import { RuleBasedAgent, type RuleBasedAgentOptions } from './rules/index.js';
import type { LlmProvider } from './types.js';

export type LlmProviderName = 'rules' | 'openai' | 'llamacpp';

/**
 * Flat, discriminated by `provider`; the rest are that provider's constructor options, e.g.
 * `{ provider: 'openai', baseUrl: 'http://127.0.0.1:8000/v1', model: 'mistral-small' }`.
 * (The logger comes from the factory argument.)
 */
export type LlmConfig =
  | ({ provider: 'rules' } & RuleBasedAgentOptions)
  | ({ provider: 'openai' } & Omit<OpenAiCompatibleLlmOptions, 'logger'>)
  | ({ provider: 'llamacpp' } & Omit<LlamaCppLlmOptions, 'logger'>);

export function createLlmProvider(config: LlmConfig, logger: Logger): LlmProvider {
  const log = logger.child({ component: 'llm', provider: config.provider });
  switch (config.provider) {
    case 'rules': {
      const { provider: _p, ...options } = config;
      // A service answers calls: its first callers' date turns should not compile the date parsers.
      return new RuleBasedAgent({ ...options, warmDateParsers: true });
    }
    case 'openai': {
      const { provider: _p, ...options } = config;
      if ((!options.baseUrl && !options.baseUrls?.length) || !options.model) {
        throw new Error("LLM config: provider 'openai' needs baseUrl (or baseUrls) and model");
      }
      return new OpenAiCompatibleLlm({ ...options, logger: log });
    }
    case 'llamacpp': {
      const { provider: _p, ...options } = config;
      if (!options.modelPath) throw new Error("LLM config: provider 'llamacpp' needs modelPath");
      return new LlamaCppLlm({ ...options, logger: log });
    }
    default: {
      const name: never = config;
      throw new Error(`LLM config: unknown provider "${String((name as { provider: unknown }).provider)}" (expected rules | openai | llamacpp)`);
    }
  }
}

export { LlamaCppLlm, OpenAiCompatibleLlm, RuleBasedAgent };
export type { LlamaCppLlmOptions, OpenAiCompatibleLlmOptions, RuleBasedAgentOptions };
export { LlmHttpError } from './openai/index.js';
export { RulesConfigError, validateRulesConfig, type RulesConfig, type RuleIntent } from './rules/index.js';
export { ToolRegistry, type ToolResult, type ToolContext, type ToolImplementation, type ToolAction } from './tools.js';
export type * from './types.js';
