/**
 * Block-level backups of devicemapper volumes on a real kernel: a volume written through its
 * mounted ext4, backed up block by block (the first read only its mapped blocks, the next only
 * what thin_delta says changed), restored into new dm volumes whose every file matches by
 * sha256; a file-level backup of the same volume restored onto vfs while the block backup is
 * refused there; the base backup deleted (and GC run) with the incremental still restorable;
 * a base snapshot gone, and the next backup a full read that says so.
 */
import { createHash, randomBytes } from 'node:crypto';
import { lstat, mkdir, open, readdir, readFile, readlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../../src/core/errors.js';
import { createStowage } from '../../../src/drivers/api/create-stowage.js';
import { destroyPool, makePoolFiles, MiB, type PoolFixture } from './dm-harness.js';

const SLOW = 900_000;
const sha = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** Every path with its type and, for a file, its mode, owner, size and sha256. */
async function checksums(root: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  async function visit(rel: string): Promise<void> {
    const abs = rel === '.' ? root : join(root, rel);
    const st = await lstat(abs);
    if (st.isDirectory()) {
      out[rel] = `dir ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid}`;
      for (const name of (await readdir(abs)).sort()) await visit(rel === '.' ? name : `${rel}/${name}`);
    } else if (st.isSymbolicLink()) {
      out[rel] = `symlink ${await readlink(abs)}`;
    } else {
      out[rel] = `file ${(st.mode & 0o7777).toString(8)} ${st.uid}:${st.gid} ${st.size} ${sha(await readFile(abs))}`;
    }
  }
  await visit('.');
  return out;
}

/** Overwrites `length` bytes at `offset` of a file in place (the file's other blocks stay where they are). */
async function overwrite(path: string, offset: number, length: number): Promise<void> {
  const handle = await open(path, 'r+');
  try {
    await handle.write(randomBytes(length), 0, length, offset);
  } finally {
    await handle.close();
  }
}

let fx: PoolFixture | undefined;
afterEach(async () => {
  if (fx) await destroyPool(fx);
  fx = undefined;
});

describe('block-level backups of devicemapper volumes', () => {
  it('full, then incremental from thin_delta; each restores into a new dm volume; the file-level backup restores onto vfs; the base backup deleted', async () => {
    fx = await makePoolFiles({ dataMiB: 768, volumeSize: '64M' });
    const dm = await createStowage({ backend: 'devicemapper', options: fx.options, root: fx.root, nodeId: 'vm-node' });
    const vfs = await createStowage({ backend: 'vfs', options: { 'vfs.path': join(fx.dir, 'vfs-store') }, root: join(fx.dir, 'vfs-root'), nodeId: 'vm-node' });
    try {
      await dm.create('blk');
      const live = await dm.mount('blk', 'writer');
      await mkdir(join(live, 'data'));
      for (let i = 0; i < 16; i += 1) await writeFile(join(live, 'data', `r${i}.bin`), randomBytes(2 * MiB));
      for (let i = 0; i < 50; i += 1) await writeFile(join(live, `t${i}.txt`), `text file ${i}\n`.repeat(100 + i));
      const tree1 = await checksums(live);
      const dest = `vfs://${join(fx.dir, 'backups')}`;

      const full = await dm.createBackup('blk', { dest, kind: 'block' });
      expect(full).toMatchObject({ kind: 'block', state: 'complete', backend: 'devicemapper', device: { sizeBytes: 64 * MiB, blockSize: 2 * MiB, filesystem: 'ext4' } });
      expect(full.notes?.join(' ')).toMatch(/full read of the mapped blocks: the first block backup/);
      // Only mapped blocks were read: the 32 MiB of random files and the filesystem's metadata, not all 64 MiB.
      expect(full.stats!.bytesRead).toBeGreaterThanOrEqual(32 * MiB);
      expect(full.stats!.bytesRead).toBeLessThan(64 * MiB);
      const fileLevel = await dm.createBackup('blk', { dest });
      expect(fileLevel.kind).toBe('file');
      // The block backup's snapshot stays as the next one's base; the file-level backup's went.
      const kept = (await dm.manager.listSnapshots('blk')).map((s) => s.name);
      expect(kept).toEqual([full.snapshot]);

      await overwrite(join(live, 'data', 'r3.bin'), 4096, 64 * 1024);
      await writeFile(join(live, 'new.txt'), 'added after the first backup');
      const tree2 = await checksums(live);
      const incremental = await dm.createBackup('blk', { dest, kind: 'block' });
      expect(incremental.parent).toBe(full.id);
      expect(incremental.notes?.join(' ')).toMatch(/incremental: blocks changed since snapshot/);
      // A 64 KiB change and a small file: a few 2 MiB blocks (the data, an inode table, the
      // journal, a directory, a bitmap) read and stored, not the 32 MiB again.
      expect(incremental.stats!.bytesRead).toBeGreaterThan(0);
      expect(incremental.stats!.bytesRead).toBeLessThanOrEqual(14 * MiB);
      expect(incremental.stats!.newStoredBytes).toBeLessThan(full.stats!.newStoredBytes / 2);
      expect(incremental.stats!.bytes).toBeGreaterThanOrEqual(32 * MiB);
      expect((await dm.manager.listSnapshots('blk')).map((s) => s.name)).toEqual([incremental.snapshot]);

      for (const [backup, expected, name] of [[full, tree1, 'r-full'], [incremental, tree2, 'r-incr']] as const) {
        await dm.restoreVolume(name, backup.url);
        expect(await checksums(await dm.mount(name, 'check'))).toEqual(expected);
        await dm.unmount(name, 'check');
      }
      expect(await dm.verifyBackup(incremental.url)).toMatchObject({ files: 1 });

      // The file-level backup of the same volume restores onto vfs; the block backup is refused there, creating nothing.
      await vfs.restoreVolume('v-file', fileLevel.url);
      expect(await checksums(await vfs.mount('v-file', 'check'))).toEqual(tree1);
      await vfs.unmount('v-file', 'check');
      await expect(vfs.restoreVolume('v-block', full.url)).rejects.toMatchObject({
        code: ErrorCodes.NOT_SUPPORTED, message: expect.stringMatching(/block-level backup.*restores only into a devicemapper volume.*kind: 'file'/s),
      });
      expect((await vfs.list()).map((v) => v.name)).toEqual(['v-file']);

      // Deleting the full backup (GC runs) leaves the incremental whole: it lists every block.
      await dm.deleteBackup(full.url);
      await dm.restoreVolume('r-after-delete', incremental.url);
      expect(await checksums(await dm.mount('r-after-delete', 'check'))).toEqual(tree2);
      await dm.unmount('r-after-delete', 'check');
      expect(await dm.verifyBackup(incremental.url)).toMatchObject({ files: 1 });

      // The base snapshot deleted by hand: the next block backup reads every mapped block and says why.
      await dm.manager.deleteSnapshot('blk', incremental.snapshot!);
      await overwrite(join(live, 'data', 'r5.bin'), 0, 4096);
      const tree3 = await checksums(live);
      const again = await dm.createBackup('blk', { dest, kind: 'block' });
      expect(again.parent).toBeUndefined();
      expect(again.notes?.join(' ')).toMatch(/full read of the mapped blocks: the snapshot of every earlier block backup .* is gone/);
      expect(again.stats!.bytesRead).toBeGreaterThanOrEqual(32 * MiB);
      // Its blocks were in the repository already (the incremental's): almost nothing new is stored.
      expect(again.stats!.newStoredBytes).toBeLessThan(8 * MiB);
      await dm.restoreVolume('r-again', again.url);
      expect(await checksums(await dm.mount('r-again', 'check'))).toEqual(tree3);
      await dm.unmount('r-again', 'check');
      await dm.unmount('blk', 'writer');
    } finally {
      await dm.close();
      await vfs.close();
    }
  }, SLOW);

  it('an xfs volume: a block backup restores into a new volume mountable next to the original (a new UUID)', async () => {
    fx = await makePoolFiles({ dataMiB: 1024, volumeSize: '300M' });
    const dm = await createStowage({ backend: 'devicemapper', options: { ...fx.options, 'dm.fs': 'xfs' }, root: fx.root, nodeId: 'vm-node' });
    try {
      await dm.create('xblk');
      const live = await dm.mount('xblk', 'writer');
      for (let i = 0; i < 4; i += 1) await writeFile(join(live, `r${i}.bin`), randomBytes(MiB));
      const tree = await checksums(live);
      const backup = await dm.createBackup('xblk', { dest: `vfs://${join(fx.dir, 'backups')}`, kind: 'block' });
      expect(backup.device).toMatchObject({ filesystem: 'xfs', sizeBytes: 300 * MiB });
      await dm.restoreVolume('xcopy', backup.url);
      // The original stays mounted: the copy mounts only with a UUID of its own.
      expect(await checksums(await dm.mount('xcopy', 'check'))).toEqual(tree);
      await dm.unmount('xcopy', 'check');
      await dm.unmount('xblk', 'writer');
    } finally {
      await dm.close();
    }
  }, SLOW);

  it('refuses a block backup of a vfs volume, naming the file-level kind', async () => {
    fx = await makePoolFiles({ dataMiB: 64 });
    const vfs = await createStowage({ backend: 'vfs', options: { 'vfs.path': join(fx.dir, 'vfs-store') }, root: join(fx.dir, 'vfs-root'), nodeId: 'vm-node' });
    try {
      await vfs.create('plain');
      await expect(vfs.createBackup('plain', { dest: `vfs://${join(fx.dir, 'backups')}`, kind: 'block' })).rejects.toMatchObject({
        code: ErrorCodes.NOT_SUPPORTED, message: expect.stringMatching(/createBackup\('plain', \{ dest, kind: 'file' \}\)/),
      });
    } finally {
      await vfs.close();
    }
  }, SLOW);
});
