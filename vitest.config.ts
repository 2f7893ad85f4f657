import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/fixtures/**', 'node_modules/**', 'dist/**'],
    // GPU tests share lavapipe's threads and the machine has two cores.
    maxWorkers: 2,
    // Generous: a cold Mesa shader cache makes lavapipe compile each pipeline for tens of seconds.
    testTimeout: 180_000,
    hookTimeout: 180_000,
    reporters: ['default'],
  },
});
