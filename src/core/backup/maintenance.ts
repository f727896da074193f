import { ErrorCodes, StowageError } from '../errors.js';
import { deleteAll, listAll } from './blob-store.js';
import { isBlockBackup, referencedChunks } from './block-format.js';
import { backupKey, indexIdOfKey, packIdOfKey, packKey } from './format.js';
import { readerLock, waitingForGc, withLock, type RepoLock } from './locks.js';
import { assertVolumeName } from './objects.js';
import type { CommonOptions } from './options.js';
import type { Repository } from './repository.js';
import type { BackupRecord } from './format.js';

/**
 * Reads back every manifest blob and every chunk of a backup and checks each against its hash;
 * the first failure is an error naming the chunk and its pack.
 */
export async function verifyBackup(repo: Repository, volume: string, backupId: string, options: CommonOptions = {}): Promise<{ files: number; chunks: number; bytes: number }> {
  assertVolumeName(volume);
  return withLock(repo.store, readerLock(`verify of ${volume}/${backupId}`, options), async () => {
    await repo.reloadIndex();
    const record = await repo.readBackupRecord(volume, backupId);
    if (isBlockBackup(record)) return verifyChunks(repo, record, options);
    const checked = new Set<string>();
    const result = { files: 0, chunks: 0, bytes: 0 };
    for await (const entry of repo.entries(record)) {
      if (entry.type !== 'file') continue;
      result.files += 1;
      for (const id of entry.chunks!) {
        if (checked.has(id)) continue;
        const { data, release } = await repo.leaseBlob(id, { wholePacks: true });
        release();
        checked.add(id);
        result.chunks += 1;
        result.bytes += data.length;
        options.onProgress?.({ entries: result.files, files: result.files, bytes: result.bytes });
      }
    }
    repo.releasePackCache();
    return result;
  });
}

/** Verify for a block backup: every distinct block it lists (`files` counts the device, as one). */
async function verifyChunks(repo: Repository, record: BackupRecord, options: CommonOptions): Promise<{ files: number; chunks: number; bytes: number }> {
  const checked = new Set<string>();
  const result = { files: 1, chunks: 0, bytes: 0 };
  for await (const id of referencedChunks(repo, record)) {
    if (checked.has(id)) continue;
    const { data, release } = await repo.leaseBlob(id, { wholePacks: true });
    release();
    checked.add(id);
    result.chunks += 1;
    result.bytes += data.length;
    options.onProgress?.({ entries: result.chunks, files: 1, bytes: result.bytes });
  }
  repo.releasePackCache();
  return result;
}

/**
 * Removes a backup's record; its chunks stay until gc() finds nothing else needs them. Under a
 * shared lock, beside running backups and restores: only gc deletes chunks, and it takes the
 * exclusive lock, so a backup that took the deleted one as its parent keeps every chunk it
 * names, and a restore that read the record reads on.
 */
/**
 * `waitForGc`: a garbage collection running elsewhere is waited for (up to a minute), as a backup
 * or a restore waits; without it, it fails the delete at once (E_BACKUP_LOCKED), which a caller
 * that tidies up (a snapshot that lost its name) leaves to a later sweep.
 */
export async function deleteBackup(repo: Repository, volume: string, backupId: string, options: CommonOptions & { waitForGc?: boolean } = {}): Promise<void> {
  assertVolumeName(volume);
  const wait = options.waitForGc ? waitingForGc(() => options.onProgress?.({ entries: 0, files: 0, bytes: 0 })) : {};
  await withLock(repo.store, { kind: 'shared', purpose: `delete of ${volume}/${backupId}`, writesOnlyLocks: true, ...wait,
    owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    await repo.readBackupRecord(volume, backupId);
    options.signal?.throwIfAborted();
    lock.assertHeld();
    await repo.store.delete([backupKey(volume, backupId)]);
  });
}

export interface GcOptions extends CommonOptions {
  /** List page size (tests use a small one to cross many pages). */
  pageSize?: number;
}

export interface GcResult {
  backups: number;
  deletedPacks: number;
  deletedIndexes: number;
  deletedBytes: number;
  keptPacks: number;
}

