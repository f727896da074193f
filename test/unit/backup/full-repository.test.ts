/**
 * A vfs repository whose disk is full to the last block (src/backup-targets/vfs/space-reserve.ts):
 * deleting backups, the only way to free space, must still work, and so must verifying and
 * restoring what is there; backups fail as they did.
 */
import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, statfs, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RESERVE_BYTES } from '../../../src/backup-targets/vfs/space-reserve.js';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, deleteBackup, gc, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';

const isRoot = process.getuid?.() === 0;
const noTmpfs = systemSuite('tmpfs mounts', isRoot && findExecutable('mount') ? { ok: true } : { ok: false, why: 'needs root to mount a small tmpfs' });

/** Writes `dir/filler-N` files of random bytes until the filesystem refuses another byte. */
async function fillUp(dir: string): Promise<void> {
  for (let n = 0; ; n += 1) {
    const { bavail, bsize } = await statfs(dir);
    const size = Math.max(1, Math.min(bavail * bsize, 4 * 1024 * 1024));
    try {
      await writeFile(join(dir, `filler-${n}`), randomBytes(size));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
      // What was written of the last one stays: it too is space someone else took.
      if (size === 1) return;
    }
  }
}

describe.skipIf(noTmpfs)('a vfs repository on a full disk', () => {
  let base: string;
  let at: string;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-full-repo-'));
    at = join(base, 'repo');
    await mkdir(at);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=12M', 'tmpfs', at]);
  });
  afterAll(async () => {
    // Lazily: the store keeps packs it read open for a while.
    await execa('umount', ['-l', at]).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  });

  it('deletes backups to free space, and verifies and restores, when not a block is left; backups fail as before', async () => {
    const repo = await Repository.init(new VfsBlobStore(at, { durable: false }));
    expect((await lstat(join(at, '.reserve', 'space'))).size).toBe(RESERVE_BYTES);
    const trees: Record<string, Buffer> = {};
    const ids: Record<string, string> = {};
    for (const name of ['old', 'keep']) {
      const src = join(base, name);
      await mkdir(src);
      trees[name] = randomBytes(3 * 1024 * 1024);
      await writeFile(join(src, 'data.bin'), trees[name]!);
      ids[name] = (await backupTree(src, repo, { volume: name })).id;
    }
    // Someone else takes the rest of the disk.
    await fillUp(join(at));
    expect((await statfs(at)).bavail).toBe(0);
    await expect(backupTree(join(base, 'old'), repo, { volume: 'again' })).rejects.toMatchObject({ code: ErrorCodes.STORAGE_FULL });
    // Not even a backup of what the repository holds already: its lock must not take the reserve.
    await expect(backupTree(join(base, 'keep'), repo, { volume: 'keep' })).rejects.toMatchObject({ code: ErrorCodes.STORAGE_FULL });

    // Reading needs a lock object too: the reserve makes room for it.
    await verifyBackup(await Repository.open(repo.store), 'keep', ids.keep!);
    const out = join(base, 'out');
    await mkdir(out);
    await restoreTree(await Repository.open(repo.store), 'keep', ids.keep!, out);
    expect((await readFile(join(out, 'data.bin'))).equals(trees.keep!)).toBe(true);

    await deleteBackup(repo, 'old', ids.old!);
    const freed = await gc(repo);
    expect(freed.deletedBytes).toBeGreaterThan(3 * 1024 * 1024);
    expect((await statfs(at)).bavail * (await statfs(at)).bsize).toBeGreaterThan(2 * 1024 * 1024);
    // The next write makes the reserve again, before its own object.
    const src = join(base, 'new');
    await mkdir(src);
    await writeFile(join(src, 'small.txt'), 'after the delete');
    await backupTree(src, repo, { volume: 'new' });
    expect((await lstat(join(at, '.reserve', 'space'))).size).toBe(RESERVE_BYTES);
    expect((await repo.listBackups()).map((b) => b.volume).sort()).toEqual(['keep', 'new']);
    expect(await readdir(join(at, 'locks'))).toEqual([]);
  });
});
