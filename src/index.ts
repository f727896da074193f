export { createStowage, type Stowage, type StowageOptions } from './drivers/api/create-stowage.js';
export type {
  Backend, BackendCapabilities, BackendScope, CreateRequest, RemoveOutcome, RemoveRequest, SnapshotRecord, SnapshotSupport,
  StorageHealth, VolumeRecord, VolumeUsage,
} from './core/backend.js';
export { ErrorCodes, StowageError, isStowageError, type ErrorCode, type Remedy } from './core/errors.js';
export { CommandError, isCommandError, type CommandFailureReason } from './core/command-runner.js';
export { createRequest } from './core/create-request.js';
export type { VolumeOptions } from './core/options.js';
export type { CreateResult, RemoveResult, VolumeInfo, RemovePolicy } from './core/volume-manager.js';
export { validateVolumeName } from './core/names.js';
export type {
  BackupDetail, BackupRequestOptions, BackupSummary, DeleteResult, JobProgress, ProgressOptions, VerifyResult,
} from './core/backup/service-contract.js';
export type { SnapshotOptions } from './core/volume-snapshots.js';
export type { HandMount } from './core/mount-reconcile.js';
export { formatBackupUrl, parseBackupUrl, type BackupTarget, type BackupUrl } from './core/backup/backup-url.js';
