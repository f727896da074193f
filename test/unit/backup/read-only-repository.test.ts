/**
 * A vfs repository on a read-only mount (a backup disk mounted read-only for a disaster
 * recovery, an NFS export without write access): what only reads it (restore, verify, check)
 * works without a lock object of its own and says so; it still waits for a live exclusive lock
 * (a garbage collection) to end; a backup fails, and the repository is left as it was.
 */
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { acquireLock, backupTree, checkRepository, Repository, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';

const isRoot = process.getuid?.() === 0;
const noMounts = systemSuite('read-only bind mounts', isRoot && findExecutable('mount') ? { ok: true } : { ok: false, why: 'needs root to bind-mount a directory read-only' });

async function listing(dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = [];
  for (const entry of await readdir(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    out.push(`${prefix}${entry.name}`);
    if (entry.isDirectory()) out.push(...await listing(path, `${prefix}${entry.name}/`));
  }
  return out.sort();
}

describe.skipIf(noMounts)('a backup repository on a read-only mount', () => {
  let base: string;
  let writable: string;
  let readOnly: string;
  let backupId: string;
  let before: string[];

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-ro-repo-'));
    writable = join(base, 'repo');
    readOnly = join(base, 'ro');
    const source = join(base, 'source');
    await mkdir(source);
    await writeFile(join(source, 'a.txt'), 'the data\n');
    await writeFile(join(source, 'big.bin'), createHash('sha256').update('x').digest().toString('hex').repeat(20_000));
    const repo = await Repository.init(new VfsBlobStore(writable));
    backupId = (await backupTree(source, repo, { volume: 'v' })).id;
    await mkdir(readOnly);
    await execa('mount', ['--bind', writable, readOnly]);
    await execa('mount', ['-o', 'remount,bind,ro', readOnly]);
    before = await listing(writable);
  });
  afterAll(async () => {
    // Lazily: the store keeps packs it read open for a while.
    await execa('umount', ['-l', readOnly]).catch(() => undefined);
    await rm(base, { recursive: true, force: true });
  });

  it('restores, verifies and checks without a lock, saying why, and writes nothing', async () => {
    const repo = await Repository.open(new VfsBlobStore(readOnly));
    const warnings: string[] = [];
    const onWarning = (message: string) => warnings.push(message);
    const target = join(base, 'restored');
    await mkdir(target);
    await restoreTree(repo, 'v', backupId, target, { onWarning });
    expect(await readFile(join(target, 'a.txt'), 'utf8')).toBe('the data\n');
    await expect(verifyBackup(repo, 'v', backupId, { onWarning })).resolves.toMatchObject({ files: 2 });
    await expect(checkRepository(repo, { onWarning })).resolves.toMatchObject({ backups: 1, files: 2 });
    expect(warnings).toHaveLength(3);
    for (const warning of warnings) expect(warning).toMatch(/ro refuses writes \(read-only file system \(EROFS\)\): the (restore|verify|check) .* runs without a repository lock/);
    expect(await listing(writable)).toEqual(before);
  });

  it('waits for a garbage collection that holds the repository, then reads', async () => {
    const held = await acquireLock(new VfsBlobStore(writable), { kind: 'exclusive', purpose: 'garbage collection', autoRefresh: false });
    const repo = await Repository.open(new VfsBlobStore(readOnly));
    let released = false;
    const releasing = new Promise((resolve) => setTimeout(resolve, 1_500)).then(() => held.release()).then(() => { released = true; });
    const warnings: string[] = [];
    try {
      await verifyBackup(repo, 'v', backupId, { onWarning: (m) => warnings.push(m) });
      expect(released).toBe(true);
    } finally {
      await releasing;
    }
    expect(warnings).toHaveLength(1);
    expect(await listing(writable)).toEqual(before);
  });

  it('refuses a backup into it, and the repository stays as it was', async () => {
    const repo = await Repository.open(new VfsBlobStore(readOnly));
    await expect(backupTree(join(base, 'source'), repo, { volume: 'w' })).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/ro refuses writes: read-only file system \(EROFS\); a backup, a delete or a snapshot writes there/) });
    expect(await listing(writable)).toEqual(before);
  });
});
