/** Injection tokens for the core's interfaces (esbuild emits no decorator metadata, so every parameter names one). */
export const TOKENS = {
  Backend: Symbol.for('stowage.Backend'),
  Fs: Symbol.for('stowage.Fs'),
  CommandRunner: Symbol.for('stowage.CommandRunner'),
  Logger: Symbol.for('stowage.Logger'),
  ManagerConfig: Symbol.for('stowage.ManagerConfig'),
  MountTable: Symbol.for('stowage.MountTable'),
  RootLock: Symbol.for('stowage.RootLock'),
  Clock: Symbol.for('stowage.Clock'),
  Cluster: Symbol.for('stowage.Cluster'),
  /** The ContainerReferences port; an adapter module (the Docker engine's) binds it. */
  ContainerReferences: Symbol.for('stowage.ContainerReferences'),
  VolumeManager: Symbol.for('stowage.VolumeManager'),
  /** The BackupService (backup/service-contract.ts) over the VolumeManager. */
  BackupService: Symbol.for('stowage.BackupService'),
  /** The RestoreJournal (backup/restore-journal.ts): restores in progress on this node. */
  RestoreJournal: Symbol.for('stowage.RestoreJournal'),
  /** The BackupParents (backup/backup-parents.ts): the last backup this node made of each volume, per repository. */
  BackupParents: Symbol.for('stowage.BackupParents'),
  /** The OwnStorage (backup/own-storage.ts): where no backup repository may be. */
  OwnStorage: Symbol.for('stowage.OwnStorage'),
} as const;
