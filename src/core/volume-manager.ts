import { inject, injectable, optional } from 'inversify';
import type { Backend, SnapshotRecord, VolumeRecord } from './backend.js';
import { isoTime, type Clock } from './clock.js';
import { createRequest, undoCreate } from './create-request.js';
import type { Cluster } from './cluster/cluster.js';
import type { InvalidNodeRecord, NodeView } from './cluster/node-record.js';
import type { ContainerReferences } from './container-references.js';
import {
  mountByHand, mountedHere, mountOpsOf, reconcileAtStart, reconcileWithEngine, releaseMounts, undoMount, unmountByHand, unmountId,
  type HandMount, type MountHost, type MountOps,
} from './mount-reconcile.js';
import { ErrorCodes, StowageError, describeCause, isStowageError, messageOf, toStowageError, volumeNotFound } from './errors.js';
import type { Logger } from './logger.js';
import { KeyedMutex } from './keyed-mutex.js';
import { assertOutsideMountId } from './mount-kinds.js';
import { incarnationOf, type MountRecordView, type MountTable } from './mount-table.js';
import type { RootLock } from './root-lock.js';
import { validateVolumeName } from './names.js';
import { parseVolumeOptions } from './options.js';
import { TOKENS } from './tokens.js';
import { VolumeDescriptions } from './volume-descriptions.js';
import { VolumeRestores } from './volume-restores.js';
import { VolumeSnapshots, type ConsistencyOptions, type SnapshotOptions } from './volume-snapshots.js';
import type { RestoreJournal } from './backup/restore-journal.js';
import { takeRestoreOption } from './backup/restore-volume.js';
import type { ProgressOptions } from './backup/service-contract.js';
import {
  sameOrConflict, validateMountId,
  type BriefVolume, type CreateResult, type ManagerConfig, type RemoveResult, type VolumeInfo,
} from './volume-types.js';

export type {
  BriefVolume, CreateResult, ManagerConfig, RemovePolicy, RemoveResult, VolumeInfo,
} from './volume-types.js';

/**
 * The core: validates names and options, serialises operations per volume, counts mounts per
 * ID on this node and applies the delete policy. Backends only move bytes.
 */
@injectable()
export class VolumeManager {
  private readonly locks = new KeyedMutex();
  private readonly mountpoints = new Map<string, string>();
  private reconcileTimer?: NodeJS.Timeout;
  /** Snapshots, live reads and restores (volume-snapshots.ts, volume-restores.ts), queued on `locks`. */
  private readonly snapshots: VolumeSnapshots;
  private readonly restores: VolumeRestores;
  /** What Get and List answer (volume-descriptions.ts), with the last record seen per name. */
  private readonly descriptions: VolumeDescriptions;

  constructor(
    @inject(TOKENS.Backend) private readonly backend: Backend,
    @inject(TOKENS.MountTable) private readonly mounts: MountTable,
    @inject(TOKENS.ManagerConfig) private readonly config: ManagerConfig,
    @inject(TOKENS.Logger) private readonly log: Logger,
    @inject(TOKENS.RootLock) private readonly rootLock: RootLock,
    @inject(TOKENS.Clock) private readonly clock: Clock,
    @inject(TOKENS.Cluster) private readonly cluster: Cluster,
    @inject(TOKENS.ContainerReferences) private readonly engine: ContainerReferences,
    @inject(TOKENS.RestoreJournal) @optional() private readonly journal?: RestoreJournal,
  ) {
    this.snapshots = new VolumeSnapshots({
      backend: this.backend, locks: this.locks, cluster: this.cluster, engine: this.engine, mounts: this.mounts,
      nodeId: this.config.nodeId, log: this.log, assertWhole: (name) => this.restores.assertReadable(name),
    });
    this.restores = new VolumeRestores({
      create: (name, options, mark) => this.createVolume(name, options, mark),
      mount: (name, id, incarnation) => this.mountAs(name, id, { incarnation }),
      unmount: (name, id) => this.unmountAs(name, id),
      remove: (name, request) => this.removeVolume(name, request, true),
      blocks: () => this.backend.blocks,
      backend: this.backend, locks: this.locks, mounts: this.mounts, log: this.log, journal: this.journal,
      cluster: this.cluster, nodeId: this.config.nodeId,
      dropMounts: (name, ids, why) => this.mountOps.drop(name, ids, why),
      describe: (name) => this.descriptions.get(name),
    });
    this.descriptions = new VolumeDescriptions({
      backend: this.backend, mounts: this.mounts, cluster: this.cluster, mountpoints: this.mountpoints,
      restoreState: (record) => this.restores.restoreState(record),
    });
  }

  get backendName(): string {
    return this.backend.name;
  }

