import type { Backend, SnapshotReadOptions, SnapshotRecord, SnapshotSupport } from './backend.js';
import type { Cluster, LocalMounts } from './cluster/cluster.js';
import type { ContainerReferences } from './container-references.js';
import { ErrorCodes, StowageError, describeCause, volumeNotFound } from './errors.js';
import type { KeyedMutex } from './keyed-mutex.js';
import type { Logger } from './logger.js';
import type { MountTable } from './mount-table.js';
import { validateVolumeName } from './names.js';

/** What the snapshot operations need of the volume manager: its per-volume queue and its parts. */
export interface SnapshotOps {
  backend: Backend;
  /** The manager's per-volume queue: a snapshot waits for the volume's other operations. */
  locks: KeyedMutex;
  cluster: Cluster;
  engine: ContainerReferences;
  mounts: MountTable;
  nodeId: string;
  log: Logger;
  /** Refuses a volume holding a restore's partial data (VolumeRestores.assertReadable); called under the volume's lock. */
  assertWhole(volume: string): Promise<void>;
}

export interface ConsistencyOptions {
  consistent?: boolean;
  force?: boolean;
}

/** How a snapshot is taken: consistency, and how one that reads the volume's files reads them. */
export type SnapshotOptions = ConsistencyOptions & SnapshotReadOptions;

/**
 * Snapshots through the core: names checked, queued behind the volume's other operations, and
 * the optional pause of this node's containers that use the volume (`consistent`).
 */
export class VolumeSnapshots {
  /** Volumes whose live data is being read without the volume's lock held, and how many reads each. */
  private readonly readers = new Map<string, number>();

  constructor(private readonly ops: SnapshotOps) {}

  /**
   * Called by remove under the volume's lock: a volume being read by a backup or snapshot is not
   * removed under it. Refused rather than queued: the read may take hours, and a remove that
   * hangs that long is worse than one that says why.
   */
  assertNotRead(volume: string): void {
    const count = this.readers.get(volume) ?? 0;
    if (count === 0) return;
    throw new StowageError(ErrorCodes.VOLUME_IN_USE,
      `volume ${volume} is being read by ${count} backup(s) or snapshot(s) on node ${this.ops.nodeId}; ` +
      'remove it once they end, or cancel them first',
      { volume, node: this.ops.nodeId, remedies: [{ action: 'cancel-jobs', volume }] });
  }

  /**
   * A read of the live data that does not keep the volume's other operations waiting: the
   * volume's lock is taken only to register the read (after whatever was queued before it), so
   * mounts and unmounts go on meanwhile, and remove is refused until the read ends.
   */
  private async sharedRead<T>(volume: string, read: () => Promise<T>): Promise<T> {
    await this.ops.locks.run(volume, async () => {
      await this.ops.assertWhole(volume);
      await this.startRead(volume);
    });
    try {
      return await read();
    } finally {
      await this.ops.locks.run(volume, () => this.endRead(volume));
    }
  }

  /**
   * How a read of live data runs: `consistent` holds the volume's lock throughout (a container
   * mounting it meanwhile would write unpaused), otherwise the read is shared (see sharedRead).
   */
  private runRead<T>(volume: string, options: ConsistencyOptions, read: () => Promise<T>): Promise<T> {
    if (options.consistent) {
      return this.ops.locks.run(volume, async () => {
        await this.ops.assertWhole(volume);
        await this.startRead(volume);
        try {
          return await this.withContainersPaused(volume, options.force ?? false, read);
        } finally {
          await this.endRead(volume);
        }
      });
    }
    return this.sharedRead(volume, read);
  }

  /**
   * Counts the read, and shows the volume in use on this node to every node, as a mount does: a
   * remove on another node then either ran before (the read finds no volume) or sees the marker
   * and is refused. Counted first, so a heartbeat meanwhile keeps the marker. The caller holds
   * the volume's lock.
   */
  private async startRead(volume: string): Promise<void> {
    this.readers.set(volume, (this.readers.get(volume) ?? 0) + 1);
    try {
      await this.ops.cluster.withLock(volume, async () => {
        if (!(await this.ops.backend.get(volume))) throw volumeNotFound(volume);
        await this.ops.cluster.markMounted(volume);
      });
    } catch (err) {
      await this.endRead(volume);
      throw err;
    }
  }

  /** The caller holds the volume's lock. */
  private async endRead(volume: string): Promise<void> {
    const left = (this.readers.get(volume) ?? 1) - 1;
    if (left > 0) this.readers.set(volume, left);
    else this.readers.delete(volume);
    await this.releaseMarker(volume);
  }

  /**
   * Removes this node's marker of the volume once nothing here uses it: no mount and no read. A
   * failure is only logged (the next heartbeat retries it).
   */
  async releaseMarker(volume: string): Promise<void> {
    if (this.ops.mounts.count(volume) > 0 || this.readers.has(volume)) return;
    await this.ops.cluster.markUnmounted(volume).catch((err: unknown) =>
      this.ops.log.error(`removing the mount marker of ${volume} failed (the next heartbeat retries): ${describeCause(err)}`));
  }

