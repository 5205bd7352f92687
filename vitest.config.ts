import { defineConfig } from 'vitest/config';

// Tests load ONNX sessions and spawn servers; the machine has 2 cores, so keep
// file-level parallelism low and timeouts generous (correctness, never speed, is asserted).
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 180_000,
    pool: 'forks',
    maxWorkers: 2,
  },
});
