import { z } from 'zod';
import type { SnapshotReadOptions, SnapshotRecord, SnapshotSource, SnapshotSupport } from '../backend.js';
import { ErrorCodes, StowageError, describeCause, isStowageError, messageOf } from '../errors.js';
import type { Logger } from '../logger.js';
import { VfsBlobStore } from '../../backup-targets/vfs/vfs-blob-store.js';
import { formatBackupUrl } from './backup-url.js';
import { keptSummaryOf, removalStamp, retainedSnapshotsKey, type RetainedSnapshots } from './retained-snapshots.js';
import {
  backupTree, BackupIdSchema, deleteAll, deleteBackup, gc, listAll, liveLocks, parseObject, Repository, VolumeNameSchema, withLock, type BackupRecord, type BlobStore,
} from './index.js';

/**
 * Snapshots for backends whose storage has no snapshot of its own (vfs, glusterfs): a snapshot
 * is a backup of the volume's live data into a repository kept on the backend's own storage
 * (one per store, so every volume's snapshots share chunks), under the snapshot's name. The name
 * is a small object `snapshots/<volume>/<name>` in that repository naming the backup, written
 * once (the store never overwrites, so two nodes taking the same name cannot both succeed).
 *
 * The live data is read file by file while containers may write it: a snapshot is each file as
 * it was when read, not the whole volume at one instant (see the README).
 */
export interface SnapshotHost {
  /** The backend's name, recorded in each snapshot's backup. */
  backend: string;
  /**
   * The repository's directory on the backend's storage, checked and created; throws
   * E_NOT_SUPPORTED when the storage cannot hold one (a store on an in-memory filesystem).
   */
  repositoryDir(): Promise<string>;
  /**
   * Whether the repository's directory is there, creating nothing: a volume remove asks it first,
   * so removing a volume that never had a snapshot writes nothing to the store.
   */
  hasRepository(): Promise<boolean>;
  /** The live data directory of a registered volume; E_VOLUME_NOT_FOUND otherwise. */
  dataPath(volume: string): Promise<string>;
  /**
   * Which volume of that name this is (`incarnationOf` its record), or undefined when there is
   * none: a snapshot records it, and a name recorded for an earlier volume of the same name is
   * not that of the volume there now (see RepositorySnapshots). Without it every name counts.
   */
  incarnation?(volume: string): Promise<string | undefined>;
  /** Called once the snapshot has read `dataPath`'s directory (a backend that mounted it for the read unmounts it). */
  releaseDataPath?(volume: string): Promise<void>;
  log: Logger;
  /**
   * How old a backup that no snapshot name references must be before a snapshot operation
   * deletes it (default ORPHAN_GRACE_MS). A name is written right after its backup, so only a
   * crash in between leaves one that old; the margin covers another node's snapshot in flight
   * and clock skew between nodes.
   */
  orphanGraceMs?: number;
}

/** See SnapshotHost.orphanGraceMs. */
export const ORPHAN_GRACE_MS = 60 * 60_000;

const SnapshotNameRecordSchema = z.object({
  format: z.literal(1),
  name: VolumeNameSchema,
  volume: VolumeNameSchema,
  createdAt: z.string(),
  backupId: BackupIdSchema,
  /** The volume's incarnation when the snapshot was taken (added later: optional; absent matches any). */
  incarnation: z.string().max(300).optional(),
});
type SnapshotNameRecord = z.infer<typeof SnapshotNameRecordSchema>;
const nameKey = (volume: string, name: string): string => `snapshots/${volume}/${name}`;

/** Which volume of a name a record is: the node that created it and when (to the millisecond). */
export function incarnationOf(record: { createdAt: string; createdBy: string }): string {
  return `${record.createdBy}@${record.createdAt}`;
}

function notFound(volume: string, name: string): StowageError {
  return new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `volume ${volume} has no snapshot ${name}`, { volume });
}

/**
 * A name recorded for an earlier volume of the same name: a snapshot that began on one node
 * while another removed the volume can write its name after the remove dealt with the volume's
 * snapshots. It must not show in (or be restored as) a later volume of that name; the next
 * remove of the name keeps it as a backup (see deleteAll), whatever it does with its own.
 */
function isStale(record: SnapshotNameRecord, current: string | undefined): boolean {
  return record.incarnation !== undefined && current !== undefined && record.incarnation !== current;
}

