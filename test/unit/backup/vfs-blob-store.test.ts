import { lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, unlink, utimes, writeFile } from 'node:fs/promises';
import { randomBytes } from 'node:crypto';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, gc, Repository, restoreTree } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { describeBlobStoreConformance } from '../../../src/testing/blob-store-suite.js';

describeBlobStoreConformance('vfs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
  return { store: new VfsBlobStore(dir, { durable: false }), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe('vfs blob store on a hostile directory', () => {
  let dir = '';
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it('says a repository path that is a file or a symlink is a wrong path (not damage), writing nothing there', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
    await writeFile(join(dir, 'afile'), 'not a repository');
    await mkdir(join(dir, 'real'));
    await symlink(join(dir, 'real'), join(dir, 'alink'));
    for (const [name, what] of [['afile', 'is not a directory'], ['alink', 'is a symbolic link']] as const) {
      const store = new VfsBlobStore(join(dir, name));
      await expect(store.put('config', Buffer.from('x'))).rejects.toMatchObject({
        code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(new RegExp(`^the backup repository .*${name} ${what}: give the path of a directory`)),
      });
    }
    expect(await readFile(join(dir, 'afile'), 'utf8')).toBe('not a repository');
    expect(await readdir(join(dir, 'real'))).toEqual([]);
  });

  it('never follows a symlink planted as an object or as a directory, and leaves no temps behind', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
    const outside = join(dir, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'secret'), 'secret');
    const root = join(dir, 'repo');
    await mkdir(root);
    const store = new VfsBlobStore(root);
    await symlink(join(outside, 'secret'), join(root, 'file-link'));
    await symlink(outside, join(root, 'dir-link'));
    await expect(store.get('file-link')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('symbolic link') });
    await expect(store.get('dir-link/secret')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    await expect(store.put('dir-link/new', Buffer.from('x'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    await expect(store.delete(['dir-link/secret'])).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    // A put over a planted symlink name does not write through it.
    expect(await store.put('file-link', Buffer.from('overwrite'))).toBe(false);
    expect((await readdir(outside)).sort()).toEqual(['secret']);
    // A listing does not skip them either: objects hidden from a listing are objects gc frees.
    await expect(store.list('')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(/^dir-link in backup repository .* is neither a directory nor a regular file/) });
    expect(await store.put('ok/obj', Buffer.from('fine'))).toBe(true);
    expect((await store.list('ok/')).objects.map((o) => o.key)).toEqual(['ok/obj']);
    await symlink(outside, join(root, 'ok', 'sub'));
    await expect(store.list('ok/')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('ok/sub in backup repository') });
    expect(await readdir(join(root, '.tmp'))).toEqual([]);
  });
});

