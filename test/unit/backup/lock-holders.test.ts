/**
 * Locks whose holder has ended on this machine (src/core/backup/lock-holder.ts): a daemon killed
 * during a backup and started again must not find the repository locked for the lock's lifetime.
 * Only a holder this process can see for certain (same boot, pid namespace and user) is judged.
 */
import { readFileSync, readlinkSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { acquireLock, liveLocks } from '../../../src/core/backup/locks.js';
import { ErrorCodes } from '../../../src/core/errors.js';

const child = join(import.meta.dirname, '..', '..', 'helpers', 'repo-lock-child.ts');
const startOf = (pid: number) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[19]!;

describe('repository locks of processes that ended', () => {
  let dir = '';
  let store: VfsBlobStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-lock-holders-'));
    store = new VfsBlobStore(dir, { durable: false });
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  const exclusive = () => acquireLock(store, { kind: 'exclusive', owner: 'gc here', purpose: 'garbage collection', autoRefresh: false });

  it('a lock of a process killed on this machine is broken at once; a live one is not', async () => {
    const holder = execa('npx', ['tsx', child, dir], { stdout: 'pipe', reject: false });
    await new Promise<void>((resolve, reject) => {
      holder.stdout!.on('data', (chunk: Buffer) => { if (chunk.toString().includes('held')) resolve(); });
      void holder.then((r) => reject(new Error(`the lock holder ended: ${r.stderr}`)));
    });
    const [held] = await liveLocks(store, Date.now());
    expect(held).toMatchObject({ owner: 'child', holder: { pid: expect.any(Number) } });
    await expect(exclusive()).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringContaining('shared by child') });
    process.kill(held!.holder!.pid, 'SIGKILL');
    holder.kill('SIGKILL');
    await holder;
    // Its lock would block for five minutes by its expiry; the holder is gone, so it is stale now.
    expect(held!.expiresAt).toBeGreaterThan(Date.now() + 60_000);
    const gc = await exclusive();
    expect((await store.list('locks/')).objects).toHaveLength(1);
    await gc.release();
  });

  it('judges only holders it can see: another boot, pid namespace or user blocks until expiry; a reused pid does not', async () => {
    const self = {
      boot: readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim(),
      pidns: readlinkSync('/proc/self/ns/pid'),
      uid: process.getuid!(),
      pid: process.ppid,
      started: startOf(process.ppid),
    };
    const plant = async (holder: object) => {
      const body = { format: 1, lockId: 'abcdef0123456789', seq: 0, kind: 'shared', owner: 'planted', purpose: 'backup of x',
        createdAt: Date.now(), expiresAt: Date.now() + 300_000, holder };
      await store.delete(['locks/abcdef0123456789-0000000000']);
      await store.put('locks/abcdef0123456789-0000000000', Buffer.from(JSON.stringify(body)));
    };
    for (const other of [{ boot: 'another-boot' }, { pidns: 'pid:[1]' }, { uid: self.uid + 1 }, {}]) {
      // A dead pid under another boot, namespace or user; and a live one (the parent) as itself.
      await plant({ ...self, ...other, pid: Object.keys(other).length > 0 ? 4_000_000 : self.pid });
      await expect(exclusive(), JSON.stringify(other)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringContaining('by planted') });
    }
    // The parent's pid, with a start time that is not its own: a process that ended, its pid reused.
    await plant({ ...self, started: String(Number(self.started) + 1) });
    const gc = await exclusive();
    await gc.release();
    expect((await store.list('locks/')).objects).toEqual([]);
  });
});
