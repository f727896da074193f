/**
 * A vfs repository whose filesystem is unmounted while a backup writes to it: the mount point is
 * left, an empty directory on the disk below. The backup must fail there and then, and write
 * nothing onto that disk (no directories, no packs, no space reserve), where it would fill the
 * root filesystem with data no repository names. Real tmpfs mount, real unmount.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFileSync } from 'node:child_process';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, Repository } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';

const isRoot = process.getuid?.() === 0;
const noTmpfs = systemSuite('tmpfs mounts', isRoot && findExecutable('mount') ? { ok: true } : { ok: false, why: 'needs root to mount a tmpfs' });

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };
const pseudoRandom = (size: number, seed: string) =>
  createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));

describe.skipIf(noTmpfs)('a vfs repository unmounted during a backup', () => {
  let base = '';
  let mounted = false;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-unmounted-'));
    await mkdir(join(base, 'repo'));
    await mkdir(join(base, 'vol'));
    // Packs fill up after 1 MiB here, so the backup writes many while it runs.
    for (let i = 0; i < 24; i += 1) await writeFile(join(base, 'vol', `f${i}.bin`), pseudoRandom(512 * 1024, `f${i}`));
  });
  afterAll(async () => {
    if (mounted) await execa('umount', ['-l', join(base, 'repo')]).catch(() => undefined);
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('fails at its next write, and leaves the mount point as empty as the unmount left it', async () => {
    const root = join(base, 'repo');
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=64M', 'tmpfs', root]);
    mounted = true;
    const repo = await Repository.init(new VfsBlobStore(root, { durable: false }), { chunker: CHUNKER, packSize: 1024 * 1024 });
    let unmountedAt = -1;
    const failure = await backupTree(join(base, 'vol'), repo, {
      volume: 'v',
      onProgress: (p) => {
        if (unmountedAt < 0 && p.files >= 4) {
          unmountedAt = p.files;
          // Lazy: as an NFS server going away or `umount -l` by an operator would, open files or not.
          execFileSync('umount', ['-l', root]);
          mounted = false;
        }
      },
    }).then(() => new Error('the backup completed'), (err: unknown) => err as Error);
    expect(unmountedAt).toBeGreaterThan(0);
    expect(failure).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringContaining(`the backup repository at ${root} is another directory since this operation opened it: was it moved, or its filesystem unmounted?`),
    });
    // The disk below the mount point got nothing: no packs, no temp files, no reserve.
    expect(await readdir(root)).toEqual([]);
  });
});