  /** `mounts` with this node's reads counted as uses, for the heartbeat that keeps the markers right. */
  countingReads(mounts: LocalMounts): LocalMounts {
    return {
      mountedVolumes: () => [...new Set([...mounts.mountedVolumes(), ...this.readers.keys()])],
      count: (volume) => mounts.count(volume) + (this.readers.get(volume) ?? 0),
    };
  }

  private support(volume: string): SnapshotSupport {
    const { backend } = this.ops;
    if (!backend.snapshots) {
      throw new StowageError(ErrorCodes.NOT_SUPPORTED, `the ${backend.name} backend cannot snapshot volumes (volume ${volume})`,
        { volume, remedies: [{ action: 'use-backend', capability: 'snapshots' }] });
    }
    return backend.snapshots;
  }

  /**
   * Snapshot names follow the volume name rules; operations queue behind the volume's others.
   * A snapshot that is a file-by-file read of the live data (vfs, glusterfs) lets mounts go on
   * meanwhile and keeps removes out (see sharedRead); others (a devicemapper thin snapshot,
   * quick) hold the volume's lock. `consistent`:
   * the running containers of this node that use the volume are paused while the snapshot is
   * taken; refused while another node uses the volume (its containers cannot be paused from
   * here) unless `force`, and while this node mounts it with no engine to pause containers.
   */
  async create(volume: string, snapshot: string, options: SnapshotOptions = {}): Promise<SnapshotRecord> {
    validateVolumeName(volume);
    validateVolumeName(snapshot, 'snapshot name');
    const support = this.support(volume);
    if (options.xattrs === false && !support.readLive) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `leaving extended attributes out applies to snapshots that read a volume's files; ` +
        `a ${this.ops.backend.name} snapshot holds the whole filesystem as it is`, { volume });
    }
    const take = () => support.createSnapshot(volume, snapshot, options.xattrs === false ? { xattrs: false } : {});
    if (support.readLive) return this.runRead(volume, options, take);
    return this.ops.locks.run(volume, async () => {
      await this.ops.assertWhole(volume);
      return options.consistent ? this.withContainersPaused(volume, options.force ?? false, take) : take();
    });
  }

  /**
   * Runs `work` on the live data of a volume whose backend snapshots by reading it file by file
   * (see SnapshotSupport.readLive), under the same rules as create: after the volume's queued
   * operations, mounts go on during the read and removes are refused, and `consistent` pauses
   * this node's containers that use it (holding the volume's lock throughout).
   */
  async readLive<T>(volume: string, options: ConsistencyOptions, work: (path: string) => Promise<T>): Promise<T> {
    validateVolumeName(volume);
    const support = this.support(volume);
    const readLive = support.readLive?.bind(support);
    if (!readLive) {
      throw new StowageError(ErrorCodes.NOT_SUPPORTED, `the ${this.ops.backend.name} backend's snapshots are not reads of the live data (volume ${volume})`, { volume });
    }
    return this.runRead(volume, options, () => readLive(volume, work));
  }

  async list(volume: string): Promise<SnapshotRecord[]> {
    validateVolumeName(volume);
    // An unknown volume is one, not a volume without snapshots (a typo would list nothing).
    if (!(await this.ops.backend.get(volume))) throw volumeNotFound(volume);
    return this.support(volume).listSnapshots(volume);
  }

  async delete(volume: string, snapshot: string): Promise<void> {
    validateVolumeName(volume);
    validateVolumeName(snapshot, 'snapshot name');
    const support = this.support(volume);
    await this.ops.locks.run(volume, () => support.deleteSnapshot(volume, snapshot));
  }

  private async withContainersPaused<T>(volume: string, force: boolean, task: () => Promise<T>): Promise<T> {
    const { cluster, engine, mounts, nodeId, log } = this.ops;
    const elsewhere = await cluster.usesElsewhere(volume);
    if (elsewhere.length > 0 && !force) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `a consistent snapshot of volume ${volume} pauses the containers that use it, and only this node's can be paused; ` +
        `it is also used on ${elsewhere.join('; ')}. Stop those containers first, or force the snapshot (their writes may then land during it)`,
        { volume });
    }
    if (!engine.configured || !engine.pause || !engine.unpause) {
      if (mounts.count(volume) === 0) return task();
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${volume} is mounted on node ${nodeId}, and no container engine is configured to pause its containers for a consistent snapshot`,
        { volume, node: nodeId });
    }
    const scan = await engine.scan();
    if (!scan.reachable) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `a consistent snapshot of volume ${volume} pauses its containers, but the container engine cannot be asked: ${scan.error ?? 'unreachable'}`, { volume });
    }
    const paused: string[] = [];
    try {
      for (const container of (scan.byVolume[volume] ?? []).filter((c) => c.state === 'running')) {
        await engine.pause(container.id);
        paused.push(container.id);
      }
      if (paused.length > 0) log.info(`paused ${paused.length} container(s) using ${volume} for a consistent snapshot`);
      return await task();
    } finally {
      for (const id of paused) {
        await engine.unpause(id).catch((err: unknown) =>
          log.error(`could not unpause container ${id.slice(0, 12)} after the snapshot of ${volume}; unpause it by hand: ${describeCause(err)}`));
      }
    }
  }
}
