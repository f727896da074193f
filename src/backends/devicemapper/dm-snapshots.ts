import { join } from 'node:path';
import type { SnapshotRecord, SnapshotSource, SnapshotSupport } from '../../core/backend.js';
import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, errnoCode, messageOf, volumeNotFound } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { validateVolumeName } from '../../core/names.js';
import { isDmFailure } from './dmsetup.js';
import type { SnapshotEntry, VolumeEntry } from './pool-state.js';
import { changedRanges, parseThinDelta, type ChangedRange, type ThinDelta } from './thin-delta-parser.js';
import type { ThinPool } from './thin-pool.js';
import type { VolumeFilesystems } from './volume-fs.js';

/** What changed between two thin devices of one volume, for incremental backups. */
export interface BlockChanges {
  /** Pool block size in bytes: the granularity of `ranges`. */
  blockSizeBytes: number;
  /** Byte ranges of `to` that differ from `from`, sorted and merged. */
  ranges: ChangedRange[];
  delta: ThinDelta;
}

/** Snapshot names follow the volume-name rule (they name a directory of the view); the message says which name. */
function validateSnapshotName(name: string): void {
  try {
    validateVolumeName(name);
  } catch (err) {
    if (!(err instanceof StowageError)) throw err;
    throw new StowageError(ErrorCodes.INVALID_NAME, err.message.replace(/^invalid volume name/, 'invalid snapshot name'));
  }
}

/** Where and how snapshots are mounted for reading. */
export interface SnapshotViewDeps {
  filesystems: VolumeFilesystems;
  fs: FsPort;
  log: Logger;
  /** The backend's directory; views are mounted under `snapshots/VOLUME/SNAPSHOT` in it. */
  dir: string;
}

/** A snapshot mounted read-only for its readers; unmounted when the last one releases it. */
interface View {
  volume: string;
  snapshot: string;
  thinId: number;
  path: string;
  readers: number;
}

/**
 * Thin snapshots: `create_snap` (the origin suspended around it while active), list, delete,
 * block-level differences between snapshots with thin_delta on a reserved metadata snapshot,
 * and read-only mounts of snapshots for backups.
 *
 * `dmsetup suspend` (without --nolockfs) freezes a mounted origin's filesystem before the
 * snapshot is taken: dirty data is written and the journal committed, so a snapshot of a mounted
 * volume is a clean filesystem, consistent as at a `sync` (not what a running application holds
 * in memory).
 */
export class DmSnapshots implements SnapshotSupport {
  /** Open views by thin id. */
  private readonly views = new Map<number, View>();
  /** Whether a block backup reads a snapshot's device (set by the backend: see dm-blocks.ts). */
  blockReading: (thinId: number) => boolean = () => false;

