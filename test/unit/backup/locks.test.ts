import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { acquireLock, liveLocks } from '../../../src/core/backup/locks.js';
import { ErrorCodes } from '../../../src/core/errors.js';

describe('repository locks', () => {
  let dir = '';
  let store: VfsBlobStore;
  let clock = 0;
  const now = () => clock;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-locks-'));
    store = new VfsBlobStore(dir, { durable: false });
    clock = Date.UTC(2026, 0, 1);
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  const opts = (kind: 'shared' | 'exclusive', owner: string) => ({ kind, owner, purpose: `${kind} work`, ttlMs: 60_000, now, autoRefresh: false });

  it('two writers share; an exclusive lock is refused while they hold it, naming a holder', async () => {
    const a = await acquireLock(store, opts('shared', 'node-a'));
    const b = await acquireLock(store, opts('shared', 'node-b'));
    await expect(acquireLock(store, opts('exclusive', 'gc-node'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringMatching(/shared by node-[ab]/) });
    // The refused attempt left nothing behind.
    expect((await liveLocks(store, clock)).map((l) => l.owner).sort()).toEqual(['node-a', 'node-b']);
    await a.release();
    await expect(acquireLock(store, opts('exclusive', 'gc-node'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    await b.release();
    const gc = await acquireLock(store, opts('exclusive', 'gc-node'));
    await expect(acquireLock(store, opts('shared', 'node-c'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringContaining('exclusively by gc-node') });
    await expect(acquireLock(store, opts('exclusive', 'gc-2'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    await gc.release();
    expect((await store.list('locks/')).objects).toEqual([]);
  });

  it('a lock object from the far future, an oversized one or one with times no Date holds is refused, naming it, instead of blocking for good', async () => {
    const planted = (body: object) => ({ format: 1, lockId: 'abcdef0123456789', seq: 0, kind: 'exclusive', owner: 'elsewhere', purpose: 'gc', createdAt: clock, expiresAt: clock + 60_000, ...body });
    // A clock hours ahead is still honoured: the lock blocks until its owner releases or it lapses.
    await store.put('locks/abcdef0123456789-0000000000', Buffer.from(JSON.stringify(planted({ createdAt: clock + 3 * 3600_000, expiresAt: clock + 3 * 3600_000 + 60_000 }))));
    await expect(acquireLock(store, opts('shared', 'node-a'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringContaining('exclusively by elsewhere') });
    await store.delete(['locks/abcdef0123456789-0000000000']);
    // The year 9999: refused, saying which object to delete.
    await store.put('locks/abcdef0123456789-0000000001', Buffer.from(JSON.stringify(planted({ createdAt: Date.UTC(9999, 0, 1), expiresAt: Date.UTC(9999, 0, 1) + 60_000 }))));
    await expect(acquireLock(store, opts('shared', 'node-a'))).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_LOCKED, message: expect.stringMatching(/^lock object locks\/abcdef0123456789-0000000001 \(elsewhere, gc\) expires at 9999-01-01T00:01:00.000Z, more than a day past this node's clock: .*delete it by hand/),
    });
    await store.delete(['locks/abcdef0123456789-0000000001']);
    await store.put('locks/abcdef0123456789-0000000002', Buffer.from(JSON.stringify(planted({ expiresAt: 1e300 }))));
    await expect(acquireLock(store, opts('shared', 'node-a'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('lock object locks/abcdef0123456789-0000000002') });
    await store.delete(['locks/abcdef0123456789-0000000002']);
    await store.put('locks/abcdef0123456789-0000000003', Buffer.alloc(1024 * 1024, 0x20));
    await expect(acquireLock(store, opts('shared', 'node-a'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(/^lock object locks\/abcdef0123456789-0000000003 is 1048576 bytes/) });
    await store.delete(['locks/abcdef0123456789-0000000003']);
    // Each refusal left no lock of its own behind.
    expect((await store.list('locks/')).objects).toEqual([]);
    await (await acquireLock(store, opts('exclusive', 'node-a'))).release();
  });

  it('of exclusive lockers racing, at most one proceeds', async () => {
    for (let round = 0; round < 5; round += 1) {
      const results = await Promise.allSettled([1, 2, 3].map((i) => acquireLock(store, opts('exclusive', `racer-${i}`))));
      const won = results.filter((r) => r.status === 'fulfilled');
      expect(won.length).toBeLessThanOrEqual(1);
      for (const r of won) await r.value.release();
      expect((await store.list('locks/')).objects).toEqual([]);
    }
  });

  it('a stale lock is broken after its expiry, not before; a refreshed lock stays live', async () => {
    const dead = await acquireLock(store, opts('shared', 'crashed-node'));
    const live = await acquireLock(store, opts('shared', 'busy-node'));
    clock += 50_000;
    await live.refresh();
    await expect(acquireLock(store, opts('exclusive', 'gc'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    clock += 20_000; // crashed-node's lock expired; busy-node's refreshed one has 40 s left
    await expect(acquireLock(store, opts('exclusive', 'gc'))).rejects.toMatchObject({ message: expect.stringContaining('busy-node') });
    expect((await liveLocks(store, clock)).map((l) => l.owner)).toEqual(['busy-node']);
    expect((await store.list('locks/')).objects.length).toBe(1);
    clock += 60_000;
    const gc = await acquireLock(store, opts('exclusive', 'gc'));
    expect(() => gc.assertHeld()).not.toThrow();
    // The crashed holder and the one that stopped refreshing learn they lost the lock.
    expect(() => dead.assertHeld()).toThrow(expect.objectContaining({ code: ErrorCodes.BACKUP_LOCKED }));
    expect(() => live.assertHeld()).toThrow(/expired/);
    clock += 59_000;
    expect(() => gc.assertHeld()).toThrow(/expired/);
  });

  it('a shared lock told to wait for a garbage collection takes the lock once it ends; an exclusive one never waits', async () => {
    const gc = await acquireLock(store, opts('exclusive', 'gc-node'));
    const waiting = acquireLock(store, { ...opts('shared', 'backup-node'), waitForExclusiveMs: 10_000 });
    let settled = false;
    void waiting.then(() => { settled = true; }, () => { settled = true; });
    await new Promise((resolve) => setTimeout(resolve, 400));
    expect(settled).toBe(false);
    // Told to wait, an exclusive lock does not: only shared ones wait, and only for exclusive ones.
    await expect(acquireLock(store, { ...opts('exclusive', 'gc-2'), waitForExclusiveMs: 10_000 })).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    await gc.release();
    const backup = await waiting;
    expect((await liveLocks(store, clock)).map((l) => l.owner)).toEqual(['backup-node']);
    await backup.release();
    const again = await acquireLock(store, opts('exclusive', 'gc-node'));
    const started = Date.now();
    await expect(acquireLock(store, { ...opts('shared', 'late'), waitForExclusiveMs: 300 })).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_LOCKED, message: expect.stringContaining('exclusively by gc-node'),
    });
    expect(Date.now() - started).toBeGreaterThanOrEqual(300);
    await expect(acquireLock(store, { ...opts('shared', 'later'), waitForExclusiveMs: 1_200 })).rejects.toMatchObject({
      message: expect.stringMatching(/exclusively by gc-node .*cannot be taken now \(waited 1 s for it\)$/),
    });
    // A job cancelled while it waits: its progress report throws, and the wait ends with that.
    let waits = 0;
    const cancelled = new Error('the job was cancelled');
    await expect(acquireLock(store, { ...opts('shared', 'cancelled'), waitForExclusiveMs: 60_000, onWait: () => { waits += 1; throw cancelled; } }))
      .rejects.toBe(cancelled);
    expect(waits).toBe(1);
    expect((await liveLocks(store, clock)).map((l) => l.owner)).toEqual(['gc-node']);
    await again.release();
    expect((await store.list('locks/')).objects).toEqual([]);
  });
});