export class RepositorySnapshots implements SnapshotSupport {
  constructor(private readonly host: SnapshotHost) {}

  private async store(): Promise<BlobStore> {
    return new VfsBlobStore(await this.host.repositoryDir());
  }

  async createSnapshot(volume: string, snapshot: string, options: SnapshotReadOptions = {}): Promise<SnapshotRecord> {
    // Before the data: the snapshot is of the volume that was there when it began.
    const incarnation = await this.host.incarnation?.(volume);
    const dir = await this.host.dataPath(volume);
    const store = await this.store();
    if (await store.head(nameKey(volume, snapshot))) {
      const existing = await this.readName(store, volume, snapshot).catch(() => undefined);
      if (existing && isStale(existing, incarnation)) {
        throw new StowageError(ErrorCodes.SNAPSHOT_EXISTS, `the name ${snapshot} is held by a snapshot of an earlier volume ${volume}, taken on another ` +
          `node while that volume was being removed; delete snapshot ${snapshot} of ${volume} to free the name (it holds the earlier volume's data), or choose another name`, { volume });
      }
      throw new StowageError(ErrorCodes.SNAPSHOT_EXISTS, `volume ${volume} already has a snapshot ${snapshot}`, { volume });
    }
    let backup: Awaited<ReturnType<typeof backupTree>>;
    try {
      const repo = await Repository.openOrInit(store);
      // The volume's latest snapshot is the parent: unchanged files are not read again.
      backup = await backupTree(dir, repo, { volume, origin: { snapshot, backend: this.host.backend }, xattrs: options.xattrs,
        onWarning: (message) => this.host.log.warn(`snapshot ${snapshot} of volume ${volume}: ${message}`) }).catch(async (err: unknown) => {
        // What it stored is referenced by no record: freed now, not left to fill the volumes'
        // own disk (a snapshot that failed for want of space would have taken the rest of it).
        const freed = await this.collect(repo).catch((cleanup: unknown) => {
          this.host.log.warn(`the failed snapshot ${snapshot} of ${volume} left chunks; a later snapshot delete frees them: ${messageOf(cleanup)}`);
          return false;
        });
        if (!isStowageError(err, ErrorCodes.STORAGE_FULL)) throw err;
        // The store's own message speaks of backups; this one is the snapshot's.
        throw new StowageError(ErrorCodes.STORAGE_FULL, `snapshot ${snapshot} of volume ${volume} does not fit: snapshots are kept on the ` +
          `store's own disk, which is full (${describeCause(err.cause ?? err)}); ${freed ? 'what it had stored was freed again' : 'what it had stored is freed by the next snapshot delete'}. ` +
          'Free space there (delete older snapshots, or volumes no longer needed) and take the snapshot again', { volume, cause: err });
      });
    } finally {
      await this.host.releaseDataPath?.(volume).catch((err: unknown) =>
        this.host.log.warn(`after the snapshot ${snapshot} of ${volume}: ${messageOf(err)}`));
    }
    const repo = await Repository.open(store);
    const record: SnapshotNameRecord = { format: 1, name: snapshot, volume, createdAt: backup.startedAt, backupId: backup.id, ...(incarnation !== undefined ? { incarnation } : {}) };
    if (!(await store.put(nameKey(volume, snapshot), Buffer.from(JSON.stringify(record))))) {
      // Another snapshot took the name meanwhile: ours goes again. Tidying only: while another
      // holds the repository (a collection after its own lost race) the unnamed backup is left
      // to a later sweep, and the answer stays that the name is taken (a caller choosing names
      // tries the next one).
      await this.deleteRecord(repo, volume, backup.id).then(() => this.collect(repo)).catch((err: unknown) => {
        if (!isStowageError(err, ErrorCodes.BACKUP_LOCKED)) throw err;
        this.host.log.info(`snapshot ${snapshot} of ${volume} lost its name to another; its unnamed backup ${backup.id} is deleted by a later sweep: ${messageOf(err)}`);
      });
      throw new StowageError(ErrorCodes.SNAPSHOT_EXISTS, `volume ${volume} already has a snapshot ${snapshot}`, { volume });
    }
    await this.sweepOrphans(store, repo, volume, true);
    return { ...this.toRecord(record), ...(backup.warnings.length > 0 ? { warnings: backup.warnings } : {}) };
  }

