import { defineConfig } from 'vitest/config';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    // One S3 server (Ceph radosgw) per run, started by the first file that needs it.
    globalSetup: ['test/helpers/s3-global-setup.ts'],
    // End-to-end suites start real engines, a glusterd (one per machine: bricks always use port
    // 24007) and a VM; they share two CPUs, so test files run one at a time.
    testTimeout: 30_000,
    hookTimeout: 180_000,
    fileParallelism: false,
    reporters: ['default'],
  },
});