  get scope(): 'local' | 'global' {
    return this.backend.capabilities.scope;
  }

  /** Starts the backend, then reconciles the mount records left by an earlier run. */
  async init(): Promise<void> {
    await this.rootLock.acquire();
    try {
      await this.backend.init();
      await this.mounts.load();
      for (const problem of this.mounts.skipped) this.log.warn(`mount records: skipped ${problem}`);
      await this.reconcileMounts();
      await this.cluster.start(this.snapshots.countingReads(this.mounts));
      await this.restores.recover();
    } catch (err) {
      await this.rootLock.release();
      throw err;
    }
    if (this.engine.configured) {
      const reconcile = () => void this.reconcileWithEngine().catch((err: unknown) => this.log.error(`reconciling mounts failed: ${describeCause(err)}`));
      reconcile();
      this.reconcileTimer = setInterval(reconcile, this.config.reconcileMs ?? 60_000);
      this.reconcileTimer.unref();
    }
  }

  async dispose(): Promise<void> {
    clearInterval(this.reconcileTimer);
    this.engine.stop();
    await this.cluster.stop();
    await this.mounts.persist().catch((err: unknown) => this.log.error(String(err)));
    await this.mounts.close();
    await this.backend.dispose();
    await this.rootLock.release();
  }

  private reconcileMounts(): Promise<void> {
    return reconcileAtStart(this.mountOps, (name) => this.backend.get(name), async (name) => {
      this.mountpoints.set(name, await this.backend.attach(name));
    });
  }

  /** With `backup` (a backup URL), restores it into the new volume (backup/restore-volume.ts); `progress` reports that. */
  async create(name: string, rawOptions: unknown = {}, progress?: ProgressOptions): Promise<CreateResult> {
    validateVolumeName(name);
    const restore = takeRestoreOption(rawOptions);
    if (restore) {
      // Every option is checked before the backup is even looked at.
      parseVolumeOptions(restore.options, this.backend.capabilities.createOptions ?? []);
      return this.restores.restore(name, restore.url, restore.options, progress);
    }
    return this.createVolume(name, rawOptions);
  }

  /**
   * Creates a volume from its options. `mark` (a restore's marks) runs under the name's locks
   * before the volume is made, with its incarnation: no mount anywhere, and no start after a
   * crash at any step, finds the volume unmarked. A failed create clears the marks again.
   */
  private async createVolume(name: string, rawOptions: unknown, mark?: (incarnation: string) => Promise<void>): Promise<CreateResult> {
    const options = parseVolumeOptions(rawOptions, this.backend.capabilities.createOptions ?? []);
    await this.backend.ready?.(name);
    return this.locks.run(name, () => this.cluster.withLock(name, async (lease) => {
      // Only a restore's marks need a free name first; a plain create leaves that to the backend, which refuses a taken one unchanged.
      const existing = mark ? await this.backend.get(name) : undefined;
      if (existing) return { volume: await this.descriptions.describe(sameOrConflict(existing, options)), created: false };
      const origin = { createdAt: isoTime(this.clock.now()), createdBy: this.config.nodeId };
      if (mark) await mark(incarnationOf(origin)).catch(async (err: unknown) => { await this.restores.removed(name); throw err; });
      let record: VolumeRecord;
      try {
        record = await this.backend.create(createRequest(name, options, origin, lease));
      } catch (err) {
        if (mark) await this.restores.removed(name);
        // Taken: made before (the same create again), or by another node meanwhile.
        if (isStowageError(err, ErrorCodes.VOLUME_EXISTS)) {
          const existing = await this.backend.get(name);
          // The same create again is answered as made, except while a restore fills the volume (a restore's own create says it exists).
          if (existing && !mark) await this.restores.assertMountable(existing, '', true, 'use');
          if (existing) return { volume: await this.descriptions.describe(sameOrConflict(existing, options)), created: false };
        }
        throw toStowageError(err, `creating volume ${name} failed`, name);
      }
      this.descriptions.remember(name, record);
      // A backend that did not keep the origin it was given: the marks must name what it made.
      if (mark && incarnationOf(record) !== incarnationOf(origin)) {
        const forget = async () => { this.descriptions.forget(name); await this.restores.removed(name); };
        await mark(incarnationOf(record)).catch((err: unknown) => undoCreate(this.backend, name, lease, err, forget));
      }
      this.log.info(`created volume ${name}`);
      return { volume: await this.descriptions.describe(record), created: true };
    }));
  }

  /** See VolumeDescriptions.get. */
  async get(name: string): Promise<VolumeInfo> {
    validateVolumeName(name);
    return this.descriptions.get(name);
  }

  /** See VolumeDescriptions.listBrief. */
  listBrief(): Promise<readonly BriefVolume[]> {
    return this.descriptions.listBrief();
  }

