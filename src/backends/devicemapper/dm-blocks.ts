import type { BlockDevice, BlockSupport, ByteRange } from '../../core/backup/block-support.js';
import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, messageOf, volumeNotFound } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { join } from 'node:path';
import type { DmSnapshots } from './dm-snapshots.js';
import { isDmFailure } from './dmsetup.js';
import type { SnapshotEntry, VolumeEntry } from './pool-state.js';
import { parseMappedRanges } from './thin-mappings-parser.js';
import type { ThinPool } from './thin-pool.js';

/**
 * Block-level access to thin devices for block backups: a snapshot's device activated
 * read-only, its mapped blocks (thin_dump) and its changes since another snapshot (thin_delta,
 * both on a reserved metadata snapshot, so the pool stays live), and the device of a volume
 * being restored, written before it is ever mounted.
 */
export class DmBlocks implements BlockSupport {
  /** Snapshot devices open for block reads, by thin id (a count: readers share the activation). */
  private readonly readers = new Map<number, number>();

  constructor(
    private readonly pool: ThinPool,
    private readonly snapshots: DmSnapshots,
    private readonly runner: CommandRunner,
    private readonly exclusive: <T>(task: () => Promise<T>) => Promise<T>,
    private readonly log: Logger,
    private readonly fs: FsPort,
    /** The backend's directory: a restored xfs is mounted once under `restoring/` in it. */
    private readonly dir: string,
  ) {}

  private volume(name: string): VolumeEntry {
    const entry = this.pool.state.volumes[name];
    if (!entry?.ready) throw volumeNotFound(name);
    return entry;
  }

  private snapshot(entry: VolumeEntry, name: string): SnapshotEntry {
    const found = entry.snapshots.find((s) => s.name === name);
    if (!found) throw new StowageError(ErrorCodes.SNAPSHOT_NOT_FOUND, `volume ${entry.record.name} has no snapshot ${name}`, { volume: entry.record.name });
    return found;
  }

  /** Open block readers of a volume's snapshots: deleting one of them must wait (see DmSnapshots.closeViews). */
  isReading(thinId: number): boolean {
    return (this.readers.get(thinId) ?? 0) > 0;
  }

  async snapshotIdentity(volume: string, snapshot: string): Promise<string | undefined> {
    const entry = this.pool.state.volumes[volume];
    const found = entry?.ready ? entry.snapshots.find((s) => s.name === snapshot) : undefined;
    if (!found) return undefined;
    return `${this.pool.name}/${found.thinId}/${found.createdInTx ?? '-'}/${found.createdAt}/${snapshot}`;
  }