  constructor(
    private readonly pool: ThinPool,
    private readonly runner: CommandRunner,
    private readonly exclusive: <T>(task: () => Promise<T>) => Promise<T>,
    private readonly viewDeps: SnapshotViewDeps,
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
      await this.closeViews(entry, `delete snapshot ${snapshot} of volume ${volume}`, [found]);
      await this.pool.deactivateDevice(found.thinId, `snapshot ${snapshot} of ${volume}`);
      await this.pool.deleteDevice(found.thinId, found.createdInTx, () => { entry.snapshots = entry.snapshots.filter((s) => s !== found); });
    });
  }

  /**
   * Mounts the snapshot read-only at `snapshots/VOLUME/SNAPSHOT` under the backend's directory,
   * on a read-only activation of its thin device, and gives that directory. Readers of one
   * snapshot share the mount; the last `release` unmounts it and deactivates the device. While
   * it is open, the snapshot cannot be deleted nor its volume removed.
   */
  async openSnapshot(volume: string, snapshot: string): Promise<SnapshotSource> {
    validateVolumeName(volume);
    validateSnapshotName(snapshot);
    return this.exclusive(async () => {
      const entry = this.volume(volume);
      const found = this.snapshot(entry, snapshot);
      const view = this.views.get(found.thinId) ?? await this.mountView(entry, found);
      view.readers += 1;
      let released = false;
      return {
        kind: 'tree', path: view.path,
        release: () => {
          if (released) return Promise.resolve();
          released = true;
          return this.exclusive(() => this.closeView(view));
        },
      };
    });
  }

  /** Whether a snapshot is mounted as a view (its device then stays active for it). */
  hasView(thinId: number): boolean {
    return this.views.has(thinId);
  }

  private viewPath(volume: string, snapshot: string): string {
    return join(this.viewDeps.dir, 'snapshots', volume, snapshot);
  }

  private async mountView(entry: VolumeEntry, found: SnapshotEntry): Promise<View> {
    const { filesystems, fs } = this.viewDeps;
    const volume = entry.record.name;
    const label = `snapshot ${found.name} of ${volume}`;
    const path = this.viewPath(volume, found.name);
    const device = await this.pool.activateDevice(found.thinId, entry.sectors, label, true);
    try {
      const mounted = await filesystems.mountedAt(path);
      if (mounted && mounted.source !== device) {
        throw new StowageError(ErrorCodes.DATA_CONFLICT, `${mounted.source} is mounted at ${path}, where ${label} is shown; ` +
          'unmount it and try again', { volume });
      }
      if (!mounted) {
        await fs.mkdir(path, { recursive: true });
        await filesystems.mountSnapshot(device, path, entry.fs, volume, found.name);
      }
    } catch (err) {
      await this.pool.deactivateDevice(found.thinId, label).catch((cleanup: unknown) =>
        this.viewDeps.log.error(`deactivating ${label} after its mount failed: ${messageOf(cleanup)}`));
      throw err;
    }
    const view: View = { volume, snapshot: found.name, thinId: found.thinId, path, readers: 0 };
    this.views.set(found.thinId, view);
    return view;
  }

  /** One reader fewer; the last one unmounts. A failed unmount keeps the view, so delete still refuses. */
  private async closeView(view: View): Promise<void> {
    view.readers = Math.max(0, view.readers - 1);
    if (view.readers > 0) return;
    const label = `snapshot ${view.snapshot} of ${view.volume}`;
    await this.viewDeps.filesystems.unmount(view.path, view.volume, label);
    if (!this.blockReading(view.thinId)) await this.pool.deactivateDevice(view.thinId, label);
    this.views.delete(view.thinId);
    await this.removeViewDirs(view.path);
  }

  /** The view's (empty) mount point and its volume's directory when that is empty too: rmdir never deletes files. */
  private async removeViewDirs(path: string): Promise<void> {
    const { fs } = this.viewDeps;
    await fs.rmdir(path).catch(() => undefined);
    await fs.rmdir(join(path, '..')).catch(() => undefined);
  }

  /**
   * Before `what` deletes snapshots of the volume (`among`, or all): refuses while one is open for
   * reading; unmounts a view whose last release failed to (its mount was busy then).
   */
  async closeViews(entry: VolumeEntry, what: string, among: SnapshotEntry[] = entry.snapshots): Promise<void> {
    const views = among.map((s) => this.views.get(s.thinId)).filter((v): v is View => v !== undefined);
    const open = views.filter((v) => v.readers > 0);
    const blockRead = among.filter((s) => this.blockReading(s.thinId));
    if (blockRead.length > 0) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE, `cannot ${what}: a block backup reads snapshot ${blockRead.map((s) => s.name).join(', ')} ` +
        `of volume ${entry.record.name}; try again when it is done`, { volume: entry.record.name });
    }
    if (open.length > 0) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE, `cannot ${what}: snapshot ${open.map((v) => v.snapshot).join(', ')} of ` +
        `volume ${entry.record.name} is open for reading (a backup reads it at ${open[0]!.path}); try again when it is done`,
      { volume: entry.record.name });
    }
    for (const view of views) await this.closeView(view);
  }

  /**
   * At start, under the pool lock: views a previous run left (it crashed or was killed while a
   * backup read a snapshot) are unmounted and their devices deactivated. Nothing reads them
   * now, as views belong to this process. A view that stays busy is reported, not forced.
   */
  async recoverViews(): Promise<void> {
    const { filesystems, fs, log } = this.viewDeps;
    const root = join(this.viewDeps.dir, 'snapshots');
    const volumes = await fs.readdir(root).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return [] as string[];
      throw err;
    });
    for (const volume of volumes.map(String)) {
      const snapshots = await fs.readdir(join(root, volume)).catch(() => [] as string[]);
      for (const snapshot of snapshots.map(String)) {
        const path = join(root, volume, snapshot);
        try {
          if (await filesystems.mountedAt(path)) {
            await filesystems.unmount(path, volume, `the leftover view of snapshot ${snapshot} of ${volume}`);
            log.warn(`unmounted ${path}, a read-only view of snapshot ${snapshot} of ${volume} left by an earlier run`);
          }
          await fs.rmdir(path).catch((err: unknown) => {
            if (errnoCode(err) !== 'ENOTEMPTY' && errnoCode(err) !== 'ENOTDIR') throw err;
            log.warn(`${path}, where snapshot views are mounted, holds files although nothing is mounted there; left as it is`);
          });
          await fs.rmdir(join(root, volume)).catch(() => undefined);
        } catch (err) {
          log.error(`a read-only view of snapshot ${snapshot} of ${volume} left by an earlier run stays at ${path}: ${messageOf(err)}`);
        }
      }
    }
    const entries = Object.values(this.pool.state.volumes).filter((v) => v.ready && v.snapshots.length > 0);
    if (entries.length === 0) return;
    const active = await this.pool.activeDevices();
    for (const entry of entries) {
      for (const s of entry.snapshots) {
        if (!active.has(this.pool.deviceName(s.thinId))) continue;
        const label = `snapshot ${s.name} of ${entry.record.name}`;
        await this.pool.deactivateDevice(s.thinId, label).then(
          () => log.warn(`deactivated ${label} (${this.pool.devicePath(s.thinId)}), left active by an earlier run`),
          (err: unknown) => log.error(`${label} stays active: ${messageOf(err)}`));
      }
    }
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
