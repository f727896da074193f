import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { defineConfig } from 'vitest/config';

/**
 * Runs INSIDE the device-mapper test VM (see test/vm/guest-run.sh): the guest-side test files,
 * which need a real kernel with device-mapper. The host's `vitest run` never picks them up
 * (they are named *.guest.ts); test/backends/devicemapper-vm.test.ts boots the VM that runs them.
 */
export default defineConfig({
  // The checkout is read-only inside the VM; vite's caches go to the guest's tmpfs.
  cacheDir: join(tmpdir(), 'vite-cache'),
  test: {
    // Benchmarks (*.bench-guest.ts) run only when asked (STOWAGE_VM_BENCH=1), never in the suite.
    include: [process.env.STOWAGE_VM_BENCH === '1' ? 'test/vm/guest/**/*.bench-guest.ts' : 'test/vm/guest/**/*.guest.ts'],
    ...(process.env.STOWAGE_VM_BENCH === '1' ? { testTimeout: 3_600_000 } : {}),
    testTimeout: 180_000,
    hookTimeout: 180_000,
    fileParallelism: false,
    // One worker and one module graph for all files: the guest has few CPUs, imports are slow under
    // emulation, and every file drives the same kernel anyway.
    pool: 'forks',
    maxWorkers: 1,
    isolate: false,
  },
});
