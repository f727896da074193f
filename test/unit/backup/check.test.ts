import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupKey, packKey } from '../../../src/core/backup/format.js';
import { backupTree, checkRepository, listAll, Repository, verifyBackup } from '../../../src/core/backup/index.js';
import type { BackupRecord } from '../../../src/core/backup/format.js';
import type { Progress } from '../../../src/core/backup/options.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { collect } from './tree-helpers.js';

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };

function pseudoRandom(size: number, seed: string): Buffer {
  return createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** A store that counts the bytes read from packs, whole or in ranges. */
class CountingStore extends VfsBlobStore {
  packBytesRead = 0;
  override async get(key: string, into?: Buffer): Promise<Buffer> {
    const data = await super.get(key, into);
    if (key.startsWith('packs/')) this.packBytesRead += data.length;
    return data;
  }
  override async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    const data = await super.getRange(key, offset, length, into);
    if (key.startsWith('packs/')) this.packBytesRead += data.length;
    return data;
  }
}

describe('checking a whole repository', () => {
  let base = '';
  let store: CountingStore;
  const backups: Record<string, BackupRecord> = {};

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-check-'));
    // Two volumes share a large file; each has files of its own; the second volume has two backups.
    const shared = pseudoRandom(3 * 1024 * 1024, 'shared');
    for (const [vol, own] of [['a', 'own-a'], ['b', 'own-b']] as const) {
      await mkdir(join(base, vol));
      await writeFile(join(base, vol, 'shared.bin'), shared);
      await writeFile(join(base, vol, 'own.bin'), pseudoRandom(1024 * 1024, own));
    }
    store = new CountingStore(join(base, 'repo'), { durable: false });
    const repo = await Repository.init(store, { chunker: CHUNKER, packSize: 1024 * 1024 });
    backups.a = await backupTree(join(base, 'a'), repo, { volume: 'a' });
    backups.b1 = await backupTree(join(base, 'b'), repo, { volume: 'b' });
    await writeFile(join(base, 'b', 'later.bin'), pseudoRandom(512 * 1024, 'later'));
    backups.b2 = await backupTree(join(base, 'b'), repo, { volume: 'b' });
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('reads every blob any backup needs once, and counts them', async () => {
    const repo = await Repository.open(store);
    const needed = new Set<string>();
    for (const record of Object.values(backups)) {
      for (const id of record.manifest) needed.add(id);
      for (const entry of (await collect(repo, record)).entries) for (const id of entry.chunks ?? []) needed.add(id);
    }
    let packBytes = 0;
    for await (const { size } of listAll(store, 'packs/')) packBytes += size;
    store.packBytesRead = 0;
    const reports: Progress[] = [];
    const result = await checkRepository(repo, { onProgress: (p) => reports.push(p) });
    expect(result).toEqual({ backups: 3, files: 2 + 2 + 3, chunks: needed.size, bytes: expect.any(Number) });
    // Progress counts chunks against a total known from the first report, and ends on it.
    expect(reports[0]).toMatchObject({ totalEntries: needed.size, totalBytes: result.bytes });
    expect(reports.at(-1)).toMatchObject({ entries: needed.size, bytes: result.bytes, totalEntries: needed.size, totalBytes: result.bytes });
    expect(result.bytes).toBeGreaterThan(4.5 * 1024 * 1024);
    // No chunk is read twice (the manifests, a few KiB, are read once more with their packs); one
    // verify per backup reads the shared file's chunks three times.
    expect(store.packBytesRead).toBeLessThanOrEqual(packBytes + 32 * 1024);
    store.packBytesRead = 0;
    for (const record of Object.values(backups)) await verifyBackup(repo, record.volume, record.id);
    expect(store.packBytesRead).toBeGreaterThan(1.5 * packBytes);
  });

  it('goes on past a corrupt chunk, a missing pack and a broken record, and names the backups they touch', async () => {
    const scratch = join(base, 'scratch');
    await rm(scratch, { recursive: true, force: true });
    await mkdir(scratch);
    const { cp } = await import('node:fs/promises');
    await cp(join(base, 'repo'), join(scratch, 'repo'), { recursive: true });
    const damaged = new VfsBlobStore(join(scratch, 'repo'), { durable: false });
    let repo = await Repository.open(damaged);
    // A chunk of the file only volume a has, flipped.
    const own = (await collect(repo, backups.a!)).entries.find((e) => e.path === 'own.bin')!.chunks![1]!;
    const ownLoc = repo.locate(own)!;
    const packPath = join(damaged.location, packKey(ownLoc.pack));
    const bytes = await readFile(packPath);
    bytes[ownLoc.offset + 5] ^= 0x5a;
    await writeFile(packPath, bytes);
    // The pack holding the file only the second backup of b has, gone (in another pack than the flip).
    const later = (await collect(repo, backups.b2!)).entries.find((e) => e.path === 'later.bin')!.chunks![0]!;
    const laterPack = repo.locate(later)!.pack;
    expect(laterPack).not.toBe(ownLoc.pack);
    await unlink(join(damaged.location, packKey(laterPack)));
    // A record another machine garbled.
    await mkdir(join(damaged.location, 'backups', 'c'));
    await writeFile(join(damaged.location, backupKey('c', '20300101T000000000Z-00000000')), '{"not":"a record"}');

    repo = await Repository.open(damaged);
    const failure = await checkRepository(repo).then(() => new Error('the check passed'), (err: unknown) => err as Error);
    expect(failure).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect(failure.message).toContain(`chunk ${own} in ${packKey(ownLoc.pack)} is corrupt`);
    // The lost pack held the second backup's new data and its manifest: named, as missing.
    expect(failure.message).toMatch(new RegExp(`is missing[^;]*its pack ${packKey(laterPack)} is not in`));
    expect(failure.message).toContain(backupKey('c', '20300101T000000000Z-00000000'));
    // a and b's second backup cannot be restored whole; b's first can.
    const touched = /backups that cannot be restored whole: ([^:]*):/.exec(failure.message)?.[1];
    expect(touched?.split(', ').sort()).toEqual([`a/${backups.a!.id}`, `b/${backups.b2!.id}`].sort());
    // What the check says agrees with verify, backup by backup.
    await expect(verifyBackup(repo, 'b', backups.b1!.id)).resolves.toMatchObject({ files: 2 });
    await expect(verifyBackup(repo, 'a', backups.a!.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    // It changed nothing: no lock left, the garbled record still there.
    expect((await damaged.list('locks/')).objects).toEqual([]);
    expect(await damaged.head(backupKey('c', '20300101T000000000Z-00000000'))).toBeDefined();
  });
});
