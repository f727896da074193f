import { inject, injectable } from 'inversify';
import { assertTargetReachable, openTarget } from '../../backup-targets/open-target.js';
import type { Backend, SnapshotReadOptions, SnapshotSource, SnapshotSupport } from '../backend.js';
import { ErrorCodes, StowageError, isStowageError, messageOf } from '../errors.js';
import type { Logger } from '../logger.js';
import { KeyedMutex } from '../keyed-mutex.js';
import { validateVolumeName } from '../names.js';
import { randomHex } from '../random-hex.js';
import { TOKENS } from '../tokens.js';
import type { VolumeManager } from '../volume-manager.js';
import { formatBackupUrl, parseBackupUrl, parseOneBackupUrl, parseRepositoryUrl, type BackupTarget } from './backup-url.js';
import type { BackupParents } from './backup-parents.js';
import type { OwnStorage } from './own-storage.js';
import { BACKUP_KINDS, blockSupportOf, createBlockBackup } from './block-backup-service.js';
import { copyBackup } from './copy-backup.js';
import {
  assertVolumeName, backupTree, checkRepository, deleteBackup, gc, liveLocks, Repository, verifyBackup, type BackupRecord,
} from './index.js';
import {
  DEFAULT_BACKUP_KIND, RESTORE_OPTION, type BackupDetail, type BackupService, type BackupSummary, type CreateResult, type JobProgress,
  type BackupRequestOptions, type DeleteResult, type ProgressOptions, type VerifyResult,
} from './service-contract.js';
import { VolumeNameSchema } from './format.js';
import { isRecordFault, unreadableRecord } from './objects.js';

const IN_PROGRESS = /^backup of ([A-Za-z0-9][A-Za-z0-9_.-]{0,127})$/;

/**
 * The backup service over the volume manager and its backend. A backup reads a snapshot: the
 * one named, or one taken for it and deleted after; where a snapshot would itself be a
 * file-by-file read of the live data (vfs, glusterfs), a backup that names none reads the live
 * data straight into the destination instead. A snapshot that is itself a backup (vfs,
 * glusterfs) is copied blob by blob into the destination, only what it lacks; a snapshot that
 * is a tree (devicemapper) is backed up from its read-only mount, with the files cache of the
 * volume's previous backup in the destination.
 */
@injectable()
export class CoreBackupService implements BackupService {
  private readonly oneAtATime = new KeyedMutex();

  constructor(
    @inject(TOKENS.VolumeManager) private readonly manager: VolumeManager,
    @inject(TOKENS.Backend) private readonly backend: Backend,
    @inject(TOKENS.Logger) private readonly log: Logger,
    @inject(TOKENS.BackupParents) private readonly parents: BackupParents,
    @inject(TOKENS.OwnStorage) private readonly ownStorage: OwnStorage,
  ) {}

  private snapshotSupport(volume: string): SnapshotSupport {
    const support = this.backend.snapshots;
    if (!support) {
      throw new StowageError(ErrorCodes.NOT_SUPPORTED, `the ${this.backend.name} backend cannot back up volumes: it has no snapshots to read them from (volume ${volume})`,
        { volume, remedies: [{ action: 'use-backend', capability: 'snapshots' }] });
    }
    return support;
  }

