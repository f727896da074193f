/**
 * The cluster lock on a real file system (a temp dir): renewal, lapse and takeover between
 * two holders, as two nodes on one shared directory would see them.
 */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SharedClock } from '../../src/core/clock.js';
import { ClusterLocks } from '../../src/core/cluster/cluster-lock.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { faultyFs } from '../helpers/lock-faults.js';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error('condition not reached in time');
    await sleep(10);
  }
}

describe('ClusterLocks on a real directory', () => {
  let dir: string;
  const lockFile = () => join(dir, 'vol.lock');
  const owner = async () => (JSON.parse(await realFs.readFile(lockFile(), 'utf8')) as { owner: string }).owner;
  beforeEach(async () => {
    dir = await makeTempDir('stowage-lock-');
  });
  afterEach(async () => {
    await removeTempDir(dir);
  });

  it('a holder whose renewal stalls past the expiry never overwrites nor deletes the lock its successor took', async () => {
    const gate = faultyFs(realFs, dir);
    const clock = new SharedClock();
    const a = new ClusterLocks(gate.fs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 5_000 });
    const b = new ClusterLocks(realFs, dir, 'node-b', clock, { ttlMs: 300, waitMs: 5_000 });
    let finishA!: () => void;
    const holding = a.withLock('vol', () => new Promise<void>((r) => { finishA = r; })).catch((err: unknown) => err);
    await until(async () => (await owner().catch(() => '')) === 'node-a');
    // A's writes to the lock directory stall (a slow client): its renewals cannot land.
    gate.set('hold-writes');
    let bInside = false;
    let finishB!: () => void;
    const bHeld = b.withLock('vol', async () => {
      bInside = true;
      await new Promise<void>((r) => { finishB = r; });
    });
    await until(() => bInside);
    expect(await owner()).toBe('node-b');
    // A wakes up: whatever it had started must not touch B's lock.
    gate.set('pass');
    await sleep(400);
    expect(await owner()).toBe('node-b');
    finishA();
    await holding;
    expect(await owner()).toBe('node-b');
    finishB();
    await bHeld;
    expect((await realFs.readdir(dir)).filter((f) => !f.startsWith('.'))).toEqual([]);
  });
});
