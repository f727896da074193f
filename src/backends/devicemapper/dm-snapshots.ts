import type { SnapshotRecord, SnapshotSupport } from '../../core/backend.js';
import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, volumeNotFound } from '../../core/errors.js';
import { isDmFailure } from './dmsetup.js';
import type { SnapshotEntry, VolumeEntry } from './pool-state.js';
import { changedRanges, parseThinDelta, type ChangedRange, type ThinDelta } from './thin-delta-parser.js';
import type { ThinPool } from './thin-pool.js';

/** What changed between two thin devices of one volume, for incremental backups. */
export interface BlockChanges {
  /** Pool block size in bytes: the granularity of `ranges`. */
  blockSizeBytes: number;
  /** Byte ranges of `to` that differ from `from`, sorted and merged. */
  ranges: ChangedRange[];
  delta: ThinDelta;
}

/**
 * Thin snapshots: `create_snap` (the origin suspended around it while active), list, delete,
 * and block-level differences between snapshots with thin_delta on a reserved metadata snapshot.
 */
export class DmSnapshots implements SnapshotSupport {
  constructor(
    private readonly pool: ThinPool,
    private readonly runner: CommandRunner,
    private readonly exclusive: <T>(task: () => Promise<T>) => Promise<T>,
  ) {}

  private volume(name: string): VolumeEntry {
    const entry = this.pool.state.volumes[name];
    if (!entry?.ready) throw volumeNotFound(name);
    return entry;
  }

  private snapshot(entry: VolumeEntry, name: string): SnapshotEntry {
    const found = entry.snapshots.find((s) => s.name === name);
    if (!found) {
      throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `volume ${entry.record.name} has no snapshot ${name}`,
        { volume: entry.record.name });
    }
    return found;
  }

  private toRecord(volume: string, s: SnapshotEntry): SnapshotRecord {
    return {
      name: s.name, volume, createdAt: s.createdAt,
      details: { thinId: String(s.thinId), pool: this.pool.name, device: this.pool.devicePath(s.thinId) },
    };
  }

  createSnapshot(volume: string, snapshot: string): Promise<SnapshotRecord> {
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      if (entry.snapshots.some((s) => s.name === snapshot)) {
        throw new StowageError(ErrorCodes.SNAPSHOT_EXISTS, `volume ${volume} already has a snapshot ${snapshot}`, { volume });
      }
      await this.pool.assertCanCreate(`snapshot ${snapshot} of ${volume}`, volume);
      const createdAt = new Date().toISOString();
      const thinId = await this.pool.createDevice(entry.thinId, (id, createdInTx) => {
        entry.snapshots.push({ name: snapshot, thinId: id, createdInTx, createdAt });
      });
      return this.toRecord(volume, { name: snapshot, thinId, createdAt });
    });
  }

  async listSnapshots(volume: string): Promise<SnapshotRecord[]> {
    return this.volume(volume).snapshots.map((s) => this.toRecord(volume, s));
  }

  deleteSnapshot(volume: string, snapshot: string): Promise<void> {
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      const found = this.snapshot(entry, snapshot);
      await this.pool.deactivateDevice(found.thinId, `snapshot ${snapshot} of ${volume}`);
      await this.pool.deleteDevice(found.thinId, found.createdInTx, () => { entry.snapshots = entry.snapshots.filter((s) => s !== found); });
    });
  }

  /** Activates a snapshot's thin device for reading (mount it read-only, or copy it) and returns its path. */
  activateSnapshot(volume: string, snapshot: string): Promise<string> {
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      const found = this.snapshot(entry, snapshot);
      return this.pool.activateDevice(found.thinId, entry.sectors, `snapshot ${snapshot} of ${volume}`);
    });
  }

  deactivateSnapshot(volume: string, snapshot: string): Promise<void> {
    return this.exclusive(async () => {
      const found = this.snapshot(this.volume(volume), snapshot);
      await this.pool.deactivateDevice(found.thinId, `snapshot ${snapshot} of ${volume}`);
    });
  }

  /**
   * Blocks that differ between snapshot `from` and snapshot `to` (or the live volume when `to`
   * is omitted). Runs thin_delta against a metadata snapshot reserved for the duration, so the
   * pool stays live; the reservation is always released.
   */
  changedBlocks(volume: string, from: string, to?: string): Promise<BlockChanges> {
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      const left = this.snapshot(entry, from).thinId;
      const right = to === undefined ? entry.thinId : this.snapshot(entry, to).thinId;
      const metadata = await this.pool.metadataDevicePath();
      await this.pool.message('reserve_metadata_snap').catch((err: unknown) => {
        if (!isDmFailure(err, 'busy')) throw err;
        throw new StowageError(ErrorCodes.BACKEND_COMMAND, `pool ${this.pool.name} already holds a metadata snapshot (another ` +
          `backup running?); if none is, release it with: dmsetup message ${this.pool.name} 0 release_metadata_snap`,
        { volume, cause: err });
      });
      let xml: string;
      try {
        const result = await this.runner.run('thin_delta',
          ['-m', '--snap1', String(left), '--snap2', String(right), metadata], { timeoutMs: 600_000 });
        xml = result.stdout;
      } finally {
        await this.pool.message('release_metadata_snap');
      }
      const delta = parseThinDelta(xml);
      return { blockSizeBytes: delta.blockSectors * 512, ranges: changedRanges(delta), delta };
    });
  }
}
