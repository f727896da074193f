import { basename, join } from 'node:path';
import type {
  Backend, BackendCapabilities, CreateRequest, RemoveOutcome, RemoveRequest, StorageHealth, VolumeRecord, VolumeUsage,
} from '../../core/backend.js';
import { BackgroundWork } from '../../core/background-work.js';
import { ErrorCodes, StowageError, messageOf, volumeNotFound } from '../../core/errors.js';
import { KeyedMutex } from '../../core/keyed-mutex.js';
import { formatSize } from '../../core/options.js';
import type { BackendContext } from '../context.js';
import { DmBlocks } from './dm-blocks.js';
import { DmSnapshots } from './dm-snapshots.js';
import { evaluatePoolHealth } from './pool-health.js';
import { XFS_MIN_BYTES, type DevicemapperOptions } from './dm-options.js';
import { Dmsetup, explainUnavailable } from './dmsetup.js';
import { PoolDevices } from './pool-devices.js';
import type { RetainedEntry, VolumeEntry } from './pool-state.js';
import { ThinPool } from './thin-pool.js';
import { VolumeFilesystems } from './volume-fs.js';
import { VolumeMounts } from './volume-mounts.js';

/** Knobs for tests; production leaves them unset. */
export interface DevicemapperTuning {
  /** Whether udev manages /dev/mapper; detected from /run/udev/control when unset. */
  udev?: boolean;
  removeAttempts?: number;
  removeDelayMs?: number;
  /** Source of the pool's claim transaction ids (random 48-bit numbers when unset). */
  newTransactionId?: () => number;
}

/**
 * One thin device with its own filesystem per volume, in a device-mapper thin pool. Volumes are
 * mounted under `<root>/devicemapper/mounts/NAME` while attached; state lives in
 * `<root>/devicemapper/POOL.json`. All pool work is serialised by one lock.
 */
export class DevicemapperBackend implements Backend {
  readonly name = 'devicemapper';
  readonly capabilities: BackendCapabilities = { scope: 'local', sizeLimit: 'enforced' };
  readonly snapshots: DmSnapshots;
  /** Block-level reads and writes of thin devices, for block backups and their restores. */
  readonly blocks: DmBlocks;
  readonly pool: ThinPool;
  private readonly dm: Dmsetup;
  private readonly filesystems: VolumeFilesystems;
  private readonly mounts: VolumeMounts;
  private readonly lock = new KeyedMutex();
  /** Creates in progress (their mkfs runs outside the lock); dispose waits for them. */
  private readonly background: BackgroundWork;
  private readonly dir: string;

  constructor(private readonly ctx: BackendContext, readonly options: DevicemapperOptions, private readonly tuning: DevicemapperTuning = {}) {
    this.dir = join(ctx.root, 'devicemapper');
    this.background = new BackgroundWork(ctx.log);
    this.dm = new Dmsetup(ctx.runner, {
      udev: tuning.udev ?? true,
      ...(tuning.removeAttempts !== undefined ? { removeAttempts: tuning.removeAttempts } : {}),
      ...(tuning.removeDelayMs !== undefined ? { removeDelayMs: tuning.removeDelayMs } : {}),
    });
    this.pool = new ThinPool({
      dm: this.dm, devices: new PoolDevices(ctx.runner, ctx.fs, ctx.log), fs: ctx.fs, log: ctx.log,
      nodeId: ctx.nodeId, statePath: join(this.dir, `${options.poolName}.json`),
      ...(tuning.newTransactionId ? { newTransactionId: tuning.newTransactionId } : {}),
    }, options);
    this.filesystems = new VolumeFilesystems(ctx.runner, ctx.fs);
    this.mounts = new VolumeMounts(this.pool, this.filesystems, ctx.fs, this.dir);
    this.snapshots = new DmSnapshots(this.pool, ctx.runner, (task) => this.exclusive(task),
      { filesystems: this.filesystems, fs: ctx.fs, log: ctx.log, dir: this.dir });
    this.blocks = new DmBlocks(this.pool, this.snapshots, ctx.runner, (task) => this.exclusive(task), ctx.log, ctx.fs, this.dir);
    this.snapshots.blockReading = (thinId) => this.blocks.isReading(thinId);
  }

  /** Runs pool work one task at a time. */
  exclusive<T>(task: () => Promise<T>): Promise<T> {
    return this.lock.run('pool', task);
  }

