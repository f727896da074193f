import { ErrorCodes, StowageError, messageOf } from '../errors.js';
import type { Logger } from '../logger.js';
import { randomHex } from '../random-hex.js';
import { backupBlocks } from './block-backup.js';
import { isBlockBackup } from './block-format.js';
import type { BlockSupport, ByteRange } from './block-support.js';
import type { BackupRecord } from './format.js';
import type { Repository } from './repository.js';
import type { JobProgress } from './service-contract.js';

/** What a block backup needs of the volume manager: snapshots taken and deleted with every check. */
export interface BlockBackupHost {
  createSnapshot(volume: string, snapshot: string, options: { consistent?: boolean; force?: boolean }): Promise<unknown>;
  deleteSnapshot(volume: string, snapshot: string): Promise<void>;
}

export interface BlockBackupRequest {
  snapshot?: string;
  consistent?: boolean;
  force?: boolean;
  /** Checked right before the record is written, as for a file backup (CommonOptions.signal). */
  signal?: AbortSignal;
}

/** The kinds of backup `backup create --kind` chooses between. */
export const BACKUP_KINDS = ['file', 'block'] as const;
export type BackupKind = (typeof BACKUP_KINDS)[number];

export function blockSupportOf(blocks: BlockSupport | undefined, backend: string, volume: string): BlockSupport {
  if (!blocks) {
    throw new StowageError(ErrorCodes.NOT_SUPPORTED, `block-level backups read thin snapshots of devicemapper volumes; volume ${volume} is on ` +
      `the ${backend} backend`, { volume, remedies: [{ action: 'file-backup', volume }] });
  }
  return blocks;
}

/**
 * A block-level backup of a devicemapper volume: a thin snapshot (the one named, or one taken
 * here), then only the blocks that changed since the snapshot the volume's latest block backup
 * in this repository was read from (thin_delta), or, without such a snapshot on this node, every
 * mapped block (said in the backup's notes). A snapshot taken here is kept as the base of the
 * next block backup into this repository, and the previous base taken by a backup is deleted.
 */
export async function createBlockBackup(host: BlockBackupHost, blocks: BlockSupport, log: Logger, backend: string,
  volume: string, repo: Repository, request: BlockBackupRequest, report: (p: JobProgress) => void): Promise<BackupRecord> {
  const previous = (await repo.listBackups(volume)).filter(isBlockBackup).reverse();
  // The base: the latest block backup whose snapshot is still on this pool, as it was then.
  let base: BackupRecord | undefined;
  for (const record of previous) {
    if (record.snapshot === undefined || record.device?.source === undefined) continue;
    if (await blocks.snapshotIdentity(volume, record.snapshot) === record.device.source) {
      base = record;
      break;
    }
  }
  const taken = request.snapshot === undefined;
  const snapshot = request.snapshot ?? `backup-${new Date().toISOString().replace(/[-:]/g, '').replace('.', '')}-${randomHex(4)}`;
  if (taken) {
    report({ phase: 'snapshot', files: 0, bytes: 0 });
    await host.createSnapshot(volume, snapshot, { consistent: request.consistent, force: request.force });
  }
  let record: BackupRecord;
  try {
    const source = await blocks.snapshotIdentity(volume, snapshot);
    if (source === undefined) throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `volume ${volume} has no snapshot ${snapshot}`, { volume });
    if (base?.snapshot === snapshot) base = undefined;
    const device = await blocks.openSnapshotDevice(volume, snapshot);
    try {
      if (base && base.device?.sizeBytes !== device.sizeBytes) base = undefined;
      const notes: string[] = [];
      let ranges: ByteRange[];
      if (base) {
        report({ phase: 'scan', files: 0, bytes: 0 });
        ranges = await blocks.changedRanges(volume, base.snapshot!, snapshot);
        notes.push(`incremental: blocks changed since snapshot ${base.snapshot} (backup ${base.id}), from thin_delta`);
      } else {
        report({ phase: 'scan', files: 0, bytes: 0 });
        ranges = await blocks.mappedRanges(volume, snapshot);
        notes.push(previous.length > 0
          ? `full read of the mapped blocks: the snapshot of every earlier block backup of ${volume} here (latest ${previous[0]!.id}, ` +
            `snapshot ${previous[0]!.snapshot ?? 'none'}) is gone from this node's pool, so no incremental base was left`
          : 'full read of the mapped blocks: the first block backup of this volume in this repository');
      }
      const totalBytes = ranges.reduce((sum, r) => sum + r.lengthBytes, 0);
      report({ phase: 'backup', files: 0, bytes: 0, totalBytes });
      record = await backupBlocks(device.path, repo, {
        volume, sizeBytes: device.sizeBytes, filesystem: device.filesystem, ranges, ...(base ? { base } : {}),
        origin: { snapshot, backend }, source, snapshotTaken: taken, notes, signal: request.signal,
        onProgress: (p) => report({ phase: 'backup', files: 0, bytes: p.bytes, totalBytes }),
      });
    } finally {
      await device.release().catch((err: unknown) => log.warn(`releasing the device of snapshot ${snapshot} of ${volume}: ${messageOf(err)}`));
    }
  } catch (err) {
    if (taken) {
      await host.deleteSnapshot(volume, snapshot).catch((cleanup: unknown) =>
        log.error(`the failed block backup of ${volume} could not delete its snapshot ${snapshot}; delete it by hand: ${messageOf(cleanup)}`));
    }
    throw err;
  }
  // Earlier bases taken by block backups into this repository: the new snapshot replaces them.
  for (const old of previous) {
    if (!old.device?.snapshotTaken || old.snapshot === undefined || old.snapshot === snapshot) continue;
    if (await blocks.snapshotIdentity(volume, old.snapshot) !== old.device.source) continue;
    await host.deleteSnapshot(volume, old.snapshot).then(
      () => log.info(`deleted snapshot ${old.snapshot} of ${volume}: backup ${record.id} has the newer base ${snapshot}`),
      (err: unknown) => log.warn(`snapshot ${old.snapshot} of ${volume}, an older block-backup base, stays: ${messageOf(err)}`));
  }
  return record;
}
