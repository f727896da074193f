import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // End-to-end suites start real engines; they share one machine, so files run one at a time
    // within the e2e project and unit tests stay fast.
    testTimeout: 30_000,
    hookTimeout: 180_000,
    fileParallelism: false,
    reporters: ['default'],
  },
});
