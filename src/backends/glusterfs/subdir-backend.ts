import { constants } from 'node:fs';
import { join } from 'node:path';
import type {
  Backend, BackendCapabilities, CreateRequest, Lease, RemoveOutcome, RemoveRequest, SnapshotSupport, StorageHealth, VolumeRecord,
  VolumeUsage,
} from '../../core/backend.js';
import { filesystemSpace } from '../../core/disk-usage.js';
import type { BackendContext } from '../context.js';
import { VfsBackend } from '../vfs/vfs-backend.js';
import type { GlusterCli } from './gluster-cli.js';
import { layout, type GlusterfsOptions } from './glusterfs-options.js';
import { causeOf, type PoolMount } from './pool-mount.js';
import { quotaFacts } from './usage.js';
import { errnoCode, messageOf } from '../../core/errors.js';

/**
 * subdir mode: one existing gluster volume (the pool) is mounted once per node under `--root`;
 * each stowage volume is a top-level directory of the pool, and the registry lives in the pool
 * (`.stowage/`), so every node sees every volume. Inside the mount this is exactly a shared vfs
 * store, so the vfs backend does the directory work (registry, adopt checks, the retain policy, crash-safe
 * purge); this class owns the mount, which it confirms before every vfs call, and the quotas.
 */
/**
 * A GlusterFS client answers EIO or ENOTCONN for a few seconds after the pool's bricks come back
 * (a `gluster volume start`, a brick restarted) until it has reconnected to them; it retries
 * about every 3 s. A mount in that window waits instead of failing, up to this long.
 */
const RECONNECT_WAIT_MS = 10_000;

function whileReconnecting(err: unknown): boolean {
  const code = errnoCode(causeOf(err));
  return code === 'EIO' || code === 'ENOTCONN';
}

