import type { CreateResult } from '../volume-manager.js';
import type { BackupStats } from './format.js';

/**
 * What the core's backup service offers the shells (daemon control API, CLI, embedding API).
 * The shells depend on these types only; the core implements them (see backup-service.ts).
 *
 * Backup URLs name a repository, a volume and a backup:
 *   vfs:///srv/backups                          a repository (a directory on any filesystem)
 *   vfs:///srv/backups?volume=pg                that volume's backups in it
 *   vfs:///srv/backups?volume=pg&backup=<id>    one backup
 * parseBackupUrl/formatBackupUrl (backup-url.ts) are the only code that reads or writes them.
 */

/** What a long operation reports as it goes; every field but `phase` counts up. */
export interface JobProgress {
  phase: 'snapshot' | 'scan' | 'backup' | 'copy' | 'restore' | 'verify' | 'delete' | 'gc';
  /** What `files` and `totalFiles` count: files (the default), or chunks (a whole-repository verify reads chunks pack by pack). */
  unit?: 'files' | 'chunks';
  files: number;
  bytes: number;
  /** Known once the source was measured (a snapshot or backup records its totals); absent before. */
  totalFiles?: number;
  totalBytes?: number;
}

export interface ProgressOptions {
  onProgress?: (progress: JobProgress) => void;
  /** Aborting stops the work at the next safe point and fails it with E_CANCELLED. */
  signal?: AbortSignal;
}

/** A backup as `backup list` and `backup inspect` show it. */
export interface BackupSummary {
  /** The backup's own URL (repository + volume + backup id): what restore and delete take. */
  url: string;
  volume: string;
  id: string;
  /** The snapshot it was read from, when it was taken from one. */
  snapshot?: string;
  /** The backend the volume was on (file-level backups restore into any backend). */
  backend?: string;
  /** Absent for an unreadable record. */
  host?: string;
  /** Absent for an unreadable record. */
  startedAt?: string;
  /** Absent while in progress. */
  finishedAt?: string;
  /**
   * `unreadable`: an object among the backup records that does not load (damaged, or not one
   * stowage wrote); `key` and `problem` say which and what to do. The others are listed all the same.
   */
  state: 'complete' | 'in-progress' | 'unreadable';
  /** Only for an unreadable record: its key in the repository. */
  key?: string;
  /** Only for an unreadable record: why it does not load, and what to do. */
  problem?: string;
  stats?: BackupStats;
  /** `file`: the volume's files, restorable into any backend; `block`: a devicemapper device's blocks. */
  kind?: 'file' | 'block';
}

export interface BackupDetail extends BackupSummary {
  /** The backup it was made incrementally from (its files cache), if any. */
  parent?: string;
  warnings: string[];
  /** A block backup's device. */
  device?: { sizeBytes: number; blockSize: number; filesystem: string };
  /** How it was made (a block backup: incremental from which base, or a full read and why). */
  notes?: string[];
  /** In the answer of the create that made it: the destination held no repository before this backup. */
  repositoryCreated?: true;
}

export interface DeleteResult {
  url: string;
  /** Packs the garbage collection after the delete removed, and their bytes (0 when it could not run). */
  deletedPacks: number;
  freedBytes: number;
  /**
   * Why the garbage collection after the delete freed nothing: another operation held the
   * repository (a later delete frees it), or it failed (the backup is deleted all the same).
   */
  notFreed?: string;
}

export interface VerifyResult {
  url: string;
  /** Checking a whole repository (a URL naming no backup): how many backups it holds. */
  backups?: number;
  files: number;
  chunks: number;
  bytes: number;
}

/** What a backup is asked to do: createBackup's options, which checkRequest checks before any work. */
export interface BackupRequestOptions {
  /** The repository URL (e.g. `vfs:///srv/backups`). */
  dest: string;
  /** An existing snapshot to back up; without it one is taken (or the live data read, on vfs and glusterfs). */
  snapshot?: string;
  /** For a snapshot taken here: pause this node's containers using the volume meanwhile (see VolumeManager.createSnapshot). */
  consistent?: boolean;
  /** With `consistent`: take it although other nodes use the volume. */
  force?: boolean;
  /** `file` (the default) or `block` (devicemapper only; see README "Block-level backups"). */
  kind?: 'file' | 'block';
  /**
   * false: extended attributes are not read (see SnapshotReadOptions); the record notes it.
   * Refused for block backups, and for an existing snapshot that is itself a read (vfs, glusterfs).
   */
  xattrs?: boolean;
}

export interface BackupService {
  /**
   * Backs a volume up to the repository at `dest` (a repository URL). Without `snapshot`, takes a
   * snapshot first (and deletes it afterwards unless `keepSnapshot`), so the backup is what the
   * volume held at one moment as far as the backend can promise.
   */
  createBackup(volume: string, options: ProgressOptions & BackupRequestOptions & { keepSnapshot?: boolean }): Promise<BackupDetail>;
  /**
   * What createBackup checks before any work: the destination (the URL, the volume it names,
   * that it is outside stowage's own storage) and the options together. A caller that runs the
   * backup later (a job) refuses a bad request at once.
   */
  checkRequest(volume: string, options: BackupRequestOptions): Promise<unknown>;
  /** Complete backups and, from live locks, those in progress; oldest first. */
  listBackups(dest: string, options?: { volume?: string }): Promise<BackupSummary[]>;
  inspectBackup(url: string): Promise<BackupDetail>;
  /** Deletes the backup's record, then frees what no other backup references. */
  deleteBackup(url: string, options?: ProgressOptions): Promise<DeleteResult>;
  /**
   * What deleteBackup checks before it changes anything: that the repository is outside
   * stowage's own storage (but for kept snapshots) and holds that backup. A caller that runs the
   * delete later (a job) refuses a bad request at once.
   */
  checkDelete(url: string): Promise<unknown>;
  /**
   * Reads back and re-hashes every chunk of the backup; fails naming the first missing or corrupt
   * one. Given a repository URL (no backup named), checks the whole repository: each blob any
   * backup needs once, going on past problems, and fails listing them all and the backups they touch.
   */
  verifyBackup(url: string, options?: ProgressOptions): Promise<VerifyResult>;
  /**
   * Creates volume `name` (options as for create) and restores the backup into it. On any failure
   * the new volume is removed again, so no half-restored volume is left.
   */
  restoreVolume(name: string, url: string, options?: ProgressOptions & { volumeOptions?: Record<string, string> }): Promise<CreateResult>;
}

/**
 * The default kind of backup: file-level, which restores into any backend (a block backup
 * restores into devicemapper only); block backups are asked for (see README).
 */
export const DEFAULT_BACKUP_KIND = 'file';

/** The volume option that makes a create a restore: `-o backup=URL`. */
export const RESTORE_OPTION = 'backup';

export type { CreateResult };
