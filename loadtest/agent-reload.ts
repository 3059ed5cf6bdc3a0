/**
 * What one more agent costs (config `agents`, src/agents): its first load and each reload of a changed file, with
 * the shared PocketSphinx recogniser compiling its grammars: time, RSS, and the event-loop delay a reload causes
 * (what calls in progress would feel in their audio pacing).
 *
 *   npx tsx loadtest/agent-reload.ts [--file config/agent-bank.json] [--reloads 3]
 *   node --expose-gc --import tsx loadtest/agent-reload.ts --reloads 20   (RSS after a forced GC: does a reload leak?)
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { AgentRegistry } from '../src/agents/registry.js';
import { DEFAULT_CONFIG, mergeConfig } from '../src/config.js';
import { silentLogger } from '../src/core/logger.js';
import { createProviders } from '../src/providers/index.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback;
};
const source = arg('file', 'config/agent-bank.json');
const reloads = Number(arg('reloads', '3'));

const dir = mkdtempSync(path.join(tmpdir(), 'agent-reload-'));
const file = path.join(dir, 'agent.json');
const rules = JSON.parse(readFileSync(source, 'utf8')) as { welcome?: Record<string, string> };
writeFileSync(file, JSON.stringify(rules));
const config = mergeConfig(DEFAULT_CONFIG, { agents: { files: { agent: file }, reload: { enabled: false } } });
const providers = createProviders(config, silentLogger());
const rss = (): number => Math.round(process.memoryUsage().rss / 1e6);
try {
  await providers.asr.load();
  const registry = new AgentRegistry(config, providers, silentLogger());
  const before = rss();
  let t0 = performance.now();
  await registry.load();
  console.log(`${source}: first load ${Math.round(performance.now() - t0)} ms (dictionaries read once), RSS +${rss() - before} MB`);
  for (let i = 0; i < reloads; i++) {
    rules.welcome = { ...rules.welcome, en: `Hello, version ${i}.` };
    writeFileSync(file, JSON.stringify(rules));
    const lag = monitorEventLoopDelay({ resolution: 5 });
    lag.enable();
    // With node --expose-gc, garbage of the last reload is collected first: RSS then shows what versions keep.
    (globalThis as { gc?: () => void }).gc?.();
    const rssBefore = rss();
    t0 = performance.now();
    const version = await registry.reload('agent');
    lag.disable();
    console.log(
      `reload ${i + 1} (${version?.version}): ${Math.round(performance.now() - t0)} ms, RSS ${rssBefore} → ${rss()} MB, ` +
        `event-loop delay max ${Math.round(lag.max / 1e6)} ms, p99 ${Math.round(lag.percentile(99) / 1e6)} ms`,
    );
  }
  await registry.close();
} finally {
  await providers.asr.close?.();
  rmSync(dir, { recursive: true, force: true });
}
process.exit(0);