  mountPath(name: string): string {
    return this.mounts.mountPath(name);
  }

  async init(): Promise<void> {
    const { fs } = this.ctx;
    await fs.mkdir(join(this.dir, 'mounts'), { recursive: true });
    await fs.mkdir(join(this.dir, 'removed'), { recursive: true });
    if (this.tuning.udev === undefined) this.dm.udev = await fs.stat('/run/udev/control').then(() => true, () => false);
    await this.exclusive(async () => {
      await this.pool.open().catch((err: unknown) => { throw explainUnavailable(err); });
      for (const entry of Object.values(this.pool.state.volumes)) {
        if (entry.ready) continue;
        await this.discardDevice(entry);
        this.ctx.log.warn(`rolled back the interrupted create of volume ${entry.record.name} (thin id ${entry.thinId})`);
      }
      await this.restoreMounts();
      await this.snapshots.recoverViews();
    });
  }

  /** Re-activates and re-mounts what was mounted before a restart or reboot. */
  private async restoreMounts(): Promise<void> {
    for (const entry of Object.values(this.pool.state.volumes)) {
      if (!entry.mounted) continue;
      await this.mounts.mountVolume(entry).then(
        () => this.ctx.log.info(`volume ${entry.record.name} re-activated and mounted at ${this.mountPath(entry.record.name)}`),
        (err: unknown) => this.ctx.log.error(`volume ${entry.record.name} was mounted but cannot be mounted again: ${messageOf(err)}`));
    }
    const queue = [...this.pool.state.retained];
    for (let retained = queue.shift(); retained; retained = queue.shift()) {
      const entry = retained;
      await this.mounts.mountRetained(entry).catch((err: unknown) => {
        if (err instanceof StowageError && err.code === ErrorCodes.VOLUME_DATA_MISSING) {
          queue.push(...this.forgetRetained(entry));
        } else {
          this.ctx.log.error(`retained data of ${entry.name} cannot be mounted at ${entry.path}: ${messageOf(err)}`);
        }
      });
    }
    await this.pool.save();
  }

  /**
   * Retained data whose device was discarded by hand is forgotten; its snapshots were not
   * discarded, so each becomes retained data of its own (`NAME@SNAPSHOT`), listed and mounted.
   */
  private forgetRetained(retained: RetainedEntry): RetainedEntry[] {
    const state = this.pool.state;
    state.retained = state.retained.filter((r) => r !== retained);
    const promoted = retained.snapshots.map((s): RetainedEntry => ({
      name: `${retained.name}@${s.name}`, removedAt: retained.removedAt, thinId: s.thinId,
      ...(s.createdInTx !== undefined ? { createdInTx: s.createdInTx } : {}), sectors: retained.sectors, fs: retained.fs,
      path: this.mounts.retainedPath(`${retained.name}@${s.name}`), snapshots: [],
    }));
    state.retained.push(...promoted);
    this.ctx.log.info(`retained data of ${retained.name} (thin id ${retained.thinId}) was deleted outside stowage; forgetting it` +
      (promoted.length > 0 ? `; its snapshots stay as retained data: ${promoted.map((p) => `${p.name} (thin id ${p.thinId})`).join(', ')}` : ''));
    return promoted;
  }

  async dispose(): Promise<void> {
    // The pool and mounted volumes stay up: they are the storage, not resources of this process.
    await this.background.settle();
    await this.exclusive(async () => undefined);
  }

  private entry(name: string): VolumeEntry | undefined {
    const entry = this.pool.state.volumes[name];
    return entry?.ready ? entry : undefined;
  }

  private mustEntry(name: string): VolumeEntry {
    const entry = this.entry(name);
    if (!entry) throw volumeNotFound(name);
    return entry;
  }

  /**
   * Pool changes run under the lock; making the filesystem does not, so a big mkfs never holds
   * up other volumes. The entry is invisible (not ready) until its filesystem exists, and the
   * core never runs two operations on one name at once.
   */
  create(request: CreateRequest): Promise<VolumeRecord> {
    return this.background.track(this.createVolume(request));
  }

