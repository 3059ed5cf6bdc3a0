import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 120_000,
    // Real models, real sockets and real-time audio: files run one at a time so a call's audio is never
    // starved of CPU by another file's browser or models (CI has 2 cores).
    pool: 'forks',
    fileParallelism: false,
  },
});
