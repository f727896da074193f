import { inject, injectable } from 'inversify';
import type { Backend, SnapshotRecord, SnapshotSupport, VolumeRecord } from './backend.js';
import { isoTime, type Clock } from './clock.js';
import type { Cluster } from './cluster/cluster.js';
import type { NodeView } from './cluster/node-record.js';
import { ErrorCodes, StowageError, isStowageError, toStowageError } from './errors.js';
import type { Logger } from './logger.js';
import { KeyedMutex } from './keyed-mutex.js';
import type { MountTable } from './mount-table.js';
import type { RootLock } from './root-lock.js';
import { validateVolumeName } from './names.js';
import { formatSize, parseVolumeOptions, sameDefiningOptions, type VolumeOptions } from './options.js';
import { TOKENS } from './tokens.js';

export type RemovePolicy = 'delete' | 'retain';

export interface ManagerConfig {
  nodeId: string;
  /** What `remove` does with data when the caller does not say: delete it, or move it aside. */
  onRemove: RemovePolicy;
}

export interface VolumeInfo extends VolumeRecord {
  backend: string;
  /** Path on this node while the volume is mounted here. */
  mountpoint?: string;
  /** Mounts on this node, all IDs together. */
  mountCount: number;
  status: Record<string, string>;
}

export interface BriefVolume {
  name: string;
  createdAt: string;
  mountpoint?: string;
}

export interface CreateResult {
  volume: VolumeInfo;
  /** False when an identical volume already existed (create is idempotent). */
  created: boolean;
}

export interface RemoveResult {
  name: string;
  retainedAt?: string;
}

/**
 * The core: validates names and options, serialises operations per volume, counts mounts per
 * ID on this node and applies the delete policy. Backends only move bytes.
 */
@injectable()
export class VolumeManager {
  private readonly locks = new KeyedMutex();
  private readonly mountpoints = new Map<string, string>();
  private lastBrief?: { records: VolumeRecord[]; mountsVersion: number; brief: BriefVolume[] };
  /** Last record seen per name, so a passing backend fault does not make Docker forget a volume. */
  private readonly lastKnown = new Map<string, VolumeRecord>();