  openSnapshotDevice(volume: string, snapshot: string): Promise<BlockDevice> {
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      const found = this.snapshot(entry, snapshot);
      const label = `snapshot ${snapshot} of ${volume}`;
      const path = await this.pool.activateDevice(found.thinId, entry.sectors, label, true);
      this.readers.set(found.thinId, (this.readers.get(found.thinId) ?? 0) + 1);
      let released = false;
      return {
        path, sizeBytes: entry.sectors * 512, filesystem: entry.fs,
        release: () => {
          if (released) return Promise.resolve();
          released = true;
          return this.exclusive(async () => {
            const left = (this.readers.get(found.thinId) ?? 1) - 1;
            if (left > 0) { this.readers.set(found.thinId, left); return; }
            this.readers.delete(found.thinId);
            // A mounted view of the same snapshot (a file-level backup) keeps the device active.
            if (this.snapshots.hasView(found.thinId)) return;
            await this.pool.deactivateDevice(found.thinId, label);
          });
        },
      };
    });
  }

  mappedRanges(volume: string, snapshot: string): Promise<ByteRange[]> {
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      const found = this.snapshot(entry, snapshot);
      return this.mappedOf(found.thinId, volume);
    });
  }

  /** Under the pool lock. */
  private async mappedOf(thinId: number, volume: string): Promise<ByteRange[]> {
    const metadata = await this.pool.metadataDevicePath();
    await this.reserve(volume);
    let xml: string;
    try {
      xml = (await this.runner.run('thin_dump', ['-m', '--dev-id', String(thinId), metadata], { timeoutMs: 600_000 })).stdout;
    } finally {
      await this.pool.message('release_metadata_snap');
    }
    return parseMappedRanges(xml, thinId).ranges;
  }

  private async reserve(volume: string): Promise<void> {
    await this.pool.message('reserve_metadata_snap').catch((err: unknown) => {
      if (!isDmFailure(err, 'busy')) throw err;
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `pool ${this.pool.name} already holds a metadata snapshot (another ` +
        `backup running?); if none is, release it with: dmsetup message ${this.pool.name} 0 release_metadata_snap`, { volume, cause: err });
    });
  }

  async changedRanges(volume: string, from: string, to: string): Promise<ByteRange[]> {
    return (await this.snapshots.changedBlocks(volume, from, to)).ranges;
  }

  /**
   * The volume the backup came from may be mounted on this node with the same xfs UUID, which
   * xfs refuses: the copy gets a new one. A snapshot of a mounted xfs has a log to replay
   * first (xfs_admin refuses, or does nothing, otherwise): one mount (nouuid) and unmount does it.
   */
  private async newXfsUuid(volume: string, device: string): Promise<void> {
    const mountPoint = join(this.dir, 'restoring', volume);
    await this.fs.mkdir(mountPoint, { recursive: true });
    try {
      await this.check(await this.runner.run('mount', ['-t', 'xfs', '-o', 'nouuid', device, mountPoint], { allowFailure: true, timeoutMs: 600_000 }),
        `replaying the log of the restored xfs filesystem of ${volume}`, volume);
      await this.check(await this.runner.run('umount', [mountPoint], { allowFailure: true, timeoutMs: 120_000 }),
        `unmounting the restored xfs filesystem of ${volume} from ${mountPoint}`, volume);
    } finally {
      await this.fs.rmdir(mountPoint).catch(() => undefined);
    }
    await this.check(await this.runner.run('xfs_admin', ['-U', 'generate', device], { allowFailure: true, timeoutMs: 600_000 }),
      `giving the restored xfs filesystem of ${volume} a new UUID`, volume);
  }

  private check(result: { exitCode: number; stdout: string; stderr: string }, what: string, volume: string): void {
    // xfs_db (under xfs_admin) reports some refusals with ERROR and exit status 0.
    if (result.exitCode !== 0 || /^ERROR/m.test(result.stderr) || /^ERROR/m.test(result.stdout)) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `${what} failed: ${(result.stderr || result.stdout).trim().split('\n').slice(0, 3).join(' ')}`, { volume });
    }
  }

  async writeNewVolume(volume: string, image: { sizeBytes: number; filesystem: string },
    write: (device: string, mapped: ByteRange[]) => Promise<void>): Promise<void> {
    const fs = image.filesystem;
    if (fs !== 'ext4' && fs !== 'xfs') {
      throw new StowageError(ErrorCodes.NOT_SUPPORTED, `the backup holds a ${fs} filesystem; devicemapper volumes hold ext4 or xfs`, { volume });
    }
    const label = `volume ${volume}`;
    const { device, mapped, entry } = await this.exclusive(async () => {
      const found = this.volume(volume);
      if (found.mounted) throw new StowageError(ErrorCodes.VOLUME_IN_USE, `volume ${volume} is mounted: a block restore writes a new, unmounted volume only`, { volume });
      if (found.sectors * 512 !== image.sizeBytes) {
        throw new StowageError(ErrorCodes.INVALID_OPTION, `volume ${volume} has ${found.sectors * 512} bytes; the backup's device has ${image.sizeBytes}`, { volume });
      }
      const ranges = await this.mappedOf(found.thinId, volume);
      return { device: await this.pool.activateDevice(found.thinId, found.sectors, label), mapped: ranges, entry: found };
    });
    try {
      await write(device, mapped);
      if (fs === 'xfs') await this.newXfsUuid(volume, device);
    } finally {
      await this.exclusive(() => this.pool.deactivateDevice(entry.thinId, label)).catch((err: unknown) =>
        this.log.error(`deactivating ${label} after its block restore: ${messageOf(err)}`));
    }
    await this.exclusive(async () => {
      entry.fs = fs;
      // The filesystem is the backup's, lost+found, owner and mode included: no first-attach preparation.
      entry.prepared = true;
      await this.pool.save();
    });
  }
}
