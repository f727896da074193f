/**
 * Snapshots as backup sources on a real kernel: a snapshot of a MOUNTED volume taken right after
 * unsynced writes holds them (the origin's filesystem is frozen around create_snap), openSnapshot
 * mounts it read-only, backups read it (the second one incremental, by the library and through the
 * backup service), and restores into new dm volumes and vfs volumes match it in content, modes,
 * owners, times, symlinks, hardlinks.
 */
import { createHash, randomBytes } from 'node:crypto';
import * as realFs from 'node:fs/promises';
import { chmod, chown, link, lstat, mkdir, readFile, readdir, readlink, symlink, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import type { SnapshotSource } from '../../../src/core/backend.js';
import { backupTree, Repository, restoreTree } from '../../../src/core/backup/index.js';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { createRequest } from '../../../src/core/create-request.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { parseProcMounts } from '../../../src/core/proc-mounts.js';
import { VfsBackend, parseVfsOptions } from '../../../src/backends/vfs/index.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
import { ExecaCommandRunner } from '../../../src/core/command-runner.js';
import { createStowage } from '../../../src/drivers/api/create-stowage.js';
import { destroyPool, makeBackend, makePoolFiles, sh, type PoolFixture } from './dm-harness.js';

/** Each test makes a pool, filesystems and backups under emulation: minutes on a busy machine. */
const SLOW = 600_000;
const request = (name: string) => createRequest(name, {}, { createdAt: new Date().toISOString(), createdBy: 'vm-node' });
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/**
 * Everything a restore must bring back, per path: type, mode, owner, mtime, content hash,
 * symlink target, and for hardlinks the first name of the inode (in walk order).
 */
async function describeTree(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  const firstName = new Map<bigint, string>();
  async function visit(rel: string): Promise<void> {
    const abs = rel === '.' ? root : join(root, rel);
    const st = await lstat(abs, { bigint: true });
    // Restores set times to the microsecond (libuv's resolution); this kernel's clock stamps whole milliseconds anyway.
    const meta = `mode=${(st.mode & 0o7777n).toString(8)} owner=${st.uid}:${st.gid} mtime=${st.mtimeNs / 1000n}us`;
    if (st.isDirectory()) {
      out[rel] = `dir ${meta}`;
      for (const name of (await readdir(abs)).sort()) await visit(rel === '.' ? name : `${rel}/${name}`);
    } else if (st.isSymbolicLink()) {
      out[rel] = `symlink -> ${await readlink(abs)} owner=${st.uid}:${st.gid}`;
    } else {
      const first = firstName.get(st.ino);
      if (st.nlink > 1n && first === undefined) firstName.set(st.ino, rel);
      out[rel] = `file ${meta} size=${st.size} sha=${sha(await readFile(abs))}${first !== undefined ? ` same-inode-as=${first}` : ''}`;
    }
  }
  await visit('.');
  return out;
}

/** A varied tree written through the filesystem and never synced: it sits in the page cache. */
async function writeUnsynced(dir: string): Promise<void> {
  await mkdir(join(dir, 'docs'));
  for (let i = 0; i < 60; i += 1) await writeFile(join(dir, 'docs', `f${i}.txt`), `file ${i}\n`.repeat(1 + (i % 40)));
  await writeFile(join(dir, 'big.bin'), randomBytes(1024 * 1024));
  await mkdir(join(dir, 'sub', 'deep'), { recursive: true });
  await writeFile(join(dir, 'sub', 'deep', 'x'), 'deep');
  await symlink('docs/f1.txt', join(dir, 'link'));
  await symlink('/nowhere', join(dir, 'dangling'));
  await link(join(dir, 'docs', 'f2.txt'), join(dir, 'docs', 'f2-hard'));
  await chmod(join(dir, 'big.bin'), 0o640);
  await chmod(join(dir, 'sub'), 0o750);
  await chown(join(dir, 'docs', 'f3.txt'), 1234, 5678);
  await utimes(join(dir, 'docs', 'f4.txt'), new Date('2001-02-03T04:05:06Z'), new Date('2001-02-03T04:05:06Z'));
}

const mountsUnder = async (dir: string) =>
  parseProcMounts(await realFs.readFile('/proc/self/mounts', 'utf8')).filter((m) => m.target.startsWith(dir + '/'));

let fx: PoolFixture | undefined;
afterEach(async () => {
  if (fx) await destroyPool(fx);
  fx = undefined;
});

describe('devicemapper snapshots as backup sources on a real kernel', () => {
  it('a snapshot of a mounted volume holds its unsynced writes; backups read it from openSnapshot, the second one incrementally', async () => {
    fx = await makePoolFiles({ dataMiB: 512, volumeSize: '48M' });
    let backend = makeBackend(fx);
    await backend.init();
    await backend.create(request('data'));
    const live = await backend.attach('data');
    await writeUnsynced(live);
    const expected1 = await describeTree(live);
    const s1 = await backend.snapshots.createSnapshot('data', 's1');

    // Frozen around create_snap: the journal is committed, so the snapshot needs no recovery.
    const features = await sh('dumpe2fs', ['-h', await backend.snapshots.activateSnapshot('data', 's1')]);
    expect(features).toMatch(/Filesystem features:/);
    expect(features).not.toMatch(/needs_recovery/);
    await backend.snapshots.deactivateSnapshot('data', 's1');

    const view = await backend.snapshots.openSnapshot('data', 's1');
    const again = await backend.snapshots.openSnapshot('data', 's1');
    if (view.kind !== 'tree' || again.kind !== 'tree') throw new Error(`devicemapper gives trees, not ${view.kind}`);
    expect(again.path).toBe(view.path);
    expect(view.path).toBe(join(fx.root, 'devicemapper', 'snapshots', 'data', 's1'));
    expect((await mountsUnder(fx.root)).find((m) => m.target === view.path)?.options).toContain('ro');
    await expect(writeFile(join(view.path, 'new'), 'x')).rejects.toMatchObject({ code: 'EROFS' });
    expect(await describeTree(view.path)).toEqual(expected1);
    await expect(backend.snapshots.deleteSnapshot('data', 's1')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });

    const repo = await Repository.init(new VfsBlobStore(join(fx.dir, 'repo')));
    const first = await backupTree(view.path, repo, { volume: 'data' });
    await view.release();
    expect(await describeTree(again.path)).toEqual(expected1);
    await again.release();
    expect(await mountsUnder(join(fx.root, 'devicemapper', 'snapshots'))).toEqual([]);
    expect(first.stats.filesRead).toBe(first.stats.files);

    await writeFile(join(live, 'docs', 'f7.txt'), 'changed after the first backup');
    const expected2 = await describeTree(live);
    expect(Object.keys(expected2).filter((p) => expected2[p] !== expected1[p])).toEqual(['docs/f7.txt']);
    await backend.snapshots.createSnapshot('data', 's2');
    const view2 = await backend.snapshots.openSnapshot('data', 's2');
    if (view2.kind !== 'tree') throw new Error('unreachable');
    const second = await backupTree(view2.path, repo, { volume: 'data' });
    await view2.release();
    // Incremental: the files cache (same inode, size, mtime, ctime in the next snapshot) reads only the changed file.
    expect(second.parent).toBe(first.id);
    expect(second.stats).toMatchObject({ files: first.stats.files, filesRead: 1 });

    const vfs = new VfsBackend({ nodeId: 'vm-node', root: join(fx.dir, 'vfs-root'), fs: realFs, runner: new ExecaCommandRunner(), log: memoryLogger() },
      parseVfsOptions({ 'vfs.path': join(fx.dir, 'vfs-store') }, join(fx.dir, 'vfs-root')));
    await vfs.init();
    // Into new dm volumes: the next test, through the backup service.
    for (const [record, expected, suffix] of [[first, expected1, '1'], [second, expected2, '2']] as const) {
      await vfs.create(request(`vfs-restored-${suffix}`));
      const vfsTarget = await vfs.attach(`vfs-restored-${suffix}`);
      await restoreTree(repo, 'data', record.id, vfsTarget);
      expect(await describeTree(vfsTarget)).toEqual(expected);
    }
    await vfs.dispose();

    // A daemon that dies while a backup reads a snapshot: the next start unmounts and deactivates it.
    const leftover: SnapshotSource = await backend.snapshots.openSnapshot('data', 's2');
    expect(leftover.kind).toBe('tree');
    const thinDevice = (await backend.snapshots.listSnapshots('data')).find((s) => s.name === 's2')!.details!.device!;
    await backend.dispose();
    backend = makeBackend(fx);
    await backend.init();
    expect(await mountsUnder(join(fx.root, 'devicemapper', 'snapshots'))).toEqual([]);
    expect(await sh('dmsetup', ['ls'])).not.toContain(thinDevice.replace('/dev/mapper/', ''));
    await backend.snapshots.deleteSnapshot('data', 's2');
    expect(await describeTree(await backend.attach('data'))).toEqual(expected2);
  }, SLOW);

  it('through the backup service: two backups of a mounted dm volume into vfs://, each restored into a new dm volume and a vfs volume', async () => {
    fx = await makePoolFiles({ dataMiB: 512, volumeSize: '48M' });
    const dm = await createStowage({ backend: 'devicemapper', options: fx.options, root: fx.root, nodeId: 'vm-node' });
    const vfs = await createStowage({ backend: 'vfs', options: { 'vfs.path': join(fx.dir, 'vfs-store') }, root: join(fx.dir, 'vfs-root'), nodeId: 'vm-node' });
    try {
      await dm.create('svc');
      const live = await dm.mount('svc', 'writer');
      await writeUnsynced(live);
      const expected1 = await describeTree(live);
      const dest = `vfs://${join(fx.dir, 'backups')}`;
      const first = await dm.createBackup('svc', { dest });
      await writeFile(join(live, 'docs', 'f7.txt'), 'changed between the backups');
      const expected2 = await describeTree(live);
      const second = await dm.createBackup('svc', { dest });
      expect(second.parent).toBe(first.id);
      expect(second.stats).toMatchObject({ files: first.stats!.files, filesRead: 1 });
      expect(second).toMatchObject({ backend: 'devicemapper', state: 'complete' });
      // Each backup took its own snapshot and deleted it after; nothing stays mounted.
      expect(await dm.manager.listSnapshots('svc')).toEqual([]);
      expect(await mountsUnder(join(fx.root, 'devicemapper', 'snapshots'))).toEqual([]);
      for (const [backup, expected, suffix] of [[first, expected1, '1'], [second, expected2, '2']] as const) {
        await dm.restoreVolume(`dm-restored-${suffix}`, backup.url);
        expect(await describeTree(await dm.mount(`dm-restored-${suffix}`, 'check'))).toEqual(expected);
        await dm.unmount(`dm-restored-${suffix}`, 'check');
        await vfs.restoreVolume(`vfs-restored-${suffix}`, backup.url);
        expect(await describeTree(await vfs.mount(`vfs-restored-${suffix}`, 'check'))).toEqual(expected);
        await vfs.unmount(`vfs-restored-${suffix}`, 'check');
      }
    } finally {
      await dm.close();
      await vfs.close();
    }
  }, SLOW);

  it('an xfs volume: a snapshot of it mounted (same UUID) opens read-only without log recovery and holds its unsynced writes', async () => {
    fx = await makePoolFiles({ dataMiB: 768, volumeSize: '300M' });
    const backend = makeBackend(fx, { 'dm.fs': 'xfs' });
    await backend.init();
    await backend.create(request('xdata'));
    const live = await backend.attach('xdata');
    await writeUnsynced(live);
    const expected = await describeTree(live);
    await backend.snapshots.createSnapshot('xdata', 'snap');
    const view = await backend.snapshots.openSnapshot('xdata', 'snap');
    if (view.kind !== 'tree') throw new Error('unreachable');
    try {
      expect((await mountsUnder(fx.root)).find((m) => m.target === view.path)).toMatchObject({ fstype: 'xfs', options: expect.arrayContaining(['ro', 'norecovery']) });
      expect(await describeTree(view.path)).toEqual(expected);
    } finally {
      await view.release();
    }
    await backend.snapshots.deleteSnapshot('xdata', 'snap');
    await expect(lstat(view.path)).rejects.toMatchObject({ code: 'ENOENT' });
  }, SLOW);
});
