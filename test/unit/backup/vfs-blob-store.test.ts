import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { describeBlobStoreConformance } from '../../../src/testing/blob-store-suite.js';

describeBlobStoreConformance('vfs', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'stowage-blobs-'));
  return { store: new VfsBlobStore(dir, { durable: false }), cleanup: () => rm(dir, { recursive: true, force: true }) };
});

describe('vfs blob store on a hostile directory', () => {
  let dir = '';
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

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
    expect((await store.list('')).objects.map((o) => o.key)).toEqual([]);
    expect(await store.put('ok/obj', Buffer.from('fine'))).toBe(true);
    expect(await readdir(join(root, '.tmp'))).toEqual([]);
  });
});