  async checkRequest(volume: string, options: BackupRequestOptions): Promise<BackupTarget> {
    const target = await this.checkDestination(volume, options.dest);
    if (options.snapshot !== undefined) validateVolumeName(options.snapshot, 'snapshot name');
    if (options.snapshot !== undefined && options.consistent) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `consistent applies to a snapshot taken for the backup, not to the existing snapshot ${options.snapshot}`, { volume });
    }
    const kind = options.kind ?? DEFAULT_BACKUP_KIND;
    if (!(BACKUP_KINDS as readonly string[]).includes(kind)) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `backup kind ${JSON.stringify(kind)} is not one of ${BACKUP_KINDS.join(', ')}`, { volume });
    }
    if (options.xattrs === false && kind === 'block') {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, 'a block backup copies the filesystem whole, extended attributes with it: they cannot be left out', { volume });
    }
    // A snapshot that is not there fails the request, not a job started for it.
    if (options.snapshot !== undefined && !(await this.manager.listSnapshots(volume)).some((s) => s.name === options.snapshot)) {
      throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `volume ${volume} has no snapshot ${options.snapshot}`, { volume });
    }
    if (options.xattrs === false && options.snapshot !== undefined && this.snapshotSupport(volume).readLive) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `snapshot ${options.snapshot} of ${volume} already holds what was read when it was taken: ` +
        'extended attributes can be left out of a snapshot or backup that reads the volume, not of a copy of one', { volume });
    }
    return target;
  }

  private async checkDestination(volume: string, destUrl: string): Promise<BackupTarget> {
    validateVolumeName(volume);
    const dest = parseRepositoryUrl(destUrl, 'the backup destination');
    if (dest.volume !== undefined && dest.volume !== volume) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `the destination ${destUrl} names volume ${dest.volume}, not ${volume}`, { volume });
    }
    await this.ownStorage.assertOutside(dest.target, 'the backup destination');
    return dest.target;
  }

  async createBackup(volume: string, options: Parameters<BackupService['createBackup']>[1]): Promise<BackupDetail> {
    const target = await this.checkRequest(volume, options);
    // Two backups of one volume into one repository at once would each store all that the other
    // stores (neither sees the other's packs before its record), and gc frees neither copy: the
    // second waits, and then reads only what changed since the first.
    const turn = { started: false };
    const queued = this.oneAtATime.run(`${volume}\0${JSON.stringify(target)}`, () => {
      turn.started = true;
      options.signal?.throwIfAborted();
      return this.createBackupNow(volume, options, target);
    });
    return options.signal ? cancellableWhileWaiting(queued, turn, options.signal) : queued;
  }

  private async createBackupNow(volume: string, options: Parameters<BackupService['createBackup']>[1], target: BackupTarget): Promise<BackupDetail> {
    const dest = { target };
    const kind = options.kind ?? DEFAULT_BACKUP_KIND;
    const support = this.snapshotSupport(volume);
    const xattrs = options.xattrs === false ? { xattrs: false } : {};
    if (kind === 'block') {
      const blocks = blockSupportOf(this.backend.blocks, this.backend.name, volume);
      await this.manager.get(volume);
      await assertTargetReachable(dest.target, { signal: options.signal });
      const repo = await Repository.openOrInit(openTarget(dest.target, { signal: options.signal }));
      const record = await createBlockBackup(this.manager, blocks, this.log, this.backend.name, volume, repo,
        { snapshot: options.snapshot, consistent: options.consistent, force: options.force, signal: options.signal }, (progress) => {
          options.signal?.throwIfAborted();
          options.onProgress?.(progress);
        });
      return this.detail(dest.target, record, repo.createdNow);
    }
    await this.manager.get(volume);
    // Before a snapshot is taken for nothing.
    await assertTargetReachable(dest.target, { signal: options.signal });
    // An aborted signal stops the work at its next progress report: the library then fails the
    // step (a backup or copy writes no record, its packs go at the next gc).
    const report = (progress: JobProgress) => {
      options.signal?.throwIfAborted();
      options.onProgress?.(progress);
    };
    if (options.snapshot === undefined && !options.keepSnapshot && support.readLive) {
      // A snapshot here is itself a file-by-file read of the live data: reading it straight
      // into the destination holds the same, costs one read instead of two, and lets the
      // volume's previous backup there serve as the files cache.
      const repo = await Repository.openOrInit(openTarget(dest.target, { signal: options.signal }));
      report({ phase: 'backup', files: 0, bytes: 0 });
      const parent = await this.parents.parentFor(repo.config.id, volume);
      const record = await this.manager.readLiveVolume(volume, { consistent: options.consistent, force: options.force }, (path) =>
        backupTree(path, repo, {
          volume, parent, origin: { backend: this.backend.name }, onProgress: (p) => report({ phase: 'backup', files: p.files, bytes: p.bytes }), ...xattrs,
          signal: options.signal,
        }));
      await this.rememberParent(repo, record);
      return this.detail(dest.target, record, repo.createdNow);
    }
    const taken = options.snapshot === undefined;
    const snapshot = options.snapshot ?? `backup-${new Date().toISOString().replace(/[-:]/g, '').replace('.', '')}-${randomHex(4)}`;
    if (taken) {
      report({ phase: 'snapshot', files: 0, bytes: 0 });
      // A snapshot that reads the files leaves the attributes out itself; another (devicemapper)
      // holds them all, and the backup below reads it without them.
      await this.manager.createSnapshot(volume, snapshot, { consistent: options.consistent, force: options.force, ...(support.readLive ? xattrs : {}) });
    }
    try {
      options.signal?.throwIfAborted();
      const source = await support.openSnapshot(volume, snapshot);
      try {
        const repo = await Repository.openOrInit(openTarget(dest.target, { signal: options.signal }));
        const record = await this.backUp(source, volume, snapshot, repo, report, { ...xattrs, signal: options.signal });
        return this.detail(dest.target, record, repo.createdNow);
      } finally {
        await source.release().catch((err: unknown) => this.log.warn(`releasing snapshot ${snapshot} of ${volume}: ${messageOf(err)}`));
      }
    } finally {
      if (taken && !options.keepSnapshot) {
        await this.manager.deleteSnapshot(volume, snapshot).catch((err: unknown) =>
          this.log.error(`the backup of ${volume} could not delete its snapshot ${snapshot}; delete it by hand: ${messageOf(err)}`));
      }
    }
  }

  private async backUp(source: SnapshotSource, volume: string, snapshot: string, repo: Repository, report: (p: JobProgress) => void,
    read: SnapshotReadOptions & { signal?: AbortSignal }): Promise<BackupRecord> {
    const origin = { snapshot, backend: this.backend.name };
    if (source.kind === 'backup') {
      const original = await source.repository.readBackupRecord(source.volume, source.backupId);
      const totals = { totalFiles: original.stats.files, totalBytes: original.stats.bytes };
      report({ phase: 'copy', files: 0, bytes: 0, ...totals });
      const { record } = await copyBackup(source.repository, source.volume, source.backupId, repo, {
        volume, origin, onProgress: (p) => report({ phase: 'copy', files: p.files, bytes: p.bytes, ...totals }), onWarning: this.warn, signal: read.signal,
      });
      // A copy written from here is this node's as much as a read is: the next backup goes on from it.
      await this.rememberParent(repo, record);
      return record;
    }
    report({ phase: 'backup', files: 0, bytes: 0 });
    const record = await backupTree(source.path, repo, {
      volume, origin, parent: await this.parents.parentFor(repo.config.id, volume), onProgress: (p) => report({ phase: 'backup', files: p.files, bytes: p.bytes }),
      ...read,
    });
    await this.rememberParent(repo, record);
    return record;
  }

  /** The backup is made whatever happens here: a pointer not kept only makes the next one read every file. */
  private async rememberParent(repo: Repository, record: BackupRecord): Promise<void> {
    await this.parents.remember(repo.config.id, record).catch((err: unknown) =>
      this.log.warn(`backup ${record.volume}/${record.id} is made, but this node could not note it as the next backup's parent: ${messageOf(err)}`));
  }

  async listBackups(destUrl: string, options: { volume?: string } = {}): Promise<BackupSummary[]> {
    const dest = parseRepositoryUrl(destUrl, 'a backup list');
    const volume = options.volume ?? dest.volume;
    // The repository's rule, not a new volume's: a repository holds names no volume can take
    // (a removed volume's kept snapshots, another tool's backups).
    if (volume !== undefined) assertVolumeName(volume);
    if (options.volume !== undefined && dest.volume !== undefined && options.volume !== dest.volume) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `${destUrl} names volume ${dest.volume}, not ${options.volume}`);
    }
    const repo = await Repository.open(openTarget(dest.target));
    // One record that does not load must not hide the others: it is listed as what it is.
    const unreadable: BackupSummary[] = [];
    const done: BackupSummary[] = (await repo.listBackups(volume, {
      onBroken: (key, err) => {
        if (!isRecordFault(err)) throw err;
        const [, vol = '', id = key] = key.split('/');
        unreadable.push({
          url: formatBackupUrl({ target: dest.target, ...(VolumeNameSchema.safeParse(vol).success ? { volume: vol } : {}) }),
          volume: vol, id, state: 'unreadable', key, problem: unreadableRecord(key, repo.store.location, err).message,
        });
      },
    })).map((r) => this.summary(dest.target, r));
    const running: BackupSummary[] = [];
    for (const lock of await liveLocks(repo.store, Date.now())) {
      const match = IN_PROGRESS.exec(lock.purpose);
      if (!match || (volume !== undefined && match[1] !== volume)) continue;
      const [host] = lock.owner.split(':');
      running.push({
        url: formatBackupUrl({ target: dest.target, volume: match[1] }),
        volume: match[1]!,
        id: `in-progress-${lock.lockId}`,
        host: host ?? lock.owner,
        startedAt: new Date(lock.createdAt).toISOString(),
        state: 'in-progress',
      });
    }
    running.sort((a, b) => (a.startedAt! < b.startedAt! ? -1 : 1));
    return [...done, ...unreadable, ...running];
  }

  async inspectBackup(url: string): Promise<BackupDetail> {
    const { target, volume, backup } = parseOneBackupUrl(url);
    const repo = await Repository.open(openTarget(target));
    return this.detail(target, await repo.readBackupRecord(volume, backup));
  }

  async checkDelete(url: string): Promise<BackupDetail> {
    const { target, volume } = parseOneBackupUrl(url);
    await this.ownStorage.assertOutside(target, 'the repository', volume, 'delete');
    return this.inspectBackup(url);
  }

  async deleteBackup(url: string, options: ProgressOptions = {}): Promise<DeleteResult> {
    const { target, volume, backup } = parseOneBackupUrl(url);
    await this.ownStorage.assertOutside(target, 'the repository', volume, 'delete');
    const repo = await Repository.open(openTarget(target));
    options.signal?.throwIfAborted();
    options.onProgress?.({ phase: 'delete', files: 0, bytes: 0 });
    await deleteBackup(repo, volume, backup, { signal: options.signal, waitForGc: true, onProgress: () => options.signal?.throwIfAborted() });
    options.onProgress?.({ phase: 'gc', files: 0, bytes: 0 });
    try {
      const freed = await gc(repo);
      return { url, deletedPacks: freed.deletedPacks, freedBytes: freed.deletedBytes };
    } catch (err) {
      // The backup is deleted whatever the garbage collection does: the answer says so, and why
      // nothing was freed. Locked: its chunks go with the next delete that gets the lock.
      const notFreed = isStowageError(err, ErrorCodes.BACKUP_LOCKED)
        ? `a later delete frees it (${messageOf(err)})`
        : `the garbage collection failed: ${messageOf(err)}`;
      this.log.warn(`backup ${volume}/${backup} is deleted; nothing was freed: ${notFreed}`);
      return { url, deletedPacks: 0, freedBytes: 0, notFreed };
    }
  }

  private readonly warn = (message: string): void => this.log.warn(message);

  async verifyBackup(url: string, options: ProgressOptions = {}): Promise<VerifyResult> {
    const named = parseBackupUrl(url);
    if (named.volume === undefined) {
      const repo = await Repository.open(openTarget(named.target, { signal: options.signal }));
      const checked = await checkRepository(repo, {
        onWarning: this.warn,
        onProgress: (p) => {
          options.signal?.throwIfAborted();
          options.onProgress?.({
            phase: 'verify', unit: 'chunks', files: p.entries, bytes: p.bytes,
            ...(p.totalEntries !== undefined ? { totalFiles: p.totalEntries } : {}),
            ...(p.totalBytes !== undefined ? { totalBytes: p.totalBytes } : {}),
          });
        },
      });
      return { url, backups: checked.backups, files: checked.files, chunks: checked.chunks, bytes: checked.bytes };
    }
    const { target, volume, backup } = parseOneBackupUrl(url, 'verify takes one backup (?volume=NAME&backup=ID) or a whole repository (no volume)');
    const repo = await Repository.open(openTarget(target, { signal: options.signal }));
    const record = await repo.readBackupRecord(volume, backup);
    const totals = { totalFiles: record.stats.files, totalBytes: record.stats.bytes };
    const result = await verifyBackup(repo, volume, backup, {
      onWarning: this.warn,
      onProgress: (p) => {
        options.signal?.throwIfAborted();
        options.onProgress?.({ phase: 'verify', files: p.files, bytes: p.bytes, ...totals });
      },
    });
    return { url, ...result };
  }

  async restoreVolume(name: string, url: string, options: ProgressOptions & { volumeOptions?: Record<string, string> } = {}): Promise<CreateResult> {
    const volumeOptions = options.volumeOptions ?? {};
    if (Object.hasOwn(volumeOptions, RESTORE_OPTION)) {
      throw new StowageError(ErrorCodes.INVALID_OPTION, `the backup to restore is given once, as the URL, not also as option ${RESTORE_OPTION}`, { volume: name });
    }
    return this.manager.create(name, { ...volumeOptions, [RESTORE_OPTION]: url }, options);
  }

  private summary(target: BackupTarget, r: BackupRecord): BackupSummary {
    return {
      url: formatBackupUrl({ target, volume: r.volume, backup: r.id }),
      volume: r.volume,
      id: r.id,
      ...(r.snapshot !== undefined ? { snapshot: r.snapshot } : {}),
      ...(r.backend !== undefined ? { backend: r.backend } : {}),
      host: r.host,
      startedAt: r.startedAt,
      finishedAt: r.finishedAt,
      state: 'complete',
      stats: r.stats,
      kind: r.kind === 'blocks' ? 'block' : 'file',
    };
  }

  private detail(target: BackupTarget, r: BackupRecord, repositoryCreated = false): BackupDetail {
    return {
      ...this.summary(target, r), ...(r.parent !== undefined ? { parent: r.parent } : {}), warnings: r.warnings,
      ...(r.device ? { device: { sizeBytes: r.device.sizeBytes, blockSize: r.device.blockSize, filesystem: r.device.filesystem } } : {}),
      ...(r.notes ? { notes: r.notes } : {}),
      ...(repositoryCreated ? { repositoryCreated: true as const } : {}),
    };
  }
}

/**
 * A cancel while `work` waits for its turn ends the wait at once (the task, when its turn comes,
 * stops at its first step); once started, the work stops at its next safe point as always, and
 * ends before this does, so nothing it holds outlives the answer.
 */
function cancellableWhileWaiting<T>(work: Promise<T>, turn: { started: boolean }, signal: AbortSignal): Promise<T> {
  work.catch(() => undefined);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => { if (!turn.started) reject(signal.reason as Error); };
    if (signal.aborted) onAbort();
    signal.addEventListener('abort', onAbort, { once: true });
    void work.then(resolve, reject).finally(() => signal.removeEventListener('abort', onAbort));
  });
}
