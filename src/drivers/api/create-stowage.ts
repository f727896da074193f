import { hostname } from 'node:os';
import { ContainerModule } from 'inversify';
import type { Backend, SnapshotRecord } from '../../core/backend.js';
import type { SnapshotOptions } from '../../core/volume-snapshots.js';
import type { HandMount } from '../../core/mount-reconcile.js';
import type { Logger } from '../../core/logger.js';
import { silentLogger } from '../../core/logger.js';
import type { FsPort } from '../../core/fs-port.js';
import { TOKENS } from '../../core/tokens.js';
import type {
  CreateResult, RemovePolicy, RemoveResult, VolumeInfo, VolumeManager,
} from '../../core/volume-manager.js';
import { buildContainer } from '../../container.js';
import { SHELL_TOKENS } from '../tokens.js';
import { wordFailure } from '../remedies.js';
import { StowageError } from '../../core/errors.js';
import type {
  BackupDetail, BackupService, BackupSummary, DeleteResult, ProgressOptions, VerifyResult,
} from '../../core/backup/service-contract.js';

export interface StowageOptions {
  /** Backend name or your own Backend implementation. @default 'vfs' */
  backend?: string | Backend;
  /** Backend options, e.g. `{ 'vfs.path': '/mnt/shared/volumes' }`. */
  options?: Record<string, string>;
  /** Node-local state directory. @default '/var/lib/stowage' */
  root?: string;
  /** @default the host name */
  nodeId?: string;
  /** @default 'delete' */
  onRemove?: RemovePolicy;
  /** @default silent */
  logger?: Logger;
  /** File system to use; tests pass memfs. @default node:fs/promises */
  fs?: FsPort;
}

/** The same operations the Docker plugin offers, as plain async calls. */
export interface Stowage {
  /** With option `backup` (a backup URL) the new volume is restored from that backup. */
  create(name: string, options?: Record<string, string>): Promise<CreateResult>;
  /** `retain` overrides the daemon's `onRemove` policy for this call; `force` deletes although (possibly dead) nodes still reference the volume. */
  remove(name: string, options?: { retain?: boolean; force?: boolean }): Promise<RemoveResult>;
  list(): Promise<VolumeInfo[]>;
  inspect(name: string): Promise<VolumeInfo>;
  mount(name: string, mountId: string): Promise<string>;
  unmount(name: string, mountId: string): Promise<void>;
  /**
   * Mounts a volume on this node for your own use, not a container's, and answers its path; it
   * stays mounted (across restarts) until unmountByHand with the same label, and the volume
   * cannot be removed meanwhile. Mounting a label again answers the same path.
   */
  mountByHand(name: string, label?: string): Promise<HandMount>;
  unmountByHand(name: string, label?: string): Promise<HandMount & { remaining: number }>;
  info(): Promise<Record<string, unknown>>;
  /**
   * Takes snapshot `name` of `volume` (every backend that has snapshots: vfs, glusterfs,
   * devicemapper). `consistent` pauses this node's containers that use the volume meanwhile;
   * `xattrs: false` leaves extended attributes out of a snapshot that reads the files (vfs,
   * glusterfs).
   */
  createSnapshot(volume: string, name: string, options?: SnapshotOptions): Promise<SnapshotRecord>;
  /** The volume's snapshots, oldest first. */
  listSnapshots(volume: string): Promise<SnapshotRecord[]>;
  deleteSnapshot(volume: string, name: string): Promise<void>;
  /**
   * Backs `volume` up into the repository at `options.dest` (e.g. `vfs:///srv/backups`), from
   * `options.snapshot` or from a snapshot taken for it (kept with `keepSnapshot`).
   */
  createBackup(volume: string, options: Parameters<BackupService['createBackup']>[1]): Promise<BackupDetail>;
  /** Backups in a repository (and volume, by option or in the URL), oldest first; in-progress ones last. */
  listBackups(dest: string, options?: { volume?: string }): Promise<BackupSummary[]>;
  inspectBackup(url: string): Promise<BackupDetail>;
  deleteBackup(url: string, options?: ProgressOptions): Promise<DeleteResult>;
  verifyBackup(url: string, options?: ProgressOptions): Promise<VerifyResult>;
  /** Creates volume `name` from a backup; a failed restore leaves no volume. */
  restoreVolume(name: string, url: string, options?: ProgressOptions & { volumeOptions?: Record<string, string> }): Promise<CreateResult>;
  /** Waits for background work and releases the backend. */
  close(): Promise<void>;
  readonly manager: VolumeManager;
}

/** The embedding API's shell: the Stowage object over the volume manager. */
export const apiModule = new ContainerModule(({ bind }) => {
  bind<Stowage>(SHELL_TOKENS.Stowage).toDynamicValue((ctx) =>
    stowageOver(ctx.get<VolumeManager>(TOKENS.VolumeManager), ctx.get<BackupService>(TOKENS.BackupService)));
});

/**
 * A failure that offers remedies, reworded for code: the methods and options of this API
 * instead of CLI flags. Same code, volume, node and remedies; the core's error is the cause.
 */
function inApiWords(err: unknown): unknown {
  if (!(err instanceof StowageError) || err.remedies.length === 0) return err;
  const { code, volume, node, remedies } = err;
  return new StowageError(code, wordFailure(err.message, remedies, 'api'), { volume, node, remedies, cause: err });
}

async function worded<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (err) {
    throw inApiWords(err);
  }
}

function stowageOver(manager: VolumeManager, backups: BackupService): Stowage {
  return {
    manager,
    create: (name, opts) => worded(() => manager.create(name, opts ?? {})),
    remove: (name, opts) => worded(() => manager.remove(name, opts ?? {})),
    list: () => worded(() => manager.list()),
    inspect: (name) => worded(() => manager.get(name)),
    mount: (name, id) => worded(() => manager.mount(name, id)),
    unmount: (name, id) => worded(() => manager.unmount(name, id)),
    mountByHand: (name, label) => worded(() => manager.mountByHand(name, label)),
    unmountByHand: (name, label) => worded(() => manager.unmountByHand(name, label)),
    info: () => worded(() => manager.info()),
    createSnapshot: (volume, name, opts) => worded(() => manager.createSnapshot(volume, name, opts ?? {})),
    listSnapshots: (volume) => worded(() => manager.listSnapshots(volume)),
    deleteSnapshot: (volume, name) => worded(() => manager.deleteSnapshot(volume, name)),
    createBackup: (volume, opts) => worded(() => backups.createBackup(volume, opts)),
    listBackups: (dest, opts) => worded(() => backups.listBackups(dest, opts)),
    inspectBackup: (url) => worded(() => backups.inspectBackup(url)),
    deleteBackup: (url, opts) => worded(() => backups.deleteBackup(url, opts)),
    verifyBackup: (url, opts) => worded(() => backups.verifyBackup(url, opts)),
    restoreVolume: (name, url, opts) => worded(() => backups.restoreVolume(name, url, opts)),
    close: () => manager.dispose(),
  };
}

export async function createStowage(options: StowageOptions = {}): Promise<Stowage> {
  const stowage = buildContainer({
    backend: options.backend ?? 'vfs',
    backendOptions: options.options ?? {},
    root: options.root ?? '/var/lib/stowage',
    nodeId: options.nodeId ?? hostname(),
    onRemove: options.onRemove ?? 'delete',
    logger: options.logger ?? silentLogger,
    fs: options.fs,
  }, apiModule).get<Stowage>(SHELL_TOKENS.Stowage);
  await worded(() => stowage.manager.init());
  return stowage;
}
