import { loadConfig } from './config.js';
import { createLogger } from './core/logger.js';
import { buildServer } from './server.js';

/** `npm start`: the service on its configured (by default embedded, offline) providers. */
async function main(): Promise<void> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const server = buildServer(config, logger);
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal }, 'shutting down');
    server.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', () => stop('SIGINT'));
  process.on('SIGTERM', () => stop('SIGTERM'));
  await server.start();
}

main().catch((err: unknown) => {
  console.error(err);
  process.exit(1);
});