  private async createVolume(request: CreateRequest): Promise<VolumeRecord> {
    const { record } = request;
    const { name, options } = record;
    const size = options.size ?? this.options.defaultVolumeSize;
    const fsType = this.options.filesystem;
    if (fsType === 'xfs' && size < XFS_MIN_BYTES) {
      throw new StowageError(ErrorCodes.INVALID_OPTION, `volume ${name}: size ${formatSize(size)} is below 300MiB, the smallest ` +
        'filesystem mkfs.xfs makes; ask for more (thin volumes only use what is written)', { volume: name });
    }
    const sectors = Math.ceil(size / 512);
    const created: VolumeEntry = { record, thinId: -1, sectors, fs: fsType, ready: false, mounted: false, prepared: false, snapshots: [] };
    await this.exclusive(async () => {
      if (this.pool.state.volumes[name]) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
      await this.pool.assertCanCreate(`volume ${name}`, name);
      await this.pool.createDevice(undefined, (thinId, createdInTx) => {
        created.thinId = thinId;
        created.createdInTx = createdInTx;
        this.pool.state.volumes[name] = created;
      });
    });
    try {
      const device = await this.pool.activateDevice(created.thinId, sectors, `volume ${name}`);
      await this.filesystems.mkfs(device, fsType, name);
      await this.pool.deactivateDevice(created.thinId, `volume ${name}`);
    } catch (err) {
      await this.exclusive(() => this.discardDevice(created)).catch((cleanup: unknown) =>
        this.ctx.log.error(`cleaning up after the failed create of ${name}: ${messageOf(cleanup)}`));
      throw err;
    }
    return this.exclusive(async () => {
      created.ready = true;
      await this.pool.save();
      return record;
    });
  }

  /** Deactivates and deletes a volume's thin device and its snapshots, dropping its entry. */
  private async discardDevice(entry: VolumeEntry, volumeInactive = false): Promise<void> {
    const name = entry.record.name;
    if (!volumeInactive) await this.pool.deactivateDevice(entry.thinId, `volume ${name}`);
    for (const snapshot of [...entry.snapshots]) {
      await this.pool.deactivateDevice(snapshot.thinId, `snapshot ${snapshot.name} of ${name}`);
      await this.pool.deleteDevice(snapshot.thinId, snapshot.createdInTx, () => { entry.snapshots = entry.snapshots.filter((s) => s !== snapshot); });
    }
    await this.pool.deleteDevice(entry.thinId, entry.createdInTx, () => { delete this.pool.state.volumes[name]; });
  }

  async get(name: string): Promise<VolumeRecord | undefined> {
    return this.entry(name)?.record;
  }

