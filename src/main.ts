import { loadConfig } from './config.js';
import { createLogger } from './core/logger.js';
import { exitOnSignals } from './core/shutdown.js';
import { buildServer } from './server.js';

/** `npm start`: the service on its configured (by default embedded, offline) providers. */
async function main(): Promise<void> {
  // `npm start -- --mode asr-server`: only the ASR, served under vLLM's realtime protocol (src/asr-server.ts).
  const modeAt = process.argv.indexOf('--mode');
  const mode = modeAt >= 0 ? process.argv[modeAt + 1] : 'service';
  if (mode === 'asr-server') return (await import('./asr-server.js')).runAsrServer();
  if (mode !== 'service') throw new Error(`--mode must be "service" or "asr-server", got "${mode}"`);
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const server = buildServer(config, logger);
  // SIGTERM drains (calls finish or hear a notice); a second signal or SIGINT stops at once.
  exitOnSignals(logger, async (signal) => {
    if (signal === 'SIGTERM') await server.service.drain();
    await server.stop();
  });
  await server.start();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
