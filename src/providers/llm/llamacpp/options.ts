/** `providers.llm` with provider "llamacpp" (a GGUF model in this process): the options it accepts and their defaults. */
import { defaultsOf, t, type Static } from '../../../core/options.js';

export const LLAMACPP_OPTIONS = t.object({
  modelPath: t.text(),
  /** 'auto' picks CUDA/Vulkan/Metal when a prebuilt binary works; false = CPU. */
  gpu: t.default(t.enum(['auto', false]), false),
  /** Tokens per sequence. */
  contextSize: t.default(t.integer(256), 2048),
  /** Parallel generations on the one context (1: requests queue). */
  sequences: t.default(t.integer(1, 64), 1),
  temperature: t.default(t.number(0, 2), 0.7),
  /** Cap per reply. */
  maxTokens: t.default(t.integer(1), 256),
  /** Offer request tools as node-llama-cpp functions. */
  tools: t.default(t.boolean(), true),
  /** CPU threads for llama.cpp (unset: on CPU the number of cores; with a GPU node-llama-cpp's choice). */
  threads: t.optional(t.integer(1)),
});
export type LlamaCppSettings = Static<typeof LLAMACPP_OPTIONS>;
export const LLAMACPP_DEFAULTS = defaultsOf(LLAMACPP_OPTIONS);
