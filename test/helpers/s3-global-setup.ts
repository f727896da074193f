/**
 * vitest globalSetup: gives the run a directory for its one shared S3 server (see s3-server.ts)
 * and stops that server at the end. Runs that never need S3 start nothing; what a crashed run
 * left (its owner process gone) is stopped and removed first.
 */
import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { reapStaleRuns, RUN_DIR_ENV, RUN_DIR_PREFIX, stopCephS3 } from './s3-server.js';

export default async function setup(): Promise<() => Promise<void>> {
  for (const dir of await reapStaleRuns()) process.stderr.write(`[s3-server] removed a crashed run's S3 server at ${dir}\n`);
  const runDir = join(tmpdir(), `${RUN_DIR_PREFIX}${process.pid}-${randomBytes(4).toString('hex')}`);
  await mkdir(runDir, { mode: 0o700 });
  // Test files run in worker processes started after this, which inherit the environment.
  process.env[RUN_DIR_ENV] = runDir;
  // The SDK warns, under Node 20, about its releases of 2027; the tests' output needs none of it.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  return async () => {
    await stopCephS3(join(runDir, 'ceph'));
    await rm(runDir, { recursive: true, force: true });
  };
}
