/**
 * Backups as a library: a repository format on any BlobStore, content-defined chunking,
 * file-level backup and verified restore, locks and garbage collection. The daemon, CLI and
 * embedding API build on these.
 */
export { assertValidKey, deleteAll, listAll, MAX_DELETE_BATCH, MAX_LIST_PAGE, type BlobStore, type ListedObject, type ListOptions, type ListPage } from './blob-store.js';
export { Chunker, chunkStream, DEFAULT_CHUNKER, type ChunkerParams } from './chunker.js';
export { DEFAULT_CODEC, type Codec } from './codec.js';
export { BackupIdSchema, comparePaths, FORMAT_VERSION, newBackupId, VolumeNameSchema, type BackupRecord, type BackupStats, type Entry, type RepoConfig } from './format.js';
export { acquireLock, DEFAULT_LOCK_TTL_MS, liveLocks, withLock, type LockKind, type LockOptions, type RepoLock } from './locks.js';
export { backupRecordDigest, DEFAULT_PACK_SIZE, Repository, type InitOptions } from './repository.js';
export { assertVolumeName, parseObject } from './objects.js';
export { backupTree, type BackupOptions } from './backup.js';
export { deleteBackup, gc, verifyBackup, type GcOptions, type GcResult } from './maintenance.js';
export { checkRepository, type CheckResult } from './check.js';
export type { CommonOptions, Progress } from './options.js';
export { restoreTree, type RestoreOptions } from './restore.js';
