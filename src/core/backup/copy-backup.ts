import { hostname } from 'node:os';
import { randomHex } from '../random-hex.js';
import { readerLock, waitingForGc } from './locks.js';
import { assertVolumeName, newBackupId, withLock, type BackupRecord, type CommonOptions, type Repository } from './index.js';

export interface CopyOptions extends CommonOptions {
  /** The volume name the copy is recorded under in the destination (default: the source's). */
  volume?: string;
  /** Recorded in the copy: the snapshot the source is, and the volume's backend. */
  origin?: Pick<BackupRecord, 'snapshot' | 'backend'>;
}

export interface CopyResult {
  record: BackupRecord;
  /** Blobs (chunks and manifest blobs) the destination did not have, and their plaintext bytes. */
  copiedBlobs: number;
  copiedBytes: number;
}

/**
 * Copies backup `backupId` of `volume` from `source` into `dest` as a new backup there, adding
 * only the blobs `dest` lacks: a volume's snapshots copied one after the other into the same
 * repository cost what changed between them. Every blob read is checked against its hash (a
 * corrupt source fails the copy, naming the chunk). The manifest is the source's, blob for blob:
 * blob ids are content hashes, so they mean the same in both repositories. Shared locks on both
 * repositories; the record is written last, so a failed copy leaves only unreferenced packs.
 */
export async function copyBackup(source: Repository, volume: string, backupId: string, dest: Repository, options: CopyOptions = {}): Promise<CopyResult> {
  assertVolumeName(volume);
  const target = options.volume ?? volume;
  assertVolumeName(target);
  const now = options.now ?? Date.now;
  const lockOptions = { kind: 'shared' as const, ...waitingForGc(() => options.onProgress?.({ entries: 0, files: 0, bytes: 0 })), owner: options.owner, ttlMs: options.lockTtlMs, now: options.now };
  return withLock(source.store, readerLock(`copy of ${volume}/${backupId}`, options), () =>
    // The purpose names the volume as a backup's does: listings show the copy in progress.
    withLock(dest.store, { ...lockOptions, purpose: `backup of ${target}` }, async (destLock) => {
      const startedAt = new Date(now()).toISOString();
      await source.reloadIndex();
      await dest.reloadIndex();
      const original = await source.readBackupRecord(volume, backupId);
      const writer = dest.newWriter();
      const progress = { entries: 0, files: 0, bytes: 0 };
      for (const id of original.manifest) {
        if (!dest.has(id)) await writer.add('tree', await source.readBlob(id), id);
      }
      for await (const entry of source.entries(original)) {
        progress.entries += 1;
        if (entry.type === 'file') {
          progress.files += 1;
          for (const id of entry.chunks!) {
            // The writer skips blobs dest has or is adding; reading them first would cost the read.
            if (dest.has(id)) continue;
            await writer.add('data', await source.readBlob(id, { wholePacks: true }), id);
          }
          progress.bytes += entry.size;
        }
        options.onProgress?.({ ...progress });
      }
      await writer.flush();
      source.releasePackCache();
      const record: BackupRecord = {
        format: 1,
        id: newBackupId(now(), randomHex(4)),
        volume: target,
        host: hostname(),
        startedAt,
        finishedAt: new Date(now()).toISOString(),
        manifest: original.manifest,
        stats: { ...original.stats, newBlobs: writer.stats.newBlobs, newRawBytes: writer.stats.newRawBytes, newStoredBytes: writer.stats.newStoredBytes },
        warnings: original.warnings,
        ...(original.snapshot !== undefined ? { snapshot: original.snapshot } : {}),
        ...(original.backend !== undefined ? { backend: original.backend } : {}),
        // The same manifest: its attributes were read as completely as the original's.
        ...(original.xattrsRead ? { xattrsRead: true as const } : {}),
        ...(original.notes ? { notes: original.notes } : {}),
        ...options.origin,
      };
      options.signal?.throwIfAborted();
      // Past the lock's expiry a GC may have run in dest: a record must not name chunks it removed.
      destLock.assertHeld();
      await dest.putBackupRecord(record);
      return { record, copiedBlobs: writer.stats.newBlobs, copiedBytes: writer.stats.newRawBytes };
    }));
}
