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
import { ErrorCodes, StowageError, messageOf } from '../../core/errors.js';
import { callOptionSchemas, callOptions, checkStowageOptions } from './api-input.js';
import { isPlainObject } from '../../core/schema/option-map.js';
import { RESTORE_OPTION } from '../../core/backup/service-contract.js';
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
  /**
   * Cancels the backups, restores, verifies and deletes still running (they fail with
   * E_CANCELLED, as under a daemon's stop), waits for every call in flight and for background
   * work, then releases the backend and the state root. Later calls are refused; closing again
   * waits for the same close.
   */
  close(): Promise<void>;
  readonly manager: VolumeManager;
}

/** The embedding API's shell: the Stowage object over the volume manager. */
export const apiModule = new ContainerModule(({ bind }) => {
  bind<Stowage>(SHELL_TOKENS.Stowage).toDynamicValue((ctx) =>
    stowageOver(ctx.get<VolumeManager>(TOKENS.VolumeManager), ctx.get<BackupService>(TOKENS.BackupService), ctx.get<Logger>(TOKENS.Logger)));
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

/** The caller's abort, as E_CANCELLED: its own reason (a StowageError of that code) or one that says it. */
function cancelledByCaller(reason: unknown): StowageError {
  if (reason instanceof StowageError && reason.code === ErrorCodes.CANCELLED) return reason;
  const said = reason instanceof Error && reason.name !== 'AbortError' ? `: ${reason.message}` : typeof reason === 'string' ? `: ${reason}` : '';
  return new StowageError(ErrorCodes.CANCELLED, `cancelled by the caller${said}`, { cause: reason });
}

/**
 * One instance's calls. Once close() begins, calls are refused; the long ones running (backups,
 * restores, verifies, deletes) are cancelled as the daemon's stop cancels its jobs, and every call
 * in flight is waited for before the backend and the state root's lock are let go: a closed
 * instance must not act on a root that another instance may hold by then.
 */
class InstanceCalls {
  private closing: Promise<void> | undefined;
  private readonly inFlight = new Set<Promise<unknown>>();
  private readonly cancels = new Set<AbortController>();

  constructor(private readonly log: Logger) {}

  run<T>(call: () => Promise<T>): Promise<T> {
    if (this.closing) return Promise.reject(new StowageError(ErrorCodes.INVALID_REQUEST, 'this stowage instance is closed: make a new one with createStowage()'));
    const running = worded(call);
    this.inFlight.add(running);
    const done = () => { this.inFlight.delete(running); };
    running.then(done, done);
    return running;
  }

  /**
   * A long operation: the caller's signal and close() cancel it with E_CANCELLED. A callback
   * that throws is the caller's bug, not the operation's: it is logged once and the work goes on.
   */
  long<T>(given: ProgressOptions, call: (progress: ProgressOptions) => Promise<T>): Promise<T> {
    return this.run(async () => {
      const controller = new AbortController();
      const byCaller = () => controller.abort(cancelledByCaller(given.signal?.reason));
      if (given.signal?.aborted) byCaller();
      else given.signal?.addEventListener('abort', byCaller, { once: true });
      this.cancels.add(controller);
      try {
        // An operation with nothing to do would never reach a point that looks at the signal.
        controller.signal.throwIfAborted();
        return await call({ signal: controller.signal, ...(given.onProgress ? { onProgress: this.guarded(given.onProgress) } : {}) });
      } finally {
        this.cancels.delete(controller);
        given.signal?.removeEventListener('abort', byCaller);
      }
    });
  }

  private guarded(onProgress: NonNullable<ProgressOptions['onProgress']>): NonNullable<ProgressOptions['onProgress']> {
    let told = false;
    return (progress) => {
      try {
        onProgress(progress);
      } catch (err) {
        if (told) return;
        told = true;
        this.log.warn(`an onProgress callback threw (${messageOf(err)}); the operation goes on, and later throws of it are not logged`);
      }
    };
  }

  close(dispose: () => Promise<void>): Promise<void> {
    this.closing ??= (async () => {
      for (const controller of this.cancels) controller.abort(new StowageError(ErrorCodes.CANCELLED, 'the stowage instance is closing'));
      await Promise.allSettled([...this.inFlight]);
      await dispose();
    })();
    return this.closing;
  }
}

function stowageOver(manager: VolumeManager, backups: BackupService, log: Logger): Stowage {
  const calls = new InstanceCalls(log);
  const run = <T>(call: () => Promise<T>) => calls.run(call);
  const { remove, createSnapshot, createBackup, listBackups, progress, restoreVolume } = callOptionSchemas;
  return {
    manager,
    // With `backup` it is a restore: close() and its progress treat it as one.
    create: (name, opts) => (isPlainObject(opts) && Object.hasOwn(opts, RESTORE_OPTION)
      ? calls.long({}, (p) => manager.create(name, opts, p))
      : run(() => manager.create(name, opts ?? {}))),
    remove: (name, opts) => run(async () => manager.remove(name, callOptions(remove, opts, 'remove'))),
    list: () => run(() => manager.list()),
    inspect: (name) => run(() => manager.get(name)),
    mount: (name, id) => run(() => manager.mount(name, id)),
    unmount: (name, id) => run(() => manager.unmount(name, id)),
    mountByHand: (name, label) => run(() => manager.mountByHand(name, label)),
    unmountByHand: (name, label) => run(() => manager.unmountByHand(name, label)),
    info: () => run(() => manager.info()),
    createSnapshot: (volume, name, opts) => run(async () => manager.createSnapshot(volume, name, callOptions(createSnapshot, opts, 'createSnapshot'))),
    listSnapshots: (volume) => run(() => manager.listSnapshots(volume)),
    deleteSnapshot: (volume, name) => run(() => manager.deleteSnapshot(volume, name)),
    createBackup: async (volume, opts) => {
      const { onProgress, signal, ...request } = callOptions(createBackup, opts, 'createBackup');
      return calls.long({ onProgress, signal }, (p) => backups.createBackup(volume, { ...request, ...p }));
    },
    listBackups: (dest, opts) => run(async () => backups.listBackups(dest, callOptions(listBackups, opts, 'listBackups'))),
    inspectBackup: (url) => run(() => backups.inspectBackup(url)),
    deleteBackup: async (url, opts) => calls.long(callOptions(progress, opts, 'deleteBackup'), (p) => backups.deleteBackup(url, p)),
    verifyBackup: async (url, opts) => calls.long(callOptions(progress, opts, 'verifyBackup'), (p) => backups.verifyBackup(url, p)),
    restoreVolume: async (name, url, opts) => {
      const { volumeOptions, ...given } = callOptions(restoreVolume, opts, 'restoreVolume');
      return calls.long(given, (p) => backups.restoreVolume(name, url, { ...p, ...(volumeOptions ? { volumeOptions } : {}) }));
    },
    close: () => calls.close(() => manager.dispose()),
  };
}

/**
 * Opens stowage on this node. Every option is checked as the daemon checks its flags (a bad one is
 * an E_INVALID_OPTION and nothing is touched); see StowageOptions for the defaults.
 */
export async function createStowage(options: StowageOptions = {}): Promise<Stowage> {
  const checked = checkStowageOptions(options);
  const stowage = buildContainer({
    backend: checked.backend,
    backendOptions: checked.backendOptions,
    root: checked.root,
    nodeId: checked.nodeId,
    onRemove: checked.onRemove,
    logger: checked.logger ?? silentLogger,
    fs: checked.fs,
  }, apiModule).get<Stowage>(SHELL_TOKENS.Stowage);
  await worded(() => stowage.manager.init());
  return stowage;
}