export class GlusterSubdirBackend implements Backend {
  readonly name = 'glusterfs';
  readonly capabilities: BackendCapabilities;
  /** The core keeps node records, references and name locks here, in the pool every node mounts. */
  readonly clusterStateDir: string;
  private readonly store: VfsBackend;
  private readonly mountpoint: string;
  /** The vfs store's snapshots (a repository in the pool's `.stowage/`), with the pool confirmed first. */
  readonly snapshots: SnapshotSupport;
  private readonly pool: string;

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: GlusterfsOptions,
    private readonly cli: GlusterCli,
    private readonly poolMount: PoolMount,
  ) {
    this.pool = poolMount.pool;
    this.mountpoint = poolMount.mountpoint;
    this.store = new VfsBackend(ctx, { path: this.mountpoint, shared: true }, 'glusterfs');
    const inner = this.store.snapshots;
    this.snapshots = {
      createSnapshot: async (volume, snapshot, options) => { await this.ensurePool(volume); return inner.createSnapshot(volume, snapshot, options); },
      listSnapshots: async (volume) => { await this.ensurePool(volume); return inner.listSnapshots(volume); },
      deleteSnapshot: async (volume, snapshot) => { await this.ensurePool(volume); return inner.deleteSnapshot(volume, snapshot); },
      openSnapshot: async (volume, snapshot) => { await this.ensurePool(volume); return inner.openSnapshot(volume, snapshot); },
      // Without it a backup would take a snapshot (a full read into the pool's repository) and
      // copy it: twice the reads, and no files cache from the volume's previous backup there.
      readLive: async (volume, work) => { await this.ensurePool(volume); return inner.readLive(volume, work); },
    };
    this.clusterStateDir = this.store.clusterStateDir;
    this.capabilities = {
      scope: 'global', clusterStateDir: this.clusterStateDir, sizeLimit: options.quota ? 'enforced' : 'recorded',
    };
  }

  async init(): Promise<void> {
    // The gluster CLI and mount write their logs there from the first call on.
    await this.ctx.fs.mkdir(layout(this.ctx.root).logs, { recursive: true });
    const info = await this.poolMount.init();
    await this.store.init();
    // Limits set before (by hand, or by a stowage with other settings) get the configured checking too.
    if (this.options.quota && info.options['features.quota'] === 'on') {
      await this.cli.quotaTimeouts(this.pool, this.options.quotaTimeoutS, info);
    }
    if (this.options.quota) await this.restoreLimits(info.options['features.quota'] === 'on');
  }

  /**
   * Sets the limit of every volume whose size is recorded but has none: a daemon killed between
   * a create's registry write and its limit, or between a remove's limit drop and the store's
   * remove, leaves one. A limit gluster cannot show (see GlusterCli.quotaUsage) is left as is.
   */
  private async restoreLimits(quotaOn: boolean): Promise<void> {
    for (const record of await this.store.list()) {
      const size = record.options.size;
      if (size === undefined) continue;
      try {
        if (quotaOn) {
          const usage = await this.cli.quotaUsage(this.pool, `/${record.name}`);
          if (usage === undefined || usage.hardLimit !== undefined) continue;
        }
        await this.cli.limitUsage(this.pool, `/${record.name}`, size, this.options.quotaTimeoutS);
        quotaOn = true;
        this.ctx.log.warn(`volume ${record.name} had no gluster quota limit though its size is ${size} bytes ` +
          '(a create or remove stopped half-way); the limit is set again');
      } catch (err) {
        this.ctx.log.error(`volume ${record.name} has no gluster quota limit and setting it failed: ${messageOf(err)}`);
      }
    }
  }

  async dispose(): Promise<void> {
    // The pool stays mounted: running containers use it, and the next daemon start reuses it.
    await this.store.dispose();
  }

  /** Waits for background deletions (tests). */
  settle(): Promise<void> {
    return this.store.settle();
  }

  private ensurePool(volume?: string): Promise<void> {
    return this.poolMount.ensure(volume);
  }

  /** The core's name locks live in the pool: a stopped pool is reported as such, not as a failed lock file. */
  ready(volume: string): Promise<void> {
    return this.ensurePool(volume);
  }

  /** The pool's store, without mounting it again: a heartbeat only asks. */
  assertClusterStore(): Promise<void> {
    return this.store.assertClusterStore();
  }

  async create(request: CreateRequest): Promise<VolumeRecord> {
    const { name, options } = request.record;
    await this.ensurePool(name);
    const record = await this.store.create(request);
    const size = options.size;
    if (size !== undefined && this.options.quota) {
      try {
        await this.cli.limitUsage(this.pool, `/${name}`, size, this.options.quotaTimeoutS);
      } catch (err) {
        // A volume without the limit the user asked for is worse than no volume.
        request.lease?.assertHeld(`undoing the create of volume ${name}`, { cause: err }); // lease check
        await this.undoCreate(record, request.lease).catch((undo: unknown) =>
          this.ctx.log.error(`could not undo volume ${name}: ${messageOf(undo)}`));
        throw err;
      }
    }
    return record;
  }

  /** Unregisters a volume whose create failed half-way; adopted data goes back where it was found. */
  private async undoCreate(record: VolumeRecord, lease?: Lease): Promise<void> {
    if (!record.adopted) {
      await this.store.remove(record.name, { retain: false, lease });
      return;
    }
    const { retainedAt } = await this.store.remove(record.name, { retain: true, lease });
    if (retainedAt) await this.ctx.fs.rename(retainedAt, join(this.mountpoint, record.name));
  }

  get(name: string): Promise<VolumeRecord | undefined> {
    return this.poolMount.read(() => this.store.get(name), name);
  }

  list(): Promise<VolumeRecord[]> {
    return this.poolMount.read(() => this.store.list());
  }

  async remove(name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    await this.ensurePool(name);
    const record = await this.store.get(name);
    if (!record) return {};
    const size = this.options.quota ? record.options.size : undefined;
    // Before the store's remove, while the path still names the directory (gluster drops a limit by path).
    if (size !== undefined) await this.cli.removeLimit(this.pool, `/${name}`);
    try {
      return await this.store.remove(name, request);
    } catch (err) {
      // A refused or failed remove changes nothing: a volume still registered gets its limit back (or at the next start).
      if (size !== undefined && await this.store.get(name).then(Boolean, () => true)) {
        await this.cli.limitUsage(this.pool, `/${name}`, size, this.options.quotaTimeoutS).catch((undo: unknown) =>
          this.ctx.log.error(`volume ${name} stays without its gluster quota limit until the next start: ${messageOf(undo)}`));
      }
      throw err;
    }
  }

  async attach(name: string, known?: VolumeRecord): Promise<string> {
    await this.ensurePool(name);
    const deadline = Date.now() + RECONNECT_WAIT_MS;
    for (let told = false; ; told = true) {
      try {
        // Only the first try may take the record as read: a retry comes half a second later.
        return await this.attachOnce(name, told ? undefined : known);
      } catch (err) {
        if (!whileReconnecting(err) || Date.now() >= deadline) throw err;
        if (!told) this.ctx.log.info(`volume ${name}: the pool ${this.pool} answers ${errnoCode(causeOf(err))}; waiting up to ${RECONNECT_WAIT_MS / 1000} s for its client to reconnect to the bricks`);
        await new Promise((resolve) => setTimeout(resolve, 500));
      }
    }
  }

  private async attachOnce(name: string, known?: VolumeRecord): Promise<string> {
    // The vfs store refuses a missing directory (VOLUME_DATA_MISSING) and never creates one.
    const path = await this.store.attach(name, known);
    // After a remove and re-create through another node this kernel may still hold the old
    // directory's entry for a second (FUSE entry cache). Docker's bind mount would pin it and the
    // container would get "Stale file handle"; an open revalidates the entry (the kernel retries
    // a stale open with a fresh lookup) before anyone pins it.
    // O_DIRECTORY: whatever another node put at the name is never opened unless a directory.
    const handle = await this.ctx.fs.open(path, constants.O_RDONLY | constants.O_DIRECTORY);
    await handle.close();
    return path;
  }

  async detach(): Promise<void> {
    // Volumes are directories of the pool mount, which other volumes and the registry share.
  }

  async volumeStatus(name: string): Promise<Record<string, string>> {
    const record = await this.store.get(name).catch(() => undefined);
    const status: Record<string, string> = { glusterVolume: this.pool, glusterPath: `/${name}` };
    Object.assign(status, await this.store.volumeStatus(name).catch(() => ({})));
    if (record?.options.size !== undefined && this.options.quota) {
      Object.assign(status, await quotaFacts(this.cli, this.ctx.runner, this.pool, `/${name}`, join(this.mountpoint, name),
        this.options.timeoutMs, record.options.size));
    }
    return status;
  }

  /**
   * With a quota on the volume's directory, statfs through the mount answers with the quota
   * (`features.quota-deem-statfs`): one call. Otherwise the directory is walked, as for vfs.
   */
  async usage(name: string): Promise<VolumeUsage | undefined> {
    return this.poolMount.read(async () => {
      const record = await this.store.get(name);
      if (!record) return undefined;
      const size = record.options.size;
      if (size !== undefined && this.options.quota) {
        const fs = await filesystemSpace(join(this.mountpoint, name)).catch(() => undefined);
        if (fs?.sizeBytes === size) return { capacityBytes: fs.sizeBytes, usedBytes: fs.usedBytes, availableBytes: fs.availableBytes };
      }
      return this.store.usage(name);
    }, name);
  }

  async storageHealth(): Promise<StorageHealth> {
    return { mounts: [{ target: this.mountpoint, volume: this.pool, live: await this.poolMount.live() }] };
  }

  async describe(): Promise<Record<string, string>> {
    const store = await this.store.describe();
    return {
      'glusterfs.mode': 'subdir',
      'glusterfs.pool': this.pool,
      'glusterfs.servers': this.options.servers.join(','),
      'glusterfs.quota': String(this.options.quota),
      ...(this.options.quota ? { 'glusterfs.quotatimeout': `${this.options.quotaTimeoutS}s` } : {}),
      mountpoint: this.mountpoint,
      storeId: store.storeId ?? '',
      ...(store.keptSnapshots !== undefined ? { keptSnapshots: store.keptSnapshots } : {}),
    };
  }
}
