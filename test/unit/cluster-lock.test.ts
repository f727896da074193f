/**
 * The cluster lock on a real file system (a temp dir): renewal, lapse and takeover between
 * two holders, as two nodes on one shared directory would see them.
 */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SharedClock } from '../../src/core/clock.js';
import { ClusterLocks } from '../../src/core/cluster/cluster-lock.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { faultyFs } from '../helpers/lock-faults.js';
import { asFsPort, LocalFirstFs } from '../../src/core/local-fs.js';

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

  it('a full disk where the lock goes is E_STORAGE_FULL, naming it, and runs nothing', async () => {
    const full = new Proxy(realFs, {
      get(target, prop: string) {
        const real = (target as unknown as Record<string, unknown>)[prop];
        if (typeof real !== 'function') return real;
        return async (...args: unknown[]) => {
          if (['open', 'writeFile', 'link', 'mkdir'].includes(prop) && typeof args[0] === 'string' && args[0].startsWith(dir)) {
            throw Object.assign(new Error(`ENOSPC: no space left on device, ${prop} '${args[0]}'`), { code: 'ENOSPC' });
          }
          return (real as (...a: unknown[]) => unknown).apply(target, args);
        };
      },
    });
    const locks = new ClusterLocks(full, dir, 'node-a', new SharedClock(), { ttlMs: 300, waitMs: 1_000 });
    let ran = false;
    await expect(locks.withLock('vol', async () => { ran = true; })).rejects.toMatchObject({
      code: 'E_STORAGE_FULL', message: expect.stringContaining(`the storage holding the cluster lock ${lockFile()} is full: no space left on device`),
    });
    expect(ran).toBe(false);
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

  const expiresAt = async () => (JSON.parse(await realFs.readFile(lockFile(), 'utf8')) as { expiresAt: number }).expiresAt;

  it.each([
    ['another node\'s expired lock', { owner: 'gone', token: 'ab', expiresAt: 1 }],
    ['an expired lock of this node\'s run that died', { owner: 'node-c', token: 'cd', expiresAt: 1, run: 'dead' }],
    ['a symbolic link planted there', undefined],
  ])('a node that judged %s breakable and then paused leaves alone the lock another node took meanwhile', async (_label, lock) => {
    if (lock) await realFs.writeFile(lockFile(), JSON.stringify(lock).padEnd(256, ' '));
    else await realFs.symlink('/etc/hostname', lockFile());
    const anHourAgo = new Date(Date.now() - 3_600_000);
    await realFs.lutimes(lockFile(), anHourAgo, anHourAgo);
    let armed = true;
    let lookedAt!: () => void;
    const looked = new Promise<void>((resolve) => { lookedAt = resolve; });
    let resume!: () => void;
    const resumed = new Promise<void>((resolve) => { resume = resolve; });
    let opens = 0;
    const renamed: string[] = [];
    // Node c: its first read of the lock file ends (it has judged it), then it stops (descheduled, paused).
    const slow = new Proxy(realFs, {
      get(target, prop: string) {
        const real = (target as unknown as Record<string, unknown>)[prop];
        if (typeof real !== 'function') return real;
        return async (...args: unknown[]) => {
          const outcome = await (real as (...a: unknown[]) => Promise<unknown>).apply(target, args)
            .then((value) => ({ value }), (error: unknown) => ({ error }));
          if (prop === 'rename' && args[0] === lockFile()) renamed.push(String(args[1]));
          if (prop === 'open' && args[0] === lockFile()) {
            opens += 1;
            if (armed) {
              armed = false;
              lookedAt();
              await resumed;
            }
          }
          if ('error' in outcome) throw outcome.error;
          return outcome.value;
        };
      },
    });
    const clock = new SharedClock();
    const c = new ClusterLocks(slow, dir, 'node-c', clock, { ttlMs: 30_000, waitMs: 20_000 });
    const b = new ClusterLocks(realFs, dir, 'node-b', clock, { ttlMs: 30_000, waitMs: 20_000 });
    const byC = c.withLock('vol', async () => owner());
    await looked;
    // Node b breaks that file itself and takes the name; then c wakes and acts on its old judgement.
    const byB = b.withLock('vol', async () => {
      const taken = await realFs.lstat(lockFile());
      const before = opens;
      resume();
      await until(() => opens >= before + 2);
      expect(renamed, 'node c moved node b\'s lock aside').toEqual([]);
      expect((await realFs.lstat(lockFile())).ino).toBe(taken.ino);
      return owner();
    });
    await expect(byB).resolves.toBe('node-b');
    await expect(byC).resolves.toBe('node-c');
  });

  it('renews in place: the lock file keeps its inode, its expiry moves on, and the lease holds past the ttl', async () => {
    const clock = new SharedClock();
    const locks = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 1_000 });
    await locks.withLock('vol', async (lease) => {
      const first = await realFs.stat(lockFile());
      const expiry = await expiresAt();
      await sleep(700);
      expect((await realFs.stat(lockFile())).ino).toBe(first.ino);
      expect(await expiresAt()).toBeGreaterThan(expiry + 300);
      lease.assertHeld('the next step');
      expect(lease.signal.aborted).toBe(false);
    });
    expect(await realFs.readdir(dir)).toEqual([]);
  });

  it('a paused process finds its lease lost on waking, before its renewal timer ran, and leaves the lock to expire', async () => {
    const clock = new SharedClock();
    const locks = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 1_000 });
    await locks.withLock('vol', async (lease) => {
      // The event loop is blocked longer than the ttl, as under SIGSTOP: no timer runs meanwhile.
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 400);
      expect(() => lease.assertHeld('deleting gluster volume x')).toThrow(
        /^lost the cluster lock on volume vol \(could not renew for 0\.[4-9] s: no renewal landed in time\): stopped before deleting gluster volume x; nothing was deleted; try again$/);
      expect(lease.signal.aborted).toBe(true);
    });
    // Not unlinked by a holder that may no longer own it; it has expired, so the next holder breaks it.
    expect(await owner()).toBe('node-a');
    const next = new ClusterLocks(realFs, dir, 'node-b', clock, { ttlMs: 300, waitMs: 2_000 });
    expect(await next.withLock('vol', async () => owner())).toBe('node-b');
  });

  it('loses the lease as soon as another holder\'s lock file takes the place of its own, and leaves that file alone', async () => {
    const clock = new SharedClock();
    const locks = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 1_000 });
    await locks.withLock('vol', async (lease) => {
      // Another node broke it (its clock far ahead, say) and took the name.
      await realFs.writeFile(join(dir, 'other'), JSON.stringify({ owner: 'node-b', token: 'bb', expiresAt: clock.now() + 60_000 }));
      await realFs.rename(join(dir, 'other'), lockFile());
      await until(() => lease.signal.aborted, 1_000);
      expect(() => lease.assertHeld('removing brick h:/b')).toThrow(/another holder's lock file took the place of .*vol\.lock\): stopped before removing brick h:\/b/);
    });
    expect(await owner()).toBe('node-b');
    expect(await expiresAt()).toBeGreaterThan(clock.now() + 50_000);
  });

  it.runIf(process.getuid?.() === 0)('loses the lease when a device takes the place of its lock file, and never opens it', async () => {
    const clock = new SharedClock();
    const locks = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 1_000 });
    await locks.withLock('vol', async (lease) => {
      // Major 240 is for local use: no driver here, so an open of it fails with ENXIO.
      await execa('mknod', [join(dir, 'planted'), 'c', '240', '0']);
      await realFs.rename(join(dir, 'planted'), lockFile());
      await until(() => lease.signal.aborted, 1_000);
      expect(() => lease.assertHeld('removing brick h:/b')).toThrow(/a character device took the place of .*vol\.lock\): stopped before removing brick h:\/b/);
    });
    expect((await realFs.lstat(lockFile())).isCharacterDevice()).toBe(true);
  });

  it('retries a renewal that failed for a moment and keeps the lease; loses it, naming the failure, when they keep failing', async () => {
    const gate = faultyFs(realFs, dir);
    const clock = new SharedClock();
    // Renewals every 1 s; the lease lasts 2.4 s past the last one that landed.
    const locks = new ClusterLocks(gate.fs, dir, 'node-a', clock, { ttlMs: 3_000, waitMs: 1_000 });
    await locks.withLock('vol', async (lease) => {
      gate.set('fail');
      await until(() => gate.hits > 0, 3_000);
      gate.set('pass');
      await sleep(1_100);
      lease.assertHeld('the next step');
      expect(await expiresAt()).toBeGreaterThan(clock.now() + 1_500);
      gate.set('fail');
      await until(() => lease.signal.aborted, 5_000);
      expect(() => lease.assertHeld('the next step')).toThrow(/could not renew for [\d.]+ s: renewing failed: i\/o error \(EIO\)\): stopped before the next step/);
      gate.set('pass');
    });
  });

  it('reads a lock of an older version (no padding, no run, renewed by rename), waits while it lives, breaks it once expired', async () => {
    const clock = new SharedClock();
    await realFs.writeFile(lockFile(), JSON.stringify({ owner: 'old-node', token: '01d', expiresAt: clock.now() + 400 }));
    const impatient = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 150 });
    await expect(impatient.withLock('vol', async () => 'in')).rejects.toThrow(/locked by node old-node/);
    const t0 = Date.now();
    const patient = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 3_000 });
    expect(await patient.withLock('vol', async () => owner())).toBe('node-a');
    expect(Date.now() - t0).toBeGreaterThan(150);
  });

  it('a lock expiring further ahead than any holder sets blocks like an unreadable one, then is broken, not kept for good', async () => {
    const clock = new SharedClock();
    // What another machine could plant: no holder renews it, and by its expiry it would never lapse.
    await realFs.writeFile(lockFile(), JSON.stringify({ owner: 'ghost', token: 'ab', expiresAt: 9e15 }));
    const logged: string[] = [];
    const impatient = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 100 }, (m) => logged.push(m));
    // Fresh, it blocks: a torn or foreign file may be a writer's in progress.
    await expect(impatient.withLock('vol', async () => 'in')).rejects.toThrow(/locked by node unknown/);
    const patient = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 300, waitMs: 3_000 }, (m) => logged.push(m));
    expect(await patient.withLock('vol', async () => owner())).toBe('node-a');
    expect(logged).toEqual([expect.stringMatching(/breaking the unreadable lock file .*vol\.lock \(it expires \d+ s from now, further ahead than any holder sets\)/)]);
  });

  it('does not break a lock that reads as expired while its file was just rewritten (a renewal being written)', async () => {
    const clock = new SharedClock();
    await realFs.writeFile(lockFile(), JSON.stringify({ owner: 'node-b', token: 'bb', expiresAt: clock.now() - 5_000 }));
    const waiter = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 500, waitMs: 200 });
    await expect(waiter.withLock('vol', async () => 'in')).rejects.toThrow(/locked by node node-b/);
    expect(await owner()).toBe('node-b');
    const patient = new ClusterLocks(realFs, dir, 'node-a', clock, { ttlMs: 500, waitMs: 3_000 });
    expect(await patient.withLock('vol', async () => owner())).toBe('node-a');
  });

  it('a holder process stopped with SIGSTOP past its ttl finds its lease lost when continued, and the lock is another\'s', async () => {
    const child = execa('npx', ['tsx', join(import.meta.dirname, '../helpers/lock-holder-child.ts'), dir, '600'],
      { stdin: 'pipe', stdout: 'pipe', reject: false });
    const lines: string[] = [];
    child.stdout.setEncoding('utf8');
    child.stdout.on('data', (chunk: string) => lines.push(...chunk.split('\n').filter(Boolean)));
    await until(() => lines.includes('held'), 20_000);
    child.stdin.write('step\n');
    await until(() => lines.includes('still held'));
    const pid = Number((await execa('pgrep', ['-f', '-n', `lock-holder-child.ts ${dir}`])).stdout.trim());
    process.kill(pid, 'SIGSTOP');
    try {
      const taker = new ClusterLocks(realFs, dir, 'node-b', new SharedClock(), { ttlMs: 600, waitMs: 5_000 });
      let finish!: () => void;
      const taken = taker.withLock('vol', () => new Promise<void>((r) => { finish = r; }));
      await until(async () => (await owner().catch(() => '')) === 'node-b');
      child.stdin.write('step\n');
      process.kill(pid, 'SIGCONT');
      await until(() => lines.some((l) => l.startsWith('lost: ')));
      expect(lines.find((l) => l.startsWith('lost: '))).toMatch(/^lost: lost the cluster lock on volume vol \(could not renew for [\d.]+ s: .*\): stopped before the next step/);
      child.stdin.end('end\n');
      await child;
      // The continued holder neither renewed over nor released node-b's lock.
      expect(await owner()).toBe('node-b');
      finish();
      await taken;
    } finally {
      // A failed assertion must not leave a stopped process behind (gone already when all went well).
      try { process.kill(pid, 'SIGCONT'); } catch { /* exited */ }
      child.kill();
    }
  });

  describe('through the local fast path (one O_EXCL create per lock)', () => {
    const fast = () => {
      const local = new LocalFirstFs();
      expect(local.trustIfLocal(dir)).toBe(true);
      return asFsPort(local);
    };

    it('keeps two nodes contending for one name strictly one at a time, and leaves no file behind', async () => {
      const clock = new SharedClock();
      const nodes = ['node-a', 'node-b'].map((id) => new ClusterLocks(fast(), dir, id, clock, { ttlMs: 2_000, waitMs: 20_000 }));
      let inside = 0;
      let overlaps = 0;
      const holders: string[] = [];
      await Promise.all(nodes.flatMap((locks, n) => Array.from({ length: 15 }, () => locks.withLock('vol', async () => {
        inside += 1;
        if (inside > 1) overlaps += 1;
        holders.push(await owner());
        await sleep(1);
        inside -= 1;
      }))));
      expect(overlaps).toBe(0);
      // Each turn's file named the node that held it.
      expect(holders.filter((h) => h === 'node-a')).toHaveLength(15);
      expect(holders.filter((h) => h === 'node-b')).toHaveLength(15);
      expect(await realFs.readdir(dir)).toEqual([]);
    });

    it('reads a lock file caught half-written (empty) as held, and one left empty by a killed writer as free after 2 s, not a lifetime', async () => {
      const clock = new SharedClock();
      await realFs.writeFile(lockFile(), '');
      const waiter = new ClusterLocks(fast(), dir, 'node-a', clock, { ttlMs: 60_000, waitMs: 300 });
      await expect(waiter.withLock('vol', async () => 'in')).rejects.toThrow(/locked by node unknown/);
      const patient = new ClusterLocks(fast(), dir, 'node-a', clock, { ttlMs: 60_000, waitMs: 10_000 });
      // Taken over within its 10 s wait, so once the empty file was 2 s old, not after a lock's 60 s lifetime.
      expect(await patient.withLock('vol', async () => owner())).toBe('node-a');
    });
  });
});

