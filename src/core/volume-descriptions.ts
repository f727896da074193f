import type { Backend, VolumeRecord } from './backend.js';
import type { Cluster } from './cluster/cluster.js';
import { messageOf, toStowageError, volumeNotFound } from './errors.js';
import type { MountTable } from './mount-table.js';
import { formatSize } from './options.js';
import type { BriefVolume, VolumeInfo } from './volume-types.js';

/** What describing volumes needs of the volume manager: its parts and its mountpoints. */
export interface DescriptionOps {
  backend: Backend;
  mounts: MountTable;
  cluster: Cluster;
  /** The manager's mountpoints by volume name, set on attach; shown only while mounted here. */
  mountpoints: ReadonlyMap<string, string>;
  /** Whether a restore into this volume runs, or failed and left it with partial data (VolumeRestores.restoreState). */
  restoreState?: (record: VolumeRecord) => 'running' | 'failed' | undefined;
}

/**
 * How volumes look to Docker's Get and List: records described with mount counts, local
 * mountpoints and status, the last record seen per name, and List's brief answer.
 */
export class VolumeDescriptions {
  private lastBrief?: { records: VolumeRecord[]; mountsVersion: number; brief: BriefVolume[] };
  /** Last record seen per name, so a passing backend fault does not make Docker forget a volume. */
  private readonly lastKnown = new Map<string, VolumeRecord>();

  constructor(private readonly ops: DescriptionOps) {}

  /** Notes the record the backend last gave for a name (see get). */
  remember(name: string, record: VolumeRecord): void {
    this.lastKnown.set(name, record);
  }

  /** The volume of that name is gone. */
  forget(name: string): void {
    this.lastKnown.delete(name);
  }

  /**
   * Never fails for a known volume because of a passing backend fault: Docker forgets volumes whose Get fails.
   * The caller has validated the name.
   */
  async get(name: string): Promise<VolumeInfo> {
    let record: VolumeRecord | undefined;
    try {
      record = await this.ops.backend.get(name);
    } catch (err) {
      const known = this.lastKnown.get(name);
      if (!known) throw toStowageError(err, `looking up volume ${name} failed`, name);
      const info = await this.describe(known);
      info.status.warning = `backend unavailable, showing last known state: ${messageOf(err)}`;
      return info;
    }
    if (!record) {
      this.lastKnown.delete(name);
      throw volumeNotFound(name);
    }
    this.lastKnown.set(name, record);
    return this.describe(record);
  }

  /** Names, creation times and local mountpoints only: what Docker's List needs, without per-volume status. */
  async listBrief(): Promise<readonly BriefVolume[]> {
    const { backend, mounts, mountpoints } = this.ops;
    const records = await backend.list();
    const last = this.lastBrief;
    // Same records and same mounts as last time: the same answer, so a shell may reuse its encoding.
    if (last && last.records === records && last.mountsVersion === mounts.version) return last.brief;
    const brief = records.map((r) => ({
      name: r.name,
      createdAt: r.createdAt,
      mountpoint: mounts.count(r.name) > 0 ? mountpoints.get(r.name) : undefined,
    }));
    this.lastBrief = { records, mountsVersion: mounts.version, brief };
    return brief;
  }

  async list(): Promise<VolumeInfo[]> {
    const records = await this.ops.backend.list();
    return records.map((record) => this.describeCheaply(record));
  }

  /** A record with its mounts, the cluster's usage and the backend's status (a warning if that fails). */
  async describe(record: VolumeRecord): Promise<VolumeInfo> {
    const info = this.describeCheaply(record);
    Object.assign(info.status, this.ops.cluster.usage(record.name));
    try {
      Object.assign(info.status, await this.ops.backend.volumeStatus(record.name));
    } catch (err) {
      info.status.warning = `status unavailable: ${messageOf(err)}`;
    }
    return info;
  }

  private describeCheaply(record: VolumeRecord): VolumeInfo {
    const { backend, mounts, mountpoints } = this.ops;
    const mountCount = mounts.count(record.name);
    const status: Record<string, string> = {
      backend: backend.name,
      createdAt: record.createdAt,
      createdBy: record.createdBy,
      mounts: String(mountCount),
    };
    if (record.options.size !== undefined) status.size = formatSize(record.options.size);
    const restore = this.ops.restoreState?.(record);
    if (restore === 'running') status.restore = 'running: the volume holds partial data until it ends';
    if (restore === 'failed') status.restore = 'failed: the volume holds partial data and cannot be mounted; remove it';
    return {
      ...record,
      backend: backend.name,
      mountCount,
      mountpoint: mountCount > 0 ? mountpoints.get(record.name) : undefined,
      status,
    };
  }
}