  async list(): Promise<VolumeRecord[]> {
    return Object.values(this.pool.state.volumes).filter((v) => v.ready).map((v) => v.record)
      .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async remove(name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    return this.exclusive(async () => {
      const entry = this.entry(name);
      if (!entry) return {};
      await this.snapshots.closeViews(entry, `remove volume ${name}`);
      // The core removes only volumes it has no mounts of; a mount left at our path is stale.
      await this.mounts.unmount(name);
      await this.pool.deactivateDevice(entry.thinId, `volume ${name}`);
      entry.mounted = false;
      if (!request.retain) {
        await this.discardDevice(entry, true);
        await this.ctx.fs.rmdir(this.mountPath(name)).catch(() => undefined);
        return {};
      }
      const retained: RetainedEntry = {
        name, removedAt: new Date().toISOString(), thinId: entry.thinId,
        ...(entry.createdInTx !== undefined ? { createdInTx: entry.createdInTx } : {}), sectors: entry.sectors, fs: entry.fs,
        path: this.mounts.retainedPath(name), snapshots: entry.snapshots,
      };
      delete this.pool.state.volumes[name];
      this.pool.state.retained.push(retained);
      await this.pool.save();
      await this.ctx.fs.rmdir(this.mountPath(name)).catch(() => undefined);
      await this.mounts.mountRetained(retained).catch((err: unknown) => {
        throw new StowageError(ErrorCodes.BACKEND_COMMAND, `volume ${name} was removed and its data kept as thin device ` +
          `${retained.thinId}, but mounting it read-only at ${retained.path} failed: ${messageOf(err)}`, { volume: name, cause: err });
      });
      return { retainedAt: retained.path };
    });
  }

  async attach(name: string): Promise<string> {
    return this.exclusive(async () => {
      const entry = this.mustEntry(name);
      const path = await this.mounts.mountVolume(entry);
      if (!entry.mounted) {
        entry.mounted = true;
        await this.pool.save();
      }
      return path;
    });
  }

  async detach(name: string): Promise<void> {
    return this.exclusive(async () => {
      const entry = this.entry(name);
      if (!entry) return;
      await this.mounts.unmount(name);
      await this.pool.deactivateDevice(entry.thinId, `volume ${name}`);
      if (entry.mounted) {
        entry.mounted = false;
        await this.pool.save();
      }
    });
  }

  async volumeStatus(name: string): Promise<Record<string, string>> {
    const entry = this.entry(name);
    if (!entry) return {};
    const status: Record<string, string> = {
      pool: this.pool.name, thinId: String(entry.thinId), device: this.pool.devicePath(entry.thinId),
      deviceSize: formatSize(entry.sectors * 512), filesystem: entry.fs, snapshots: String(entry.snapshots.length),
    };
    try {
      const health = await this.pool.health();
      Object.assign(status, health.facts, health.problem ? { poolProblem: health.problem } : {});
      const thin = await this.pool.deviceStatus(entry.thinId);
      status.active = String(thin !== undefined);
      if (thin) status.allocated = formatSize(thin.mappedSectors * 512);
    } catch (err) {
      status.warning = `pool status unavailable: ${messageOf(err)}`;
    }
    return status;
  }

  /** The thin device's mapped blocks against its size (`dmsetup status`): one call, no filesystem read. */
  async usage(name: string): Promise<VolumeUsage | undefined> {
    const entry = this.entry(name);
    if (!entry) return undefined;
    const capacityBytes = entry.sectors * 512;
    const thin = await this.pool.deviceStatus(entry.thinId);
    // An inactive device has no status; its blocks are still the pool's to count, but not here.
    if (!thin) return undefined;
    const usedBytes = thin.mappedSectors * 512;
    return { capacityBytes, usedBytes, availableBytes: Math.max(0, capacityBytes - usedBytes) };
  }

  async storageHealth(): Promise<StorageHealth> {
    const status = await this.pool.status();
    if (status.failed) {
      return { thinPool: { pool: this.pool.name, dataUsedBytes: 0, dataSizeBytes: 0, metadataUsedBytes: 0, metadataSizeBytes: 0, healthy: false } };
    }
    const health = evaluatePoolHealth(this.pool.name, status, this.pool.blockSectors);
    const blockBytes = this.pool.blockSectors * 512;
    return {
      thinPool: {
        pool: this.pool.name,
        dataUsedBytes: status.usedDataBlocks * blockBytes,
        dataSizeBytes: status.totalDataBlocks * blockBytes,
        // dm-thin counts metadata in 4 KiB blocks, whatever the data block size.
        metadataUsedBytes: status.usedMetadataBlocks * 4096,
        metadataSizeBytes: status.totalMetadataBlocks * 4096,
        healthy: health.condition === 'healthy' || health.condition === 'nearly-full',
      },
    };
  }

  async describe(): Promise<Record<string, string>> {
    const state = this.pool.state;
    const facts: Record<string, string> = {
      'dm.thinpoolname': this.pool.name,
      'dm.datadev': state.pool.dataDevice ?? '(adopted pool)',
      'dm.metadatadev': state.pool.metadataDevice ?? '(adopted pool)',
      'dm.thinpoolblocksize': String(state.pool.blockSectors),
      'dm.defaultvolumesize': formatSize(this.options.defaultVolumeSize),
      'dm.fs': this.options.filesystem,
      poolCreatedBy: state.pool.createdByStowage ? 'stowage' : 'adopted',
      transactionId: String(state.transactionId),
      retainedVolumes: String(state.retained.length),
    };
    for (const r of state.retained) {
      const snapshots = r.snapshots.map((s) => `${s.name}=${s.thinId}`).join(', ');
      facts[`retained:${basename(r.path)}`] = `thin id ${r.thinId}${snapshots ? ` (snapshots: ${snapshots})` : ''} at ${r.path}`;
    }
    try {
      const health = await this.pool.health();
      Object.assign(facts, health.facts, health.problem ? { poolProblem: health.problem } : {});
    } catch (err) {
      facts.poolHealth = 'unknown';
      facts.warning = `pool status unavailable: ${messageOf(err)}`;
    }
    return facts;
  }
}