  list(): Promise<VolumeInfo[]> {
    return this.descriptions.list();
  }

  /**
   * `retain` overrides the `onRemove` policy for this call; `force` skips the checks of other
   * nodes' references, but never a mount here or on a node that is alive.
   */
  remove(name: string, request: { retain?: boolean; force?: boolean } = {}): Promise<RemoveResult> {
    return this.removeVolume(name, request, false);
  }

  /** `byRestore`: a failed restore removing its own volume, which a restore running refuses to anyone else. */
  private async removeVolume(name: string, request: { retain?: boolean; force?: boolean; incarnation?: string }, byRestore: boolean): Promise<RemoveResult> {
    validateVolumeName(name);
    await this.backend.ready?.(name);
    return this.locks.run(name, () => this.cluster.withLock(name, async (lease) => {
      const record = await this.backend.get(name);
      if (!record || (request.incarnation !== undefined && incarnationOf(record) !== request.incarnation)) throw volumeNotFound(name);
      // Before its restore mounts it, the new volume is mounted nowhere: removed then, the restore
      // would fill whatever volume of the name came next. Once mounted, this says why better than the mount count.
      if (!byRestore && this.restores.isRestoring(name)) throw this.restores.beingRestored(name, this.config.nodeId);
      if (this.mounts.count(name) > 0) throw mountedHere(this.mounts, name, this.config.nodeId);
      this.snapshots.assertNotRead(name);
      await this.cluster.assertRemovable(name, { force: request.force ?? false });
      const retain = request.retain ?? this.config.onRemove === 'retain';
      // The checks above may have taken long (another node's engine, a slow store).
      lease.assertHeld(`removing volume ${name}`);
      const outcome = await this.backend.remove(name, { retain, lease }).catch((err: unknown) => {
        throw toStowageError(err, `removing volume ${name} failed`, name);
      });
      this.descriptions.forget(name);
      this.mountpoints.delete(name);
      this.mounts.forget(name);
      await this.restores.removed(name);
      // The volume is gone: that is the answer. Records that could not be saved are only
      // pending state, saved with the next change or dropped at the next start.
      await this.mounts.persist().catch((err: unknown) =>
        this.log.error(`volume ${name} was removed, but ${messageOf(err)}`));
      this.log.info(`removed volume ${name}${outcome.retainedAt ? `, data kept at ${outcome.retainedAt}` : ''}`);
      return { name, retainedAt: outcome.retainedAt, ...(outcome.snapshotsKept ? { snapshotsKept: outcome.snapshotsKept } : {}) };
    }));
  }

  /**
   * Creates this node's mount marker of the volume before its first mount here answers, and reads
   * the volume after that (without the name's cluster lock unless something holds it, see
   * mount-lock.ts): a remove on another node either ran before (the mount then finds no volume)
   * or sees the marker and is refused.
   */
  async mount(name: string, mountId: string): Promise<string> {
    assertOutsideMountId(validateMountId(mountId));
    return this.mountAs(name, mountId, {});
  }

  /**
   * `incarnation`: only that volume of the name (a restore's own). `once`: an id that already
   * mounts this volume is answered its path and counted no further (a hand mount's label).
   */
  private async mountAs(name: string, mountId: string, want: { incarnation?: string; once?: boolean }): Promise<string> {
    validateVolumeName(name);
    const id = validateMountId(mountId);
    await this.backend.ready?.(name);
    return this.locks.run(name, () => this.cluster.withMountLock(name, async () => {
      const record = await this.backend.get(name);
      if (!record) throw volumeNotFound(name);
      const incarnation = incarnationOf(record);
      if (want.incarnation !== undefined && want.incarnation !== incarnation) {
        throw new StowageError(ErrorCodes.VOLUME_NOT_FOUND, `volume ${name} was removed and made again since this operation made it`, { volume: name });
      }
      const previous = this.mounts.incarnation(name);
      const held = want.once === true && previous === incarnation && this.mounts.has(name, id);
      if (held && this.mountpoints.has(name)) return this.mountpoints.get(name)!;
      await this.restores.assertMountable(record, id, this.mounts.count(name) === 0 || previous !== incarnation);
      if (previous !== undefined && previous !== incarnation && this.mounts.count(name) > 0) {
        this.log.warn(`dropping mount records of ${name} that belong to an earlier volume of that name (${previous})`);
        this.mounts.forget(name);
      }
      // attach is idempotent and re-checks the storage, so a broken attachment heals on the next mount.
      const path = await this.backend.attach(name, record).catch((err: unknown) => {
        throw toStowageError(err, `attaching volume ${name} failed`, name);
      });
      this.mountpoints.set(name, path);
      if (held) return path;
      this.mounts.increment(name, id, isoTime(this.clock.now()), incarnation);
      // Both must succeed; neither is flushed to disk (see the README's durability table).
      const failed = await this.mounts.persist().then(() => this.cluster.markMounted(name)).then(() => undefined, (reason: unknown) => ({ reason }));
      if (failed) {
        const err: unknown = failed.reason;
        // Docker sends no Unmount for a failed Mount: a count kept here would pin the volume.
        await undoMount(this.mountHost, name, id);
        throw new StowageError(isStowageError(err) ? err.code : ErrorCodes.INTERNAL,
          `mounting volume ${name} failed: ${isStowageError(err) ? err.message : describeCause(err)}`, { volume: name, cause: err });
      }
      return path;
    }));
  }

