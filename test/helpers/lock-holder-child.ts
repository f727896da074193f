/**
 * A separate process that holds a cluster lock, for tests that pause it with SIGSTOP:
 * `tsx lock-holder-child.ts DIR TTL_MS`. Prints `held` once it holds the lock named `vol`; then
 * for each line `step` on stdin, prints `still held` or `lost: <message>` from its lease; exits
 * on `end`, releasing the lock.
 */
import * as fs from 'node:fs/promises';
import { createInterface } from 'node:readline';
import { SharedClock } from '../../src/core/clock.js';
import { ClusterLocks } from '../../src/core/cluster/cluster-lock.js';

const [dir, ttl] = process.argv.slice(2);
const locks = new ClusterLocks(fs, dir!, 'node-child', new SharedClock(), { ttlMs: Number(ttl), waitMs: 5_000 });
await locks.withLock('vol', async (lease) => {
  process.stdout.write('held\n');
  for await (const line of createInterface({ input: process.stdin })) {
    if (line === 'end') break;
    try {
      lease.assertHeld('the next step');
      process.stdout.write('still held\n');
    } catch (err) {
      process.stdout.write(`lost: ${(err as Error).message}\n`);
    }
  }
});
// stdin stays open (the test's pipe): leave once the lock is released.
process.exit(0);
