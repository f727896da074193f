import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { open } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { indexKey, packKey, type BackupRecord } from '../../../src/core/backup/format.js';
import { backupTree, checkRepository, deleteBackup, gc, listAll, Repository, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { collect } from './tree-helpers.js';

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };

function pseudoRandom(size: number, seed: string): Buffer {
  return createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** The error `work` fails with; a test fails if it does not. */
async function failureOf(work: Promise<unknown>): Promise<Error & { code?: string }> {
  try {
    await work;
  } catch (err) {
    return err as Error & { code?: string };
  }
  throw new Error('expected a failure');
}

async function damagedKeys(store: VfsBlobStore): Promise<string[]> {
  const keys: string[] = [];
  for await (const { key } of listAll(store, 'damaged/')) keys.push(key);
  return keys;
}

describe('a chunk found damaged in its pack', () => {
  let base = '';
  let store: VfsBlobStore;
  let first: BackupRecord;
  let chunk = '';
  let pack = '';
  const big = pseudoRandom(1024 * 1024, 'big');
  const flipByte = async (path: string, position: number) => {
    const handle = await open(path, 'r+');
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, position);
    byte[0] = byte[0]! ^ 0xff;
    await handle.write(byte, 0, 1, position);
    await handle.close();
  };
  let flipped = '';
  let flippedAt = 0;

  beforeEach(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-damaged-'));
    await mkdir(join(base, 'vol'));
    await writeFile(join(base, 'vol', 'big.bin'), big);
    await writeFile(join(base, 'vol', 'small.txt'), 'small and unchanged\n');
    store = new VfsBlobStore(join(base, 'repo'), { durable: false });
    // One blob a pack: what gc may delete is then exactly the packs of blobs nothing needs.
    const repo = await Repository.init(store, { chunker: CHUNKER, packSize: 1 });
    first = await backupTree(join(base, 'vol'), repo, { volume: 'vol' });
    const entry = (await collect(repo, first)).entries.find((e) => e.path === 'big.bin')!;
    chunk = entry.chunks![1]!;
    const at = repo.locate(chunk)!;
    pack = at.pack;
    // One byte flipped inside the stored chunk, as a disk or a copy might.
    flipped = join(store.location, packKey(at.pack));
    flippedAt = at.offset + 100;
    await flipByte(flipped, flippedAt);
  });
  afterEach(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('is recorded by the verify that finds it; the next backup of the unchanged volume stores it again, and the earlier backup then verifies and restores', async () => {
    const repo = await Repository.open(store);
    const failure = await failureOf(verifyBackup(repo, 'vol', first.id));
    expect(failure).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect(failure.message).toContain(`chunk ${chunk} in ${packKey(pack)} is corrupt`);
    expect(failure.message).toContain('recorded as damaged in the repository');
    expect(await damagedKeys(store)).toEqual([`damaged/${pack}/${chunk}`]);

    // A second verify says it was recorded before, and writes nothing more.
    const again = await failureOf(verifyBackup(await Repository.open(store), 'vol', first.id));
    expect(again.message).toContain('it was recorded as damaged before');

    // Nothing changed in the volume: without the record, every file would come from the parent.
    const second = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    expect(second.parent).toBe(first.id);
    expect(second.stats.filesRead).toBe(1);
    expect(second.warnings).toContainEqual(expect.stringContaining('1 chunk(s) whose stored copies were recorded as damaged were stored again'));

    const healed = await Repository.open(store);
    expect(healed.has(chunk)).toBe(true);
    expect(healed.locate(chunk)!.pack).not.toBe(pack);
    await expect(verifyBackup(healed, 'vol', first.id)).resolves.toMatchObject({ files: 2 });
    await expect(checkRepository(healed)).resolves.toMatchObject({ backups: 2 });
    const target = join(base, 'restored');
    await mkdir(target);
    await restoreTree(healed, 'vol', first.id, target);
    expect((await readFile(join(target, 'big.bin'))).equals(big)).toBe(true);
  });

  it('is recorded by a restore that meets it, which still fails and leaves its target empty', async () => {
    const target = join(base, 'restored');
    await mkdir(target);
    await expect(restoreTree(await Repository.open(store), 'vol', first.id, target)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect(await damagedKeys(store)).toEqual([`damaged/${pack}/${chunk}`]);
    const second = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    expect(second.stats.filesRead).toBe(1);
  });

  it('gc deletes a damaged copy stored again since (its pack holding nothing else live), and the record with it', async () => {
    await verifyBackup(await Repository.open(store), 'vol', first.id).catch(() => undefined);
    await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    const result = await gc(await Repository.open(store));
    // Every pack holds one blob here (a pack size of 1 byte): the damaged one's pack is garbage
    // although both backups name its blob, since they read the good copy.
    expect(result.deletedPacks).toBe(1);
    expect(await store.head(packKey(pack))).toBeUndefined();
    expect(await damagedKeys(store)).toEqual([]);
    await expect(verifyBackup(await Repository.open(store), 'vol', first.id)).resolves.toMatchObject({ files: 2 });
  });

  it('gc keeps a damaged copy while it is the only one, and its record', async () => {
    await verifyBackup(await Repository.open(store), 'vol', first.id).catch(() => undefined);
    const result = await gc(await Repository.open(store));
    expect(result.deletedPacks).toBe(0);
    expect(await store.head(packKey(pack))).toBeDefined();
    expect(await damagedKeys(store)).toEqual([`damaged/${pack}/${chunk}`]);
  });

  it('a record naming a good copy (forged, or wrong) costs a second copy, never a read', async () => {
    await flipByte(flipped, flippedAt); // nothing damaged in this one
    const repo = await Repository.open(store);
    const small = (await collect(repo, first)).entries.find((e) => e.path === 'big.bin')!.chunks![0]!;
    const at = repo.locate(small)!;
    await store.put(`damaged/${at.pack}/${small}`, Buffer.from('{}'));
    const marked = await Repository.open(store);
    expect(marked.has(small)).toBe(false);
    expect(marked.locate(small)).toEqual(at);
    // Read from the copy so marked, and checked: it is good.
    expect((await marked.readBlob(small)).equals(big.subarray(0, at.rawLength))).toBe(true);
    // A whole check reads it too, rather than calling it missing.
    await expect(checkRepository(marked)).resolves.toMatchObject({ backups: 1 });
    // A record under damaged/ that is not of this form is ignored, and never deleted.
    await store.put('damaged/not-a-record', Buffer.from('x'));
    await store.put(`damaged/${'0'.repeat(64)}/${small}`, Buffer.from('{}'));
    await deleteBackup(marked, 'vol', first.id);
    await gc(await Repository.open(store));
    const keys = await damagedKeys(store);
    expect(keys).toContain('damaged/not-a-record');
    expect(keys).not.toContain(`damaged/${'0'.repeat(64)}/${small}`);
  });

  it('a verify goes on past the first damaged chunk and records every one, so one backup repairs them all', async () => {
    const repo = await Repository.open(store);
    const other = (await collect(repo, first)).entries.find((e) => e.path === 'big.bin')!.chunks![3]!;
    const at = repo.locate(other)!;
    await flipByte(join(store.location, packKey(at.pack)), at.offset + 7);
    const failure = await failureOf(verifyBackup(repo, 'vol', first.id));
    expect(failure.message).toContain('2 chunks do not read back');
    expect((await damagedKeys(store)).sort()).toEqual([`damaged/${pack}/${chunk}`, `damaged/${at.pack}/${other}`].sort());
    const second = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    expect(second.warnings).toContainEqual(expect.stringContaining('2 chunk(s) whose stored copies were recorded as damaged were stored again'));
    await expect(verifyBackup(await Repository.open(store), 'vol', first.id)).resolves.toMatchObject({ files: 2 });
  });

  it('the same chunk damaged again after its repair is stored again under yet another name', async () => {
    for (let round = 0; round < 3; round += 1) {
      // Each round: the copy read now is found damaged, recorded, and stored again by a backup.
      const repo = await Repository.open(store);
      await expect(verifyBackup(repo, 'vol', first.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
      const again = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
      expect(again.stats.newStoredBytes).toBeGreaterThan(0);
      const healed = await Repository.open(store);
      await expect(verifyBackup(healed, 'vol', first.id)).resolves.toMatchObject({ files: 2 });
      await expect(verifyBackup(healed, 'vol', again.id)).resolves.toMatchObject({ files: 2 });
      const now = healed.locate(chunk)!;
      await flipByte(join(store.location, packKey(now.pack)), now.offset + 3);
    }
    expect((await damagedKeys(store)).filter((key) => key.endsWith(`/${chunk}`))).toHaveLength(3);
  });

  it('a verify counts damaged and missing chunks apart, and can be stopped while every read fails', async () => {
    const repo = await Repository.open(store);
    const chunks = (await collect(repo, first)).entries.find((e) => e.path === 'big.bin')!.chunks!;
    // chunk 1 is damaged already; the packs of chunks 0, 2 and 3 go.
    for (const id of [chunks[0]!, chunks[2]!, chunks[3]!]) await store.delete([packKey(repo.locate(id)!.pack)]);
    const failure = await failureOf(verifyBackup(await Repository.open(store), 'vol', first.id));
    expect(failure).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect(failure.message).toContain('4 chunks do not read back (1 damaged, 3 missing)');
    // Progress comes after every chunk tried, read or not: what a job's cancel is checked at.
    const tried: number[] = [];
    await expect(verifyBackup(await Repository.open(store), 'vol', first.id, {
      onProgress: (p) => { tried.push(p.bytes); throw new Error('cancelled'); },
    })).rejects.toThrow('cancelled');
    // The first chunk tried was not read: the report came all the same.
    expect(tried).toEqual([0]);
  });

  it('a damaged list of files says that no later backup stores it again', async () => {
    await flipByte(flipped, flippedAt); // only the manifest is damaged here
    const repo = await Repository.open(store);
    const at = repo.locate(first.manifest[0]!)!;
    await flipByte(join(store.location, packKey(at.pack)), at.offset + at.length - 1);
    const failure = await failureOf(verifyBackup(repo, 'vol', first.id));
    expect(failure.message).toContain(`chunk ${first.manifest[0]} in ${packKey(at.pack)} is corrupt`);
    expect(failure.message).toContain('it is part of a backup\'s list of files, which no later backup stores again');
  });

  it('when the copy the repository trusts is damaged too, reads fall back to the one recorded, and gc keeps it', async () => {
    await flipByte(flipped, flippedAt); // the first copy is good, but recorded as damaged (a wrong or forged record)
    await store.put(`damaged/${pack}/${chunk}`, Buffer.from('{}'));
    const second = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    expect(second.stats.filesRead).toBe(1);
    // The copy stored again rots before anyone reads it.
    const repaired = (await Repository.open(store)).locate(chunk)!;
    expect(repaired.pack).not.toBe(pack);
    await flipByte(join(store.location, packKey(repaired.pack)), repaired.offset + 5);
    // gc reads the copy it would rely on before freeing the recorded one: it finds it damaged and keeps the pack.
    await gc(await Repository.open(store));
    expect(await store.head(packKey(pack))).toBeDefined();
    // Both backups read the chunk from the recorded copy, the only good one.
    await expect(verifyBackup(await Repository.open(store), 'vol', first.id)).resolves.toMatchObject({ files: 2 });
    await expect(verifyBackup(await Repository.open(store), 'vol', second.id)).resolves.toMatchObject({ files: 2 });
    expect(await damagedKeys(store)).toContain(`damaged/${repaired.pack}/${chunk}`);
  });
});

describe('a pack cut short', () => {
  let base = '';
  afterEach(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  /** A fresh repository holding one backup of each volume (a 1 MiB file of its own seed); the first volume's first record. */
  async function backedUp(name: string, packSize: number, volumes = ['vol']) {
    base = await mkdtemp(join(tmpdir(), `stowage-${name}-`));
    const data = new Map<string, Buffer>();
    for (const vol of volumes) {
      await mkdir(join(base, vol));
      data.set(vol, pseudoRandom(1024 * 1024, `${name}-${vol}`));
      await writeFile(join(base, vol, 'big.bin'), data.get(vol)!);
    }
    const store = new VfsBlobStore(join(base, 'repo'), { durable: false });
    const repo = await Repository.init(store, { chunker: CHUNKER, packSize });
    const first = await backupTree(join(base, volumes[0]!), repo, { volume: volumes[0]! });
    const chunks = (await collect(repo, first)).entries.find((e) => e.path === 'big.bin')!.chunks!;
    return { store, repo, first, chunks, big: data.get(volumes[0]!)! };
  }

  it('has every chunk past its end recorded by the first read that meets it, so one backup repairs them all', async () => {
    // The file's first chunks fill one pack; the manifest goes to a later one.
    const { store, repo, first, chunks, big } = await backedUp('cut', 640 * 1024);
    const pack = repo.locate(chunks[0]!)!.pack;
    expect(repo.locate(first.manifest[0]!)!.pack).not.toBe(pack);
    await truncate(join(store.location, packKey(pack)), 300 * 1024);
    const cut = chunks.filter((id) => { const at = repo.locate(id)!; return at.pack === pack && at.offset + at.length > 300 * 1024; });
    expect(cut.length).toBeGreaterThan(2);
    // A restore stops at the first chunk it cannot read, but records all that the cut lost.
    const target = join(base, 'out');
    await mkdir(target);
    await expect(restoreTree(await Repository.open(store), 'vol', first.id, target)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect((await damagedKeys(store)).sort()).toEqual(cut.map((id) => `damaged/${pack}/${id}`).sort());
    const second = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    expect(second.warnings).toContainEqual(expect.stringContaining(`${cut.length} chunk(s) whose stored copies were recorded as damaged were stored again`));
    await expect(verifyBackup(await Repository.open(store), 'vol', first.id)).resolves.toMatchObject({ files: 1 });
    await restoreTree(await Repository.open(store), 'vol', first.id, target);
    expect((await readFile(join(target, 'big.bin'))).equals(big)).toBe(true);
  });

  it('whose index object is damaged too leaves the rest of the repository working; gc refuses', async () => {
    const { store, repo, first, chunks } = await backedUp('cut-index', 640 * 1024, ['vol', 'other']);
    const chunk = chunks[0]!;
    const pack = repo.locate(chunk)!.pack;
    await truncate(join(store.location, packKey(pack)), 300 * 1024);
    await writeFile(join(store.location, indexKey(pack)), 'garbage');
    // Neither the index nor the pack's own trailer can be read: the pack's chunks are unknown.
    const opened = await Repository.open(store);
    expect(opened.has(chunk)).toBe(false);
    const other = await backupTree(join(base, 'other'), opened, { volume: 'other' });
    await expect(verifyBackup(await Repository.open(store), 'other', other.id)).resolves.toMatchObject({ files: 1 });
    const failure = await failureOf(verifyBackup(await Repository.open(store), 'vol', first.id));
    expect(failure.message).toContain(`chunk ${chunk} is missing: it is in no pack of ${store.location} whose index loads; 1 index object(s) do not (${indexKey(pack)}:`);
    await expect(gc(await Repository.open(store))).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(new RegExp(`^garbage collection refused: index object ${indexKey(pack)} .*; what its pack holds is unknown, so nothing was freed. Put the index object right`)),
    });
    expect(await store.head(packKey(pack))).toBeDefined();
  });

  it('whose name a backup storing the same chunks again would take gets a new name, even with its index unreadable', async () => {
    const { store, repo, first, chunks, big } = await backedUp('cut-name', 1);
    const chunk = chunks[1]!;
    const pack = repo.locate(chunk)!.pack;
    await truncate(join(store.location, packKey(pack)), 1000);
    await writeFile(join(store.location, indexKey(pack)), 'garbage');
    // The chunk is unknown now: the next backup stores it again, in one pack alone as before,
    // whose name would be the cut pack's.
    const second = await backupTree(join(base, 'vol'), await Repository.open(store), { volume: 'vol' });
    const opened = await Repository.open(store);
    expect(opened.locate(chunk)!.pack).not.toBe(pack);
    await expect(verifyBackup(opened, 'vol', second.id)).resolves.toMatchObject({ files: 1 });
    const target = join(base, 'out');
    await mkdir(target);
    await restoreTree(opened, 'vol', first.id, target);
    expect((await readFile(join(target, 'big.bin'))).equals(big)).toBe(true);
  });
});
