import { ErrorCodes, isStowageError, messageOf, StowageError } from '../errors.js';
import { deleteAll, listAll } from './blob-store.js';
import { isBlockBackup, referencedChunks } from './block-format.js';
import { backupKey, indexIdOfKey, packIdOfKey, packKey } from './format.js';
import { readerLock, waitingForGc, withLock, type RepoLock } from './locks.js';
import { ManifestCheck } from './manifest-rules.js';
import { assertVolumeName } from './objects.js';
import type { CommonOptions } from './options.js';
import type { Repository } from './repository.js';
import type { BackupRecord } from './format.js';

/**
 * Reads back every manifest blob and every chunk of a backup and checks each against its hash,
 * and the manifest against the rules a restore applies (manifest-rules.ts): a backup that
 * verifies is one a restore does not refuse. It goes on past a damaged or missing chunk, and
 * past a refused entry, so that one verify records every damaged copy (and the next backup
 * stores them all again): the error names each chunk and its pack, and the first entry refused.
 */
export async function verifyBackup(repo: Repository, volume: string, backupId: string, options: CommonOptions = {}): Promise<{ files: number; chunks: number; bytes: number }> {
  assertVolumeName(volume);
  return withLock(repo.store, readerLock(`verify of ${volume}/${backupId}`, options), async () => {
    await repo.reloadIndex();
    const record = await repo.readBackupRecord(volume, backupId);
    const chunks = new ChunkReadBack(repo);
    try {
      if (isBlockBackup(record)) {
        // `files` counts the device, as one.
        for await (const id of referencedChunks(repo, record)) {
          if (await chunks.read(id)) options.onProgress?.({ entries: chunks.result.chunks, files: 1, bytes: chunks.result.bytes });
        }
        return chunks.finish(record, 1);
      }
      let files = 0;
      const manifest = new ManifestCheck(record, repo);
      for await (const entry of repo.entries(record)) {
        await manifest.next(entry);
        if (entry.type !== 'file') continue;
        files += 1;
        let held: number | undefined = 0;
        for (const id of entry.chunks!) {
          if (await chunks.read(id)) options.onProgress?.({ entries: files, files, bytes: chunks.result.bytes });
          const length = chunks.lengthOf(id);
          held = held === undefined || length === undefined ? undefined : held + length;
        }
        manifest.size(entry, held);
      }
      return chunks.finish(record, files, await manifest.end());
    } finally {
      repo.releasePackCache();
    }
  });
}

/** Reads chunks back once each, going on past those damaged or missing, which it counts and names. */
class ChunkReadBack {
  readonly result = { chunks: 0, bytes: 0 };
  /** Each chunk tried, with its length when it read back: a file's size is checked against them. */
  private readonly checked = new Map<string, number | undefined>();
  private readonly failures: unknown[] = [];
  private missing = 0;
  private damaged = 0;

  constructor(private readonly repo: Repository) {}

  /** Whether the chunk was tried now (false: tried before); a failure is counted, not thrown. */
  async read(id: string): Promise<boolean> {
    if (this.checked.has(id)) return false;
    this.checked.set(id, undefined);
    try {
      const { data, release } = await this.repo.leaseBlob(id, { wholePacks: true });
      release();
      this.checked.set(id, data.length);
      this.result.chunks += 1;
      this.result.bytes += data.length;
      return true;
    } catch (err) {
      if (isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) this.missing += 1;
      else if (isStowageError(err, ErrorCodes.BACKUP_CORRUPT)) this.damaged += 1;
      else throw err;
      if (this.failures.length < 20) this.failures.push(err);
      return true;
    }
  }

  /** The length of a chunk read before; undefined if it did not read back. */
  lengthOf(id: string): number | undefined {
    return this.checked.get(id);
  }

  /**
   * The result; one failure is thrown as it was, several as one error counting and naming them
   * (E_BACKUP_CORRUPT if any chunk is damaged or `refusal`, the manifest's, is there,
   * E_BACKUP_OBJECT_MISSING if all chunks are missing).
   */
  finish(record: BackupRecord, files: number, refusal?: StowageError): { files: number; chunks: number; bytes: number } {
    const failed = this.missing + this.damaged;
    if (failed === 1 && !refusal) throw this.failures[0];
    if (failed === 0 && refusal) throw refusal;
    if (failed > 0) {
      const chunks = `${failed} chunk${failed === 1 ? ' does' : 's do'} not read back (${this.damaged} damaged, ${this.missing} missing): ` +
        `${this.failures.map(messageOf).join('; ')}${failed > this.failures.length ? `; and ${failed - this.failures.length} more` : ''}`;
      if (refusal) throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `${refusal.message}; and ${chunks}`);
      throw new StowageError(this.damaged > 0 ? ErrorCodes.BACKUP_CORRUPT : ErrorCodes.BACKUP_OBJECT_MISSING, `backup ${record.volume}/${record.id}: ${chunks}`);
    }
    return { files, ...this.result };
  }
}

/**
 * Removes a backup's record; its chunks stay until gc() finds nothing else needs them. Under a
 * shared lock, beside running backups and restores: only gc deletes chunks, and it takes the
 * exclusive lock, so a backup that took the deleted one as its parent keeps every chunk it
 * names, and a restore that read the record reads on.
 *
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
      const index = repo.blobs.loadedIndex(key) ?? await repo.readIndex(key).catch((err: unknown) => {
        if (!isStowageError(err, ErrorCodes.BACKUP_CORRUPT)) throw err;
        throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `garbage collection refused: ${messageOf(err)}; what its pack holds is unknown, so nothing was freed. ` +
          'Put the index object right from a copy of the repository, or move it out by hand: gc then keeps the pack while any backup needs a chunk in it', { cause: err });
      });
      indexed.add(index.pack);
      for (const blob of index.blobs) if (live.has(blob.id)) liveIndexed.add(blob.id);
      if (await keepsLiveBlob(repo, index.pack, index.blobs.map((b) => b.id).filter((id) => live.has(id)))) {
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
    await deleteInBatches(repo, await repo.blobs.damaged.orphans(repo.store, kept, options.pageSize), lock);
    // An hour: far longer than any put takes, including a lock's put outside any lock.
    await repo.store.sweepTemporary?.(60 * 60_000);
    await repo.reloadIndex();
    return { backups: records.length, deletedPacks: deadPacks.length, deletedIndexes: deadIndexes.length, deletedBytes, keptPacks };
  });
}

/**
 * Whether a pack must stay for the live blobs it holds. A copy recorded as damaged keeps it only
 * while no other copy reads back whole, and that copy is read, so a wrong or forged record never
 * makes gc free the one good copy.
 */
async function keepsLiveBlob(repo: Repository, pack: string, live: string[]): Promise<boolean> {
  if (live.some((id) => !repo.blobs.damaged.has(pack, id) || !repo.has(id))) return true;
  for (const id of live) if (!(await repo.readsElsewhere(id, pack))) return true;
  return false;
}

async function deleteInBatches(repo: Repository, keys: string[], lock: RepoLock): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    lock.assertHeld();
    await deleteAll(repo.store, keys.slice(i, i + 1000));
  }
}