describe('vfs blob store range reads', () => {
  let dir = '';
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  /** This process's descriptors open on files under `root`. */
  async function openUnder(root: string): Promise<string[]> {
    const paths = await Promise.all((await readdir('/proc/self/fd')).map((fd) => readlink(`/proc/self/fd/${fd}`).catch(() => '')));
    return paths.filter((p) => p.startsWith(`${root}/`)).sort();
  }

  it.runIf(process.getuid?.() === 0)('never opens a device planted as an object (its driver would run on this host): refused as not a regular file', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
    const root = join(dir, 'repo');
    await mkdir(join(root, 'ok'), { recursive: true });
    const store = new VfsBlobStore(root);
    // Major 240 is for local use: no driver here, so an open of it fails with ENXIO.
    await execa('mknod', [join(root, 'ok', 'dev'), 'c', '240', '0']);
    await execa('mkfifo', [join(root, 'ok', 'fifo')]);
    for (const key of ['ok/dev', 'ok/fifo']) {
      await expect(store.get(key)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('is not a regular file') });
    }
  });

  it('keeps a few objects open between range reads, closing the least recently used ones and the idle ones', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
    const store = new VfsBlobStore(dir, { durable: false });
    const keys = Array.from({ length: 6 }, (_, i) => `packs/0${i}/pack-${i}`);
    for (const [i, key] of keys.entries()) expect(await store.put(key, Buffer.from(`object ${i} `.repeat(100)))).toBe(true);

    const reads = await Promise.all([0, 7, 14, 21].map((offset) => store.getRange(keys[0]!, offset, 7)));
    expect(reads.map(String)).toEqual(['object ', '0 objec', 't 0 obj', 'ect 0 o']);
    expect(await openUnder(dir)).toEqual([join(dir, keys[0]!)]);
    // Unlinked (a gc elsewhere): the open object still reads as it was, since objects never change.
    await unlink(join(dir, keys[0]!));
    expect(String(await store.getRange(keys[0]!, 0, 8))).toBe('object 0');

    for (const key of keys.slice(1)) expect(String(await store.getRange(key, 0, 6))).toBe('object');
    const open = await openUnder(dir);
    expect(open).toHaveLength(4);
    expect(open).toEqual(keys.slice(2).map((k) => join(dir, k)));
    await expect(store.getRange(keys[0]!, 0, 8)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_OBJECT_MISSING });

    // Unused for a second or two, all are closed.
    await new Promise((resolve) => setTimeout(resolve, 2_300));
    expect(await openUnder(dir)).toEqual([]);
  });

  it('closes every object it kept open as an operation ends: the repository\'s disk can be unmounted at once', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
    const src = join(dir, 'src');
    await mkdir(src);
    for (let i = 0; i < 6; i++) await writeFile(join(src, `f${i}`), randomBytes(600_000));
    const repoDir = join(dir, 'repo');
    // Small packs: the restore reads from several.
    const repo = await Repository.init(new VfsBlobStore(repoDir, { durable: false }), {
      chunker: { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' }, packSize: 512 * 1024,
    });
    const record = await backupTree(src, repo, { volume: 'v' });
    const reader = await Repository.open(new VfsBlobStore(repoDir));
    const seen: number[] = [];
    await mkdir(join(dir, 'out'));
    await restoreTree(reader, 'v', record.id, join(dir, 'out'), {
      onProgress: () => { void openUnder(repoDir).then((open) => seen.push(open.length)); },
    });
    expect(await openUnder(repoDir)).toEqual([]);
    expect(Math.max(...seen)).toBeGreaterThan(0);
    expect(await readFile(join(dir, 'out', 'f5'))).toEqual(await readFile(join(src, 'f5')));
  });
});

describe('vfs blob store temporary files', () => {
  let dir = '';
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it("gc sweeps a killed put's temporary file once it is an hour old, and nothing else", async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
    const store = new VfsBlobStore(dir, { durable: false });
    const repo = await Repository.init(store);
    const temp = join(dir, '.tmp');
    await writeFile(join(temp, '0123456789abcdef-1234'), 'half a pack');
    const twoHoursAgo = new Date(Date.now() - 2 * 3600_000);
    await utimes(join(temp, '0123456789abcdef-1234'), twoHoursAgo, twoHoursAgo);
    await writeFile(join(temp, 'fedcba9876543210-5678'), 'a put running now');
    // A user's file of another name, old as it may be, is not a temporary of stowage's.
    await writeFile(join(temp, 'diary'), 'someone\'s');
    await utimes(join(temp, 'diary'), twoHoursAgo, twoHoursAgo);
    await writeFile(join(dir, 'outside'), 'not the store\'s');
    await symlink(join(dir, 'outside'), join(temp, 'planted'));
    await lutimes(join(temp, 'planted'), twoHoursAgo, twoHoursAgo);
    await gc(repo);
    expect((await readdir(temp)).sort()).toEqual(['diary', 'fedcba9876543210-5678', 'planted']);
    expect(await readFile(join(dir, 'outside'), 'utf8')).toBe('not the store\'s');
  });
});