  async unmount(name: string, mountId: string): Promise<void> {
    assertOutsideMountId(validateMountId(mountId));
    return this.unmountAs(name, mountId);
  }

  private unmountAs(name: string, mountId: string): Promise<void> {
    validateVolumeName(name);
    return unmountId(this.mountHost, name, validateMountId(mountId));
  }


  /** The path while mounted on this node, else undefined. */
  path(name: string): string | undefined {
    validateVolumeName(name);
    return this.mounts.count(name) > 0 ? this.mountpoints.get(name) : undefined;
  }

  async info(): Promise<Record<string, unknown>> {
    return {
      node: this.config.nodeId,
      backend: this.backend.name,
      scope: this.backend.capabilities.scope,
      onRemove: this.config.onRemove,
      mountedVolumes: this.mounts.mountedVolumes().length,
      ...(await this.backend.describe()),
      ...this.cluster.info(),
    };
  }

  /** See VolumeSnapshots.create. */
  createSnapshot(volume: string, snapshot: string, options: SnapshotOptions = {}): Promise<SnapshotRecord> {
    return this.snapshots.create(volume, snapshot, options);
  }

  /** See VolumeSnapshots.readLive. */
  readLiveVolume<T>(volume: string, options: ConsistencyOptions, work: (path: string) => Promise<T>): Promise<T> {
    return this.snapshots.readLive(volume, options, work);
  }

  listSnapshots(volume: string): Promise<SnapshotRecord[]> {
    return this.snapshots.list(volume);
  }

  deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    return this.snapshots.delete(volume, snapshot);
  }

  /** Nodes sharing this backend's storage, with heartbeat age and clock offset. */
  nodes(): Promise<NodeView[]> {
    return this.cluster.nodes();
  }

  invalidNodes(): InvalidNodeRecord[] {
    return this.cluster.invalidNodes();
  }

  forgetNode(nodeId: string): Promise<void> {
    return this.cluster.forget(nodeId);
  }

  /** This node's mount records. */
  mountRecords(): MountRecordView[] {
    return this.mounts.records();
  }

  /**
   * The way out of a leaked mount count: drops this node's records of the volume (or of one
   * ID), detaching when none remain; refused while a live container uses it, unless `force`.
   */
  release(name: string, request: { id?: string; force?: boolean } = {}): Promise<MountRecordView[]> {
    validateVolumeName(name);
    if (request.id !== undefined) validateMountId(request.id);
    return releaseMounts(this.mountOps, name, request);
  }

  /** See mountByHand in mount-reconcile.ts. */
  async mountByHand(name: string, label?: string): Promise<HandMount> {
    validateVolumeName(name);
    return mountByHand(this.mountOps, name, label);
  }

  async unmountByHand(name: string, label?: string): Promise<HandMount & { remaining: number }> {
    validateVolumeName(name);
    return unmountByHand(this.mountOps, name, label);
  }

  /** Drops mount records that no live container on this node can account for (see mount-reconcile.ts). */
  reconcileWithEngine(): Promise<void> {
    return reconcileWithEngine(this.mountOps);
  }

  private readonly mountHost: MountHost = {
    nodeId: () => this.config.nodeId,
    engine: () => this.engine,
    mounts: () => this.mounts,
    now: () => this.clock.now(),
    graceMs: () => this.config.mountGraceMs ?? 60_000,
    log: () => this.log,
    runLocked: (name, task) => this.locks.run(name, task),
    mount: (name, id) => this.mountAs(name, id, { once: true }),
    path: (name) => this.path(name),
    isRestoring: (name) => this.restores.isRestoring(name),
    detach: (name) => this.backend.detach(name),
    detached: (name) => { this.mountpoints.delete(name); },
    // A backup or snapshot reading the volume here keeps the marker (see VolumeSnapshots).
    unmark: (name) => this.snapshots.releaseMarker(name),
  };

  private readonly mountOps: MountOps = mountOpsOf(this.mountHost);
}