  constructor(
    @inject(TOKENS.Backend) private readonly backend: Backend,
    @inject(TOKENS.MountTable) private readonly mounts: MountTable,
    @inject(TOKENS.ManagerConfig) private readonly config: ManagerConfig,
    @inject(TOKENS.Logger) private readonly log: Logger,
    @inject(TOKENS.RootLock) private readonly rootLock: RootLock,
    @inject(TOKENS.Clock) private readonly clock: Clock,
    @inject(TOKENS.Cluster) private readonly cluster: Cluster,
  ) {}

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
      await this.reconcileMounts();
      await this.cluster.start(() => this.mounts.snapshot());
    } catch (err) {
      await this.rootLock.release();
      throw err;
    }
  }

  async dispose(): Promise<void> {
    await this.cluster.stop();
    await this.mounts.persist().catch((err: unknown) => this.log.error(String(err)));
    await this.backend.dispose();
    await this.rootLock.release();
  }

  private async reconcileMounts(): Promise<void> {
    for (const name of this.mounts.mountedVolumes()) {
      await this.locks.run(name, async () => {
        const record = await this.backend.get(name).catch(() => undefined);
        if (!record) {
          this.log.warn(`dropping mount records of ${name}: the volume no longer exists`);
          this.mounts.forget(name);
          return;
        }
        try {
          this.mountpoints.set(name, await this.backend.attach(name));
          this.log.info(`volume ${name} kept attached for ${this.mounts.count(name)} mount(s) from before the restart`);
        } catch (err) {
          this.log.error(`volume ${name} was mounted before the restart but cannot be attached again: ${(err as Error).message}`);
        }
      });
    }
    await this.mounts.persist();
  }

  async create(name: string, rawOptions: unknown = {}): Promise<CreateResult> {
    validateVolumeName(name);
    const options = parseVolumeOptions(rawOptions, this.backend.capabilities.createOptions ?? []);
    await this.backend.ready?.(name);
    return this.locks.run(name, () => this.cluster.withLock(name, async () => {
      const existing = await this.backend.get(name);
      if (existing) return { volume: await this.describeVolume(this.sameOrConflict(existing, options)), created: false };
      try {
        const record = await this.backend.create({
          name,
          options,
          createdAt: isoTime(this.clock.now()),
          createdBy: this.config.nodeId,
        });
        this.lastKnown.set(name, record);
        this.log.info(`created volume ${name}`);
        return { volume: await this.describeVolume(record), created: true };
      } catch (err) {
        // Another node may have created the same name between our check and our create.
        if (isStowageError(err, ErrorCodes.VOLUME_EXISTS)) {
          const raced = await this.backend.get(name);
          if (raced) return { volume: await this.describeVolume(this.sameOrConflict(raced, options)), created: false };
        }
        throw toStowageError(err, `creating volume ${name} failed`, name);
      }
    }));
  }

  private sameOrConflict(existing: VolumeRecord, options: VolumeOptions): VolumeRecord {
    if (sameDefiningOptions(existing.options, options)) return existing;
    throw new StowageError(ErrorCodes.VOLUME_EXISTS,
      `volume ${existing.name} already exists with different options (${describeOptions(existing.options)}); ` +
      `remove it first or create it with the same options`, { volume: existing.name });
  }

  /** Never fails for a known volume because of a passing backend fault: Docker forgets volumes whose Get fails. */
  async get(name: string): Promise<VolumeInfo> {
    validateVolumeName(name);
    let record: VolumeRecord | undefined;
    try {
      record = await this.backend.get(name);
    } catch (err) {
      const known = this.lastKnown.get(name);
      if (!known) throw toStowageError(err, `looking up volume ${name} failed`, name);
      const info = await this.describeVolume(known);
      info.status.warning = `backend unavailable, showing last known state: ${(err as Error).message}`;
      return info;
    }
    if (!record) {
      this.lastKnown.delete(name);
      throw notFound(name);
    }
    this.lastKnown.set(name, record);
    return this.describeVolume(record);
  }

  /** Names, creation times and local mountpoints only: what Docker's List needs, without per-volume status. */
  async listBrief(): Promise<readonly BriefVolume[]> {
    const records = await this.backend.list();
    const last = this.lastBrief;
    // Same records and same mounts as last time: the same answer, so a shell may reuse its encoding.
    if (last && last.records === records && last.mountsVersion === this.mounts.version) return last.brief;
    const brief = records.map((r) => ({
      name: r.name,
      createdAt: r.createdAt,
      mountpoint: this.mounts.count(r.name) > 0 ? this.mountpoints.get(r.name) : undefined,
    }));
    this.lastBrief = { records, mountsVersion: this.mounts.version, brief };
    return brief;
  }

  async list(): Promise<VolumeInfo[]> {
    const records = await this.backend.list();
    return records.map((record) => this.describeCheaply(record));
  }

  /** `force` skips the check for references from other nodes (never the local mount check). */
  async remove(name: string, request: { keepData?: boolean; force?: boolean } = {}): Promise<RemoveResult> {
    validateVolumeName(name);
    await this.backend.ready?.(name);
    return this.locks.run(name, () => this.cluster.withLock(name, async () => {
      const record = await this.backend.get(name);
      if (!record) throw notFound(name);
      const mounted = this.mounts.count(name);
      if (mounted > 0) {
        throw new StowageError(ErrorCodes.VOLUME_IN_USE,
          `volume ${name} is mounted ${mounted} time(s) on node ${this.config.nodeId}; ` +
          `stop or remove the containers using it, then remove it again`, { volume: name, node: this.config.nodeId });
      }
      await this.cluster.assertRemovable(name, { force: request.force ?? false });
      const retainData = request.keepData ?? this.config.onRemove === 'retain';
      const outcome = await this.backend.remove(name, { retainData }).catch((err: unknown) => {
        throw toStowageError(err, `removing volume ${name} failed`, name);
      });
      this.lastKnown.delete(name);
      this.mountpoints.delete(name);
      this.mounts.forget(name);
      await this.mounts.persist();
      this.log.info(`removed volume ${name}${outcome.retainedAt ? `, data kept at ${outcome.retainedAt}` : ''}`);
      return { name, retainedAt: outcome.retainedAt };
    }));
  }

  async mount(name: string, mountId: string): Promise<string> {
    validateVolumeName(name);
    const id = validateMountId(mountId);
    return this.locks.run(name, async () => {
      const record = await this.backend.get(name);
      if (!record) throw notFound(name);
      // attach is idempotent and re-checks the storage, so a broken attachment heals on the next mount.
      const path = await this.backend.attach(name).catch((err: unknown) => {
        throw toStowageError(err, `attaching volume ${name} failed`, name);
      });
      this.mountpoints.set(name, path);
      this.mounts.increment(name, id, isoTime(this.clock.now()));
      try {
        await this.mounts.persist();
      } catch (err) {
        // Docker sends no Unmount for a failed Mount: a count kept here would pin the volume.
        this.mounts.decrement(name, id);
        throw err;
      }
      this.cluster.changed();
      return path;
    });
  }

  async unmount(name: string, mountId: string): Promise<void> {
    validateVolumeName(name);
    const id = validateMountId(mountId);
    return this.locks.run(name, async () => {
      if (!this.mounts.has(name, id)) {
        // Docker replays Unmount after restarts; an unknown ID has nothing left to release.
        this.log.warn(`unmount of ${name} for unknown mount id ${id} ignored`);
        return;
      }
      const remaining = this.mounts.decrement(name, id);
      if (remaining === 0) {
        await this.backend.detach(name).catch((err: unknown) => {
          this.mounts.increment(name, id, isoTime(this.clock.now()));
          throw toStowageError(err, `detaching volume ${name} failed`, name);
        });
        this.mountpoints.delete(name);
      }
      // A failed save is only logged: the mount is released, and the record left on disk is
      // dropped by the next start's reconciliation or an Unmount replayed by Docker.
      await this.mounts.persist().catch((err: unknown) => this.log.error((err as Error).message));
      this.cluster.changed();
    });
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

  private snapshotSupport(volume: string): SnapshotSupport {
    if (!this.backend.capabilities.snapshots || !this.backend.snapshots) {
      throw new StowageError(ErrorCodes.NOT_SUPPORTED,
        `the ${this.backend.name} backend cannot snapshot volumes (volume ${volume}); the devicemapper backend can`, { volume });
    }
    return this.backend.snapshots;
  }

  /** Snapshot names follow the volume name rules; operations queue behind the volume's others. */
  async createSnapshot(volume: string, snapshot: string): Promise<SnapshotRecord> {
    validateVolumeName(volume);
    validateVolumeName(snapshot);
    const support = this.snapshotSupport(volume);
    return this.locks.run(volume, () => support.createSnapshot(volume, snapshot));
  }

  async listSnapshots(volume: string): Promise<SnapshotRecord[]> {
    validateVolumeName(volume);
    return this.snapshotSupport(volume).listSnapshots(volume);
  }

  async deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    validateVolumeName(volume);
    validateVolumeName(snapshot);
    const support = this.snapshotSupport(volume);
    await this.locks.run(volume, () => support.deleteSnapshot(volume, snapshot));
  }

  /** Nodes sharing this backend's storage, with heartbeat age and clock offset. */
  nodes(): Promise<NodeView[]> {
    return this.cluster.nodes();
  }

  forgetNode(nodeId: string): Promise<void> {
    return this.cluster.forget(nodeId);
  }

  private describeCheaply(record: VolumeRecord): VolumeInfo {
    const mountCount = this.mounts.count(record.name);
    const status: Record<string, string> = {
      backend: this.backend.name,
      createdAt: record.createdAt,
      createdBy: record.createdBy,
      mounts: String(mountCount),
    };
    if (record.options.size !== undefined) status.size = formatSize(record.options.size);
    return {
      ...record,
      backend: this.backend.name,
      mountCount,
      mountpoint: mountCount > 0 ? this.mountpoints.get(record.name) : undefined,
      status,
    };
  }

  private async describeVolume(record: VolumeRecord): Promise<VolumeInfo> {
    const info = this.describeCheaply(record);
    Object.assign(info.status, this.cluster.usage(record.name));
    try {
      Object.assign(info.status, await this.backend.volumeStatus(record.name));
    } catch (err) {
      info.status.warning = `status unavailable: ${(err as Error).message}`;
    }
    return info;
  }
}

function notFound(name: string): StowageError {
  return new StowageError(ErrorCodes.VOLUME_NOT_FOUND, `volume ${name} does not exist`, { volume: name });
}

function validateMountId(id: unknown): string {
  if (typeof id !== 'string' || id.length === 0 || id.length > 256) {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, 'a mount needs an ID (a non-empty string of at most 256 characters)');
  }
  return id;
}

function describeOptions(options: VolumeOptions): string {
  const parts: string[] = [];
  if (options.size !== undefined) parts.push(`size=${formatSize(options.size)}`);
  if (options.uid !== undefined) parts.push(`uid=${options.uid}`);
  if (options.gid !== undefined) parts.push(`gid=${options.gid}`);
  if (options.mode !== undefined) parts.push(`mode=${options.mode.toString(8)}`);
  for (const [key, value] of Object.entries(options.backend ?? {})) parts.push(`${key}=${value}`);
  return parts.length > 0 ? parts.join(', ') : 'no options';
}
