import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Real models and real sockets: keep heavy suites from fighting over the 2 CI cores.
    pool: 'forks',
    maxWorkers: 2,
    fileParallelism: true,
  },
});