  async listSnapshots(volume: string): Promise<SnapshotRecord[]> {
    const current = await this.host.incarnation?.(volume);
    const store = await this.store();
    const records: SnapshotNameRecord[] = [];
    for await (const { key } of listAll(store, `snapshots/${volume}/`)) {
      const name = key.split('/')[2];
      if (name === undefined) continue;
      const record = await this.readName(store, volume, name).catch((err: unknown) => {
        if (isStowageError(err, ErrorCodes.SNAPSHOT_NOT_FOUND)) return undefined; // deleted while listed
        throw err;
      });
      // A name an earlier volume of this name left (see isStale) is not this volume's.
      if (record && !isStale(record, current)) records.push(record);
    }
    // Backup ids sort by time to the millisecond; the name breaks ties.
    records.sort((a, b) => (a.backupId < b.backupId ? -1 : a.backupId > b.backupId ? 1 : a.name < b.name ? -1 : 1));
    return records.map((r) => this.toRecord(r));
  }

  /** Deletes one snapshot; also one an earlier volume of the name left (see isStale), which holds its name. */
  async deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    const store = await this.store();
    const record = await this.readName(store, volume, snapshot);
    if (isStale(record, await this.host.incarnation?.(volume))) {
      this.host.log.warn(`deleting snapshot ${snapshot} of ${volume}, taken of an earlier volume of that name (${record.incarnation})`);
    }
    const repo = await Repository.open(store);
    // The lock the backup's delete needs is taken first: while a gc holds the repository, the
    // delete is refused before it changes anything, instead of taking the name and failing.
    await withLock(store, { kind: 'shared', purpose: `delete of snapshot ${volume}/${snapshot}`, writesOnlyLocks: true }, async () => {
      // The name first: the snapshot is gone once its name is. A backup left behind by a
      // failure right after is an orphan the next sweep frees.
      await store.delete([nameKey(volume, snapshot)]);
      await this.deleteRecord(repo, volume, record.backupId);
    });
    await this.sweepOrphans(store, repo, volume, false);
    await this.collect(repo);
  }

  async readLive<T>(volume: string, work: (path: string) => Promise<T>): Promise<T> {
    const dir = await this.host.dataPath(volume);
    try {
      return await work(dir);
    } finally {
      await this.host.releaseDataPath?.(volume).catch((err: unknown) =>
        this.host.log.warn(`after reading ${volume} for a backup: ${messageOf(err)}`));
    }
  }

  async openSnapshot(volume: string, snapshot: string): Promise<SnapshotSource> {
    const store = await this.store();
    const record = await this.readName(store, volume, snapshot);
    if (isStale(record, await this.host.incarnation?.(volume))) throw notFound(volume, snapshot);
    const repository = await Repository.open(store);
    return { kind: 'backup', repository, volume, backupId: record.backupId, release: async () => repository.releasePackCache() };
  }

  /**
   * Deletes every snapshot of `volume` (the volume is being removed): their names, their
   * backups, then what no other backup needs. Snapshots of an earlier volume of the name (see
   * isStale), and backups without a name that began before this volume was created, are not
   * this volume's: nobody asked to delete them, so they are kept as retainAll keeps a retained
   * volume's (`kept`). `deleted`: how many of this volume's snapshots went.
   */
  async deleteAll(volume: string): Promise<{ deleted: number; kept?: RetainedSnapshots }> {
    const found = await this.volumeObjects(volume);
    if (!found) return { deleted: 0 };
    const { store, names, dir } = found;
    const repo = await Repository.open(store);
    const current = await this.host.incarnation?.(volume);
    let earlier: { names: number; backups: BackupRecord[] } = { names: 0, backups: [] };
    const key = retainedSnapshotsKey(volume, removalStamp());
    // Under the lock deleting the backups needs, taken first: refused (a gc holds the repository),
    // the volume's remove fails with every snapshot still there.
    await withLock(store, { kind: 'shared', purpose: `removal of the snapshots of ${volume}`, writesOnlyLocks: true }, async (lock) => {
      // Every backup of the volume, named or left by an interrupted snapshot.
      const backups = await repo.listBackups(volume);
      earlier = await this.earlierVolumes(store, volume, names, backups, current);
      for (const record of earlier.backups) {
        lock.assertHeld();
        await repo.putBackupRecord({ ...record, volume: key });
      }
      await this.dropVolume(store, repo, volume, names, backups);
    });
    await this.collect(repo);
    const deleted = names.length - earlier.names;
    if (earlier.backups.length === 0) return { deleted };
    const url = formatBackupUrl({ target: { scheme: 'vfs', path: dir }, volume: key });
    this.host.log.warn(`kept ${earlier.names} snapshot(s) of an earlier volume ${volume} as ${earlier.backups.length} backup(s) at ${url}: ` +
      'taken on another node while that volume was being removed, they finished after it, and only the removed volume\'s own snapshots are deleted with it');
    return { deleted, kept: { snapshots: earlier.names, backups: earlier.backups.length, url, ofEarlierVolume: true } };
  }

  /**
   * Of a volume's snapshot names and backups, those of an earlier volume of the name: names
   * recorded for another incarnation, their backups, and backups no name references that began
   * before `current` was created. None when the volume's incarnation is unknown.
   */
  private async earlierVolumes(store: BlobStore, volume: string, nameKeys: readonly string[], backups: readonly BackupRecord[], current: string | undefined,
  ): Promise<{ names: number; backups: BackupRecord[] }> {
    if (current === undefined) return { names: 0, backups: [] };
    const createdAt = Date.parse(current.slice(current.lastIndexOf('@') + 1));
    const staleById = new Map<string, boolean>();
    let names = 0;
    for (const key of nameKeys) {
      const name = key.split('/')[2];
      // One that cannot be read is deleted with the volume's, as before names recorded volumes.
      const record = name === undefined ? undefined : await this.readName(store, volume, name).catch(() => undefined);
      if (!record) continue;
      const stale = isStale(record, current);
      if (stale) names += 1;
      staleById.set(record.backupId, stale || staleById.get(record.backupId) === true);
    }
    const older = (b: BackupRecord) => Number.isFinite(createdAt) && Date.parse(b.startedAt) < createdAt;
    return { names, backups: backups.filter((b) => staleById.get(b.id) ?? older(b)) };
  }

  /**
   * Keeps the snapshots of `volume` (removed with its data retained) as backups of their own
   * under `retainedSnapshotsKey(volume, stamp)`, a name no volume can take, and frees the
   * volume's name of them: a new volume of that name starts without snapshots, and the kept
   * ones restore like any backup. A copy of each backup record goes first, the volume's names
   * and records after, so an interruption leaves them twice (the copies sharing every chunk),
   * never lost. Every backup of the volume is kept, named or left by an interrupted snapshot:
   * each record names the snapshot it was taken for. Undefined when there were none.
   */
  async retainAll(volume: string, stamp: string): Promise<RetainedSnapshots | undefined> {
    const found = await this.volumeObjects(volume);
    if (!found) return undefined;
    const { store, names, dir } = found;
    const key = retainedSnapshotsKey(volume, stamp);
    const repo = await Repository.open(store);
    let kept = 0;
    await withLock(store, { kind: 'shared', purpose: `keeping the snapshots of removed volume ${volume}`, writesOnlyLocks: true }, async (lock) => {
      const backups = await repo.listBackups(volume);
      for (const record of backups) {
        lock.assertHeld();
        await repo.putBackupRecord({ ...record, volume: key });
        kept += 1;
      }
      // Only the backups copied: one a snapshot on another node wrote meanwhile stays where it is.
      await this.dropVolume(store, repo, volume, names, backups);
    });
    const url = formatBackupUrl({ target: { scheme: 'vfs', path: dir }, volume: key });
    // Logged here, not only in the remove's answer: a remove that fails after this step still leaves them there.
    this.host.log.info(`kept the ${names.length} snapshot(s) of removed volume ${volume} as ${kept} backup(s) at ${url}`);
    return { snapshots: names.length, backups: kept, url };
  }

  /**
   * For a backend's description: the snapshots kept for volumes removed with their data
   * retained (see retainAll), as "N backup(s) of M removed volume(s) at URL"; undefined when
   * there are none. Creates nothing; lists the repository's backup records.
   */
  async keptSummary(): Promise<string | undefined> {
    if (!(await this.host.hasRepository())) return undefined;
    return keptSummaryOf(await this.host.repositoryDir());
  }

  /** The volume's snapshot names (keys) in the repository, when it has names or backups there. */
  private async volumeObjects(volume: string): Promise<{ store: BlobStore; dir: string; names: string[] } | undefined> {
    if (!(await this.host.hasRepository())) return undefined;
    const dir = await this.host.repositoryDir();
    const store = new VfsBlobStore(dir);
    const names: string[] = [];
    for await (const { key } of listAll(store, `snapshots/${volume}/`)) names.push(key);
    let backups = 0;
    for await (const _ of listAll(store, `backups/${volume}/`)) backups += 1;
    return names.length === 0 && backups === 0 ? undefined : { store, dir, names };
  }

  /** Deletes the volume's snapshot names, then the given backups of it. */
  private async dropVolume(store: BlobStore, repo: Repository, volume: string, names: string[], backups: readonly BackupRecord[]): Promise<void> {
    await deleteAll(store, names);
    for (const backup of backups) await deleteBackup(repo, volume, backup.id);
  }

  /**
   * Deletes the volume's backups that no snapshot name references and that finished more than
   * the grace period ago: left by a daemon killed between a snapshot's backup and its name. A
   * backup a name references is never touched, nor one young enough to be a snapshot still being
   * named; while any lock is live in the repository (a snapshot or delete running anywhere) the
   * sweep waits for a later operation. `collect` frees their chunks at once.
   */
  private async sweepOrphans(store: BlobStore, repo: Repository, volume: string, collect: boolean): Promise<void> {
    try {
      const now = Date.now();
      if ((await liveLocks(store, now)).length > 0) return;
      const named = new Set<string>();
      for await (const { key } of listAll(store, `snapshots/${volume}/`)) {
        const name = key.split('/')[2];
        if (name === undefined) continue;
        const record = await this.readName(store, volume, name).catch(() => undefined);
        // A name that cannot be read may still name a backup: nothing is swept this time.
        if (!record) return;
        named.add(record.backupId);
      }
      const grace = this.host.orphanGraceMs ?? ORPHAN_GRACE_MS;
      const orphans = (await repo.listBackups(volume))
        .filter((b) => !named.has(b.id) && now - Date.parse(b.finishedAt) >= grace);
      if (orphans.length === 0) return;
      for (const orphan of orphans) {
        await deleteBackup(repo, volume, orphan.id).catch((err: unknown) => {
          if (!isStowageError(err, ErrorCodes.BACKUP_NOT_FOUND)) throw err;
        });
      }
      this.host.log.warn(`deleted ${orphans.length} snapshot backup(s) of ${volume} that no snapshot names (${orphans.map((o) => o.id).join(', ')}): ` +
        'a snapshot interrupted before it was named');
      if (collect) await this.collect(repo);
    } catch (err) {
      // Tidying only: the snapshot operation itself succeeded.
      this.host.log.warn(`looking for unnamed snapshot backups of ${volume} failed: ${messageOf(err)}`);
    }
  }

  private async deleteRecord(repo: Repository, volume: string, backupId: string): Promise<void> {
    await deleteBackup(repo, volume, backupId).catch((err: unknown) => {
      if (!isStowageError(err, ErrorCodes.BACKUP_NOT_FOUND)) throw err;
    });
  }

  /**
   * Frees chunks; another node's snapshot running right now holds it off until the next delete.
   * True when it ran.
   */
  private async collect(repo: Repository): Promise<boolean> {
    return gc(repo).then(() => true, (err: unknown) => {
      if (!isStowageError(err, ErrorCodes.BACKUP_LOCKED)) throw err;
      this.host.log.info(`snapshot space is freed at the next snapshot delete: ${messageOf(err)}`);
      return false;
    });
  }

  private async readName(store: BlobStore, volume: string, name: string): Promise<SnapshotNameRecord> {
    const key = nameKey(volume, name);
    let data: Buffer;
    try {
      data = await store.get(key);
    } catch (err) {
      if (isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) throw notFound(volume, name);
      throw err;
    }
    const record = parseObject(SnapshotNameRecordSchema, data, `snapshot record ${key}`);
    if (record.volume !== volume || record.name !== name) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `snapshot record ${key} names ${record.volume}/${record.name}`, { volume });
    }
    return record;
  }

  private toRecord(r: SnapshotNameRecord): SnapshotRecord {
    return { name: r.name, volume: r.volume, createdAt: r.createdAt, details: { backupId: r.backupId } };
  }
}
