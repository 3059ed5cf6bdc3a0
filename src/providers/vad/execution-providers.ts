/**
 * onnxruntime execution-provider selection: use CUDA (or another accelerator) when this onnxruntime-node build
 * can, CPU otherwise, and say which in the log.
 *
 * onnxruntime-node's default npm install ships the CPU (and WebGPU) providers; its CUDA provider library
 * (libonnxruntime_providers_cuda.so) is only fetched by `npm install --onnxruntime-node-install=cuda12` on a
 * connected machine (docs/gpu.md). `listSupportedBackends()` lists what the binding was built for, with
 * `bundled: false` for providers whose library must be installed separately, so a listed-but-unbundled provider
 * counts only when its library is next to the binding. Even then a session may fail to start (no GPU, no CUDA
 * runtime): FallbackVad retries on CPU.
 */
import type { ProviderCapabilities } from '../capabilities.js';
import { existsSync, readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import path from 'node:path';
import ort from 'onnxruntime-node';
import type { Logger } from 'pino';
import { hasVadBatchStats, hasVadWorkerStats } from './metrics.js';
import type { VadBatchStats, VadProvider, VadStream, VadWorkerStats } from './types.js';

/** Provider name → the shared library that must accompany an unbundled provider. */
const PROVIDER_LIBRARIES: Record<string, string> = {
  cuda: 'libonnxruntime_providers_cuda.so',
  tensorrt: 'libonnxruntime_providers_tensorrt.so',
};

/** Directories holding onnxruntime_binding.node (bin/napi-v*\/<platform>/<arch>). */
function bindingDirs(): string[] {
  try {
    const req = createRequire(import.meta.url);
    const bin = path.join(path.dirname(req.resolve('onnxruntime-node/package.json')), 'bin');
    return readdirSync(bin)
      .filter((d) => d.startsWith('napi-v'))
      .map((d) => path.join(bin, d, process.platform, process.arch))
      .filter((d) => existsSync(d));
  } catch {
    return [];
  }
}

export interface ResolvedProviders {
  providers: string[];
  /** Requested providers left out, with why. */
  dropped: Array<{ name: string; reason: string }>;
}

/**
 * The usable subset of `requested`, in order, always ending with 'cpu'. `supported` and `libraryExists` are
 * injectable for tests; by default they ask onnxruntime-node and the file system.
 */
export function resolveExecutionProviders(
  requested: readonly string[] | undefined,
  supported: ReadonlyArray<{ name: string; bundled: boolean }> = ort.listSupportedBackends(),
  libraryExists: (file: string) => boolean = (file) => bindingDirs().some((d) => existsSync(path.join(d, file))),
): ResolvedProviders {
  const providers: string[] = [];
  const dropped: ResolvedProviders['dropped'] = [];
  for (const name of requested ?? ['cpu']) {
    if (name === 'cpu' || providers.includes(name)) continue;
    const backend = supported.find((b) => b.name === name);
    if (!backend) {
      dropped.push({ name, reason: `this onnxruntime-node build has no "${name}" execution provider` });
      continue;
    }
    const library = PROVIDER_LIBRARIES[name];
    if (!backend.bundled && library && !libraryExists(library)) {
      dropped.push({ name, reason: `${library} is not installed (npm install --onnxruntime-node-install=cuda12, see docs/gpu.md)` });
      continue;
    }
    providers.push(name);
  }
  providers.push('cpu');
  return { providers, dropped };
}

/**
 * A VAD built for the resolved providers that, if its accelerated session cannot start, logs why and rebuilds
 * itself on CPU instead of failing the service.
 */
export class FallbackVad implements VadProvider {
  private active: VadProvider;
  private usedProviders: string[];

  constructor(
    private readonly build: (executionProviders: string[]) => VadProvider,
    requested: readonly string[] | undefined,
    private readonly logger: Logger,
  ) {
    const { providers, dropped } = resolveExecutionProviders(requested);
    for (const d of dropped) logger.warn({ provider: d.name, reason: d.reason }, `VAD: "${d.name}" execution provider unavailable, using ${providers.join(', ')}`);
    this.usedProviders = providers;
    this.active = build(providers);
  }

  get name(): string {
    return this.active.name;
  }

  /** After a fallback, the CPU the VAD really runs on. */
  get capabilities(): ProviderCapabilities {
    return this.active.capabilities;
  }

  /** The execution providers the VAD session runs with (after any fallback). */
  get executionProviders(): readonly string[] {
    return this.usedProviders;
  }

  /** The wrapped VAD's worker health (null when it runs none). */
  get workerStats(): VadWorkerStats | null {
    return hasVadWorkerStats(this.active) ? this.active.workerStats : null;
  }

  /** The wrapped VAD's batching counters (null when it does not batch). */
  get batchStats(): Readonly<VadBatchStats> | null {
    return hasVadBatchStats(this.active) ? this.active.batchStats : null;
  }

  async load(): Promise<void> {
    try {
      await this.active.load();
      this.logger.info({ executionProviders: this.usedProviders }, 'VAD execution providers');
    } catch (err) {
      if (this.usedProviders.length === 1) throw err;
      this.logger.warn({ err: (err as Error).message, tried: this.usedProviders }, 'VAD: accelerated session failed to start, falling back to cpu');
      this.usedProviders = ['cpu'];
      this.active = this.build(['cpu']);
      await this.active.load();
    }
  }

  createStream(): VadStream {
    return this.active.createStream();
  }

  async close(): Promise<void> {
    await this.active.close?.();
  }
}