/**
 * Deletes packs no backup references, under an exclusive lock. It refuses (changing nothing)
 * when any backup record or manifest fails to load: what a broken record references is
 * unknown, and deleting it could lose data. Index objects go before their packs, so a crash
 * between the two leaves an unindexed pack (removed next time), never an index naming a
 * missing pack. Packs with some live blobs are kept whole (no repacking yet).
 */
export async function gc(repo: Repository, options: GcOptions = {}): Promise<GcResult> {
  return withLock(repo.store, { kind: 'exclusive', purpose: 'garbage collection', writesOnlyLocks: true, owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    const broken: string[] = [];
    const records = await repo.listBackups(undefined, { pageSize: options.pageSize, onBroken: (key, err) => broken.push(`${key}: ${(err as Error).message}`) });
    if (broken.length > 0) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `garbage collection refused: ${broken.length} backup record(s) do not load, so what they reference is unknown (${broken.slice(0, 3).join('; ')}). ` +
        `Nothing is freed until each is put right (from a copy of the repository) or moved out of it by hand (it is then no backup any more)`);
    }
    await repo.reloadIndex();
    const live = new Set<string>();
    for (const record of records) {
      for (const id of record.manifest) live.add(id);
      try {
        for await (const id of referencedChunks(repo, record)) live.add(id);
      } catch (err) {
        throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `garbage collection refused: the manifest of backup ${record.volume}/${record.id} does not load (${(err as Error).message})`, { cause: err });
      }
    }
    const deadIndexes: string[] = [];
    const deadPacks: string[] = [];
    const indexed = new Set<string>();
    const kept = new Set<string>();
    const liveIndexed = new Set<string>();
    let keptPacks = 0;
    let deletedBytes = 0;
    for await (const { key } of listAll(repo.store, 'index/', options.pageSize)) {
      if (indexIdOfKey(key) === undefined) continue; // not an index of this repository's: never deleted
      const index = await repo.readIndex(key);
      indexed.add(index.pack);
      for (const blob of index.blobs) if (live.has(blob.id)) liveIndexed.add(blob.id);
      // A damaged copy of a blob stored again since keeps nothing: backups read the good one.
      if (index.blobs.some((b) => live.has(b.id) && !(repo.damaged.has(index.pack, b.id) && repo.has(b.id)))) {
        keptPacks += 1;
        kept.add(index.pack);
      } else {
        deadIndexes.push(key);
        deadPacks.push(packKey(index.pack));
        deletedBytes += index.size;
      }
    }
    // A chunk a backup needs that no index names is in a pack gc would take for garbage (its
    // index lost or damaged): deleting that pack would lose what a rebuilt index could save.
    if (liveIndexed.size < live.size) {
      const missing = [...live].filter((id) => !liveIndexed.has(id));
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `garbage collection refused: ${missing.length} chunk(s) that backups need are in no pack index ` +
        `(${missing.slice(0, 3).join(', ')}), so packs without an index may hold them; nothing was deleted`);
    }
    // Packs without an index: left by a backup that stopped between the two writes.
    for await (const { key, size } of listAll(repo.store, 'packs/', options.pageSize)) {
      const id = packIdOfKey(key);
      if (id !== undefined && !indexed.has(id)) {
        deadPacks.push(key);
        deletedBytes += size;
      }
    }
    lock.assertHeld();
    await deleteInBatches(repo, deadIndexes, lock);
    await deleteInBatches(repo, deadPacks, lock);
    // Records of damage in packs gone now, or never there.
    await deleteInBatches(repo, await repo.damaged.orphans(repo.store, kept, options.pageSize), lock);
    // An hour: far longer than any put takes, including a lock's put outside any lock.
    await repo.store.sweepTemporary?.(60 * 60_000);
    await repo.reloadIndex();
    return { backups: records.length, deletedPacks: deadPacks.length, deletedIndexes: deadIndexes.length, deletedBytes, keptPacks };
  });
}

async function deleteInBatches(repo: Repository, keys: string[], lock: RepoLock): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    lock.assertHeld();
    await deleteAll(repo.store, keys.slice(i, i + 1000));
  }
}
