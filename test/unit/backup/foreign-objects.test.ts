/**
 * What another machine, a broken server or the user may leave in a repository's place: objects
 * that are not the repository's, and listings that lie. None of it may be deleted, or make a
 * garbage collection take a live pack for garbage.
 */
import { createCipheriv, createHash } from 'node:crypto';
import { existsSync, renameSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { S3BlobStore } from '../../../src/backup-targets/s3/s3-blob-store.js';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { parseBackupUrl, type S3Target } from '../../../src/core/backup/backup-url.js';
import type { BlobStore, ListPage } from '../../../src/core/backup/blob-store.js';
import { FORMAT_VERSION, packIdOfKey } from '../../../src/core/backup/format.js';
import { backupTree, deleteBackup, gc, listAll, Repository, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };
const pseudoRandom = (size: number, seed: string) =>
  createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));

describe('objects that are not the repository\'s', () => {
  let base = '';
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-foreign-'));
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('gc leaves a repository nested under packs/ and a user\'s files there alone', async () => {
    await mkdir(join(base, 'vol'));
    await writeFile(join(base, 'vol', 'data.bin'), pseudoRandom(512 * 1024, 'outer'));
    const outer = await Repository.init(new VfsBlobStore(join(base, 'A'), { durable: false }), { chunker: CHUNKER });
    const doomed = await backupTree(join(base, 'vol'), outer, { volume: 'v' });
    // Another repository made at A/packs, holding a backup of its own, and a note beside it.
    const nested = await Repository.init(new VfsBlobStore(join(base, 'A', 'packs'), { durable: false }), { chunker: CHUNKER });
    await writeFile(join(base, 'vol', 'data.bin'), pseudoRandom(512 * 1024, 'inner'));
    const kept = await backupTree(join(base, 'vol'), nested, { volume: 'v' });
    await writeFile(join(base, 'A', 'packs', 'notes.txt'), 'mine\n');
    // A pack-like name in the wrong fan-out directory is not a pack either.
    const misplaced = `${'ab'.repeat(32)}`;
    await mkdir(join(base, 'A', 'packs', 'cd'), { recursive: true });
    await writeFile(join(base, 'A', 'packs', 'cd', misplaced), 'not a pack');
    const outerPacks: string[] = [];
    for await (const { key } of listAll(new VfsBlobStore(join(base, 'A')), 'packs/')) if (packIdOfKey(key)) outerPacks.push(key);
    expect(outerPacks.length).toBeGreaterThan(0);

    const reopened = await Repository.open(new VfsBlobStore(join(base, 'A'), { durable: false }));
    await deleteBackup(reopened, 'v', doomed.id);
    const freed = await gc(reopened);
    expect(freed.deletedPacks).toBe(outerPacks.length);
    expect(await readFile(join(base, 'A', 'packs', 'notes.txt'), 'utf8')).toBe('mine\n');
    expect(await readFile(join(base, 'A', 'packs', 'cd', misplaced), 'utf8')).toBe('not a pack');
    const nestedAgain = await Repository.open(new VfsBlobStore(join(base, 'A', 'packs'), { durable: false }));
    await expect(verifyBackup(nestedAgain, 'v', kept.id)).resolves.toMatchObject({ files: 1 });
    // The outer repository's own packs are gone.
    for (const key of outerPacks) await expect(readFile(join(base, 'A', key))).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('a volume\'s backups go on past an object among its records that does not load, and say so', async () => {
    await mkdir(join(base, 'vol2'));
    await writeFile(join(base, 'vol2', 'a.txt'), 'a\n');
    const store = new VfsBlobStore(join(base, 'B'), { durable: false });
    const repo = await Repository.init(store, { chunker: CHUNKER });
    const first = await backupTree(join(base, 'vol2'), repo, { volume: 'w' });
    await writeFile(join(base, 'B', 'backups', 'w', '20991231T235959999Z-00000000'), 'not json');
    const second = await backupTree(join(base, 'vol2'), repo, { volume: 'w' });
    // The genuine latest backup is the parent (its files cache: nothing read again).
    expect(second.parent).toBe(first.id);
    expect(second.stats).toMatchObject({ files: 1, filesRead: 0 });
    expect(second.warnings).toEqual([expect.stringMatching(/^backups\/w\/20991231T235959999Z-00000000 is not a backup record, so not this backup's parent: /)]);
    await expect(verifyBackup(repo, 'w', second.id)).resolves.toMatchObject({ files: 1 });
  });

  const backupWhile = async (store: VfsBlobStore, volume: string, act: () => void) => {
    const repo = await Repository.init(store, { chunker: CHUNKER });
    let acted = false;
    const failure = await backupTree(join(base, 'vol3'), repo, {
      volume,
      onProgress: (p) => {
        if (!acted && p.files >= 5) {
          acted = true;
          act();
        }
      },
    }).then(() => new Error('the backup completed'), (err: unknown) => err as Error);
    expect(acted).toBe(true);
    return failure;
  };

  it('a repository moved away during a backup gets no record, and its directories are not made again where it was', async () => {
    await mkdir(join(base, 'vol3'));
    for (let i = 0; i < 20; i += 1) await writeFile(join(base, 'vol3', `f${i}.bin`), pseudoRandom(64 * 1024, `f${i}`));
    // As an unmount would: the directory is gone from under the backup.
    const failure = await backupWhile(new VfsBlobStore(join(base, 'D'), { durable: false }), 'm', () => renameSync(join(base, 'D'), join(base, 'D-moved')));
    expect(failure).toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining(`the backup repository at ${join(base, 'D')} is gone since this operation opened it`) });
    expect(existsSync(join(base, 'D'))).toBe(false);
    const records = [];
    for await (const { key } of listAll(new VfsBlobStore(join(base, 'D-moved')), 'backups/')) records.push(key);
    expect(records).toEqual([]);
  });

  it('a repository whose config is gone before the record (emptied, replaced) gets no record', async () => {
    // The directory stays: only the check of the config before the record can tell.
    const failure = await backupWhile(new VfsBlobStore(join(base, 'E'), { durable: false }), 'm', () => rmSync(join(base, 'E', 'config')));
    expect(failure).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('is not the one this operation opened any more (its config object is gone') });
    const records = [];
    for await (const { key } of listAll(new VfsBlobStore(join(base, 'E')), 'backups/')) records.push(key);
    expect(records).toEqual([]);
  });

  it('text another machine wrote reaches no terminal as control characters', async () => {
    const store = new VfsBlobStore(join(base, 'C'), { durable: false });
    const repo = await Repository.init(store, { chunker: CHUNKER });
    const now = Date.now();
    await store.put('locks/00112233445566aa-0000000000', Buffer.from(JSON.stringify({
      format: FORMAT_VERSION, lockId: '00112233445566aa', seq: 0, kind: 'shared', owner: '\u001b[31mevil\u0007', purpose: 'backup of x\u001b]0;title\u0007',
      createdAt: now, expiresAt: now + 60_000,
    })));
    const refused = await gc(repo).then(() => new Error('gc ran'), (err: unknown) => err as Error);
    expect(refused).toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringContaining('by ?[31mevil? (backup of x?]0;title?)') });
    expect(refused.message).not.toMatch(/[\u0000-\u001f]/);
  });

  it('a listing that goes back, or says more follows without saying from where, is an error, never an end', async () => {
    const stuck: BlobStore = Object.assign(Object.create(new VfsBlobStore(join(base, 'none'))) as BlobStore, {
      list: async (): Promise<ListPage> => ({ objects: [{ key: 'packs/aa/x', size: 1 }], next: 'packs/aa/x' }),
    });
    const walk = async () => { for await (const _ of listAll(stuck, 'packs/')) { /* drain */ } };
    await expect(walk()).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining('cannot go on') });

    // An S3 server answering "truncated" with no keys: without the check the listing ended there.
    const sent: string[] = [];
    const client = {
      send: async (command: { constructor: { name: string }; input: { Prefix?: string } }) => {
        sent.push(`${command.constructor.name} ${command.input.Prefix ?? ''}`);
        return { IsTruncated: true, Contents: [] };
      },
    } as unknown as S3Client;
    const target = parseBackupUrl('s3://bucket@us-east-1/repo').target as S3Target;
    const store = new S3BlobStore(target, { client });
    await expect(store.list('backups/')).rejects.toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining('named none') });
    expect(sent).toEqual(['ListObjectsV2Command repo/backups/']);
    // Keys outside the prefix asked for are not part of the page.
    const stray = new S3BlobStore(target, {
      client: { send: async () => ({ IsTruncated: false, Contents: [{ Key: 'repo/index/aa', Size: 1 }, { Key: 'repo/packs/ab/cd', Size: 2 }] }) } as unknown as S3Client,
    });
    expect((await stray.list('packs/')).objects).toEqual([{ key: 'packs/ab/cd', size: 2 }]);
  });
});
