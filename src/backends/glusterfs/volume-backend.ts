import { join } from 'node:path';
import type { RepositorySnapshots } from '../../core/backup/repository-snapshots.js';
import type {
  Backend, BackendCapabilities, CreateRequest, RemoveOutcome, RemoveRequest, StorageHealth, VolumeRecord, VolumeUsage,
} from '../../core/backend.js';
import { filesystemSpace } from '../../core/disk-usage.js';
import { ErrorCodes, StowageError, messageOf } from '../../core/errors.js';
import type { BackendContext } from '../context.js';
import { formatBytesApprox } from '../../core/options.js';
import { isOwnBrick, layoutArgs, layoutFor, planBricks, spec } from './bricks.js';
import type { GlusterCli } from './gluster-cli.js';
import type { GlusterMounter } from './gluster-mount.js';
import { layout, type GlusterfsOptions } from './glusterfs-options.js';
import type { GlusterVolume } from './parsers.js';
import type { PoolMount } from './pool-mount.js';
import { cleanMountLeftovers } from './mount-leftovers.js';
import { GlusterSnapshotRepository } from './snapshot-repository.js';
import { quotaFacts } from './usage.js';
import { assertGlusterNameFits, glusterNameOf, stowageNameOf } from './volume-naming.js';
import { checkAdoptedLimit, existingLimitOf, isKnownNode, quotaWarning } from './volume-ownership.js';
import {
  classify, notOurs, RECORD_OPTION, UUID, volumeRecordOf, type Deployment, type Ownership, type RecordedBrick, type StoredRecord,
} from './volume-record.js';
import { GlusterVolumeRemoval } from './volume-removal.js';

export { RECORD_OPTION } from './volume-record.js';

/**
 * volume mode: each stowage volume is its own gluster volume, named by a one-to-one mapping of
 * its name, so gluster's "already exists" is the cluster-wide lock on a name. The record lives
 * in the gluster volume's own options (`user.stowage.record`), so the registry is glusterd's
 * replicated store: `volume info` lists exactly the volumes that exist, on every peer, with no
 * second copy to drift. A gluster volume with the prefix but without a record is half-made or
 * foreign and never listed. Several deployments may share one trusted pool: each record names
 * the deployment (state pool id) that made it, and a deployment never lists, mounts, stops or
 * deletes another's volume.
 */
export class GlusterVolumeBackend implements Backend {
  readonly name = 'glusterfs';
  readonly capabilities: BackendCapabilities;
  /** Node records, references and name locks of the core, in the small state pool every node mounts. */
  readonly clusterStateDir: string;
  /** Deleting gluster volumes and, in the background, their bricks. */
  private readonly removal: GlusterVolumeRemoval;
  private localPeer?: string;
  private me?: Deployment;
  private readonly warned = new Set<string>();
  /** Where snapshots are kept and how they read a volume (see snapshot-repository.ts). */
  private readonly snapshotRepository: GlusterSnapshotRepository;
  /**
   * Snapshots are backups into a repository in the state pool (`.stowage/snapshots`), each read
   * through a mount of its own under `.snapshots/`, so a container's mount is never touched.
   */
  readonly snapshots: RepositorySnapshots;

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: GlusterfsOptions,
    private readonly cli: GlusterCli,
    private readonly mounter: GlusterMounter,
    private readonly mountRoot: string,
    private readonly statePool: PoolMount,
  ) {
    this.clusterStateDir = join(statePool.mountpoint, '.stowage', 'cluster');
    this.capabilities = {
      scope: 'global', clusterStateDir: this.clusterStateDir, sizeLimit: options.quota ? 'enforced' : 'recorded',
      createOptions: ['replica', 'disperse'],
    };
    this.snapshotRepository = new GlusterSnapshotRepository({
      ctx, mounter, mountRoot, volumePrefix: options.volumePrefix, statePool,
      lookup: (name) => this.lookup(name), deployment: () => this.deployment(),
    });
    this.snapshots = this.snapshotRepository.snapshots;
    this.removal = new GlusterVolumeRemoval(ctx, options, cli, mounter, statePool, (gluster) => this.target(gluster), () => this.localPeerId());
  }

  async init(): Promise<void> {
    await this.ctx.fs.mkdir(this.mountRoot, { recursive: true });
    // The gluster CLI and mount write their logs there from the first call on.
    await this.ctx.fs.mkdir(layout(this.ctx.root).logs, { recursive: true });
    const peers = await this.cli.peers();
    this.localPeer = peers.find((p) => p.hostname === 'localhost')?.uuid ?? '';
    const pool = await this.statePool.init();
    if (!UUID.test(pool.id)) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `glusterd reported no volume id for the state pool ${pool.name} (got ${JSON.stringify(pool.id)})`);
    }
    this.me = { pool: pool.name, id: pool.id };
    await this.ctx.fs.mkdir(this.clusterStateDir, { recursive: true });
    const volumes = new Set((await this.reviewRecords()).map((v) => v.name));
    await cleanMountLeftovers(this.ctx.fs, this.mounter, this.ctx.log,
      { mountRoot: this.mountRoot, prefix: this.options.volumePrefix, statePool: this.statePool.mountpoint }, (gluster) => volumes.has(gluster));
    // Roots named after another peer are that peer's disks; the rest are this host's.
    const others = new Set(peers.filter((p) => p.hostname !== 'localhost').map((p) => p.hostname));
    const localRoots = this.options.brickRoots.filter((r) => !others.has(r.host)).map((r) => r.path);
    this.removal.start(localRoots);
  }

  async dispose(): Promise<void> {
    this.removal.stopSweeps();
    await this.settle();
  }

  /** The core's name locks live in the state pool: a stopped pool is reported as such, not as a failed lock file. */
  ready(volume: string): Promise<void> {
    return this.statePool.ensure(volume);
  }

  /** Waits for brick work (sweeps, leftovers), including sweeps queued while waiting. */
  settle(): Promise<void> {
    return this.removal.settle();
  }

  private async localPeerId(): Promise<string> {
    this.localPeer ??= (await this.cli.peers()).find((p) => p.hostname === 'localhost')?.uuid ?? '';
    return this.localPeer;
  }

  private deployment(): Deployment {
    if (!this.me) throw new StowageError(ErrorCodes.INTERNAL, 'the glusterfs backend was used before init');
    return this.me;
  }

  /**
   * Start-up pass over the records. Those written before deployments were recorded name none:
   * claim those whose creator has a node record in this deployment's state pool and leave the
   * rest to an explicit adopt. Report sizes this node would enforce differently.
   */
  private async reviewRecords(): Promise<GlusterVolume[]> {
    const all = await this.cli.allVolumes();
    for (const volume of all) {
      const name = stowageNameOf(this.options.volumePrefix, volume.name);
      if (name === undefined || volume.options[RECORD_OPTION] === undefined) continue;
      let ownership: Ownership;
      try {
        ownership = classify(volume, name, this.deployment());
      } catch {
        continue;
      }
      if (ownership.kind === 'ours') {
        const warning = quotaWarning(ownership.record, volume.name, this.options.quota);
        if (warning) this.warnOnce(`quota:${volume.name}:${volume.id}`, `volume ${name}: ${warning}`);
      }
      if (ownership.kind !== 'unclaimed' || !(await isKnownNode(this.ctx.fs, this.clusterStateDir, ownership.record.createdBy))) continue;
      await this.setRecord(volume.name, { ...ownership.record, deployment: this.deployment() });
      this.ctx.log.info(`gluster volume ${volume.name} (volume ${name}) was made by node ${ownership.record.createdBy} of this ` +
        `deployment; its record now names this deployment (state pool ${this.deployment().pool})`);
    }
    return all;
  }

  private target(glusterName: string): string {
    return join(this.mountRoot, glusterName);
  }

  /** The gluster volume of a stowage volume and what it is to this deployment; names too long to map cannot exist. */
  private async lookup(name: string): Promise<{ gluster: string; volume?: GlusterVolume; ownership: Ownership }> {
    let gluster: string;
    try {
      gluster = glusterNameOf(this.options.volumePrefix, name);
    } catch {
      return { gluster: '', ownership: { kind: 'none' } };
    }
    const volume = await this.cli.volumeInfo(gluster);
    return { gluster, volume, ownership: classify(volume, name, this.deployment()) };
  }

  async create(request: CreateRequest): Promise<VolumeRecord> {
    const { name, options } = request.record;
    const layout = layoutFor(this.options, options.backend);
    // Refuses names that cannot map, or that glusterd would refuse with these brick roots, before anything else.
    assertGlusterNameFits(name, glusterNameOf(this.options.volumePrefix, name), this.options.volumePrefix, this.options.brickRoots);
    const { gluster, volume, ownership } = await this.lookup(name);
    if (ownership.kind === 'ours') throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
    if (ownership.kind === 'foreign' || (ownership.kind === 'unclaimed' && !request.adopt)) {
      throw notOurs(ownership, gluster, name, this.deployment(), 'adopt');
    }
    if (volume && !request.adopt) {
      const remedies = [{ action: 'adopt' as const, volume: name }];
      const delete_ = `gluster volume stop ${gluster}; gluster volume delete ${gluster}`;
      if (volume.bricks.length > 0 && volume.bricks.every((b) => isOwnBrick(b, this.options.brickRoots, gluster))) {
        // Named as stowage names bricks: a create that stopped between `volume create` and its record.
        throw new StowageError(ErrorCodes.DATA_CONFLICT,
          `gluster volume ${gluster} already exists without stowage's record: an earlier create of volume ${name} stopped ` +
          `half-way (its bricks are named as stowage names them). Delete it (${delete_}; gluster keeps the bricks, so then ` +
          `delete the brick directories ${volume.bricks.map(spec).join(', ')} on their hosts by hand) and create again, ` +
          `or adopt it as volume ${name} (its bricks are then never deleted by stowage)`, { volume: name, remedies });
      }
      throw new StowageError(ErrorCodes.DATA_CONFLICT,
        `gluster volume ${gluster} already exists but stowage did not make it; delete it (${delete_}), ` +
        `or adopt it as volume ${name}`, { volume: name, remedies });
    }
    const record: StoredRecord = {
      ...request.record, deployment: this.deployment(),
      ...(options.size !== undefined ? { sizeEnforced: this.options.quota } : {}),
    };
    if (volume) return this.adopt(gluster, volume, { ...record, adopted: true });
    const planned = planBricks(this.options.brickRoots, gluster);
    const made = await this.cli.call(['volume', 'create', gluster, ...layoutArgs(layout), ...planned,
      ...(this.options.brickForce ? ['force'] : [])], name);
    if (!made.ok) {
      if (/already exists/i.test(made.opErrstr)) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
      const hint = /root partition|force/i.test(made.opErrstr) ? ' (set glusterfs.brickforce=true to accept this)' : '';
      throw new StowageError(ErrorCodes.BACKEND_COMMAND,
        `creating gluster volume ${gluster} for volume ${name} failed: ${made.opErrstr}${hint}`, { volume: name, cause: made });
    }
    let bricks: RecordedBrick[] = [];
    try {
      const info = await this.cli.volumeInfo(gluster);
      // Exactly the bricks this create planned, with the peer glusterd placed each on.
      bricks = (info?.bricks ?? []).filter((b) => planned.includes(spec(b)) && UUID.test(b.hostUuid))
        .map((b) => ({ host: b.host, path: b.path, peer: b.hostUuid }));
      await this.cli.expect(['volume', 'start', gluster], name);
      if (options.size !== undefined && this.options.quota) await this.cli.limitUsage(gluster, '/', options.size, this.options.quotaTimeoutS);
      if (options.uid !== undefined || options.gid !== undefined || options.mode !== undefined) await this.applyOwnership(gluster, request);
      // Last: a gluster volume only becomes a stowage volume once it is complete.
      await this.setRecord(gluster, { ...record, bricks });
    } catch (err) {
      // Lease check: with the name's cluster lock lost, this volume may be another node's by now.
      request.lease?.assertHeld(`undoing the create (stopping and deleting gluster volume ${gluster})`, { cause: err });
      await this.removal.destroy(gluster, name, false, bricks, undefined, request.lease).catch((undo: unknown) =>
        this.ctx.log.error(`could not undo gluster volume ${gluster}: ${messageOf(undo)}`));
      throw err;
    }
    return volumeRecordOf(record);
  }

  /** Takes over an existing gluster volume; its bricks stay stowage's to never delete, its limit stays as it is. */
  private async adopt(gluster: string, volume: GlusterVolume, record: StoredRecord): Promise<VolumeRecord> {
    const { name, options } = record;
    const { limit } = await existingLimitOf(this.cli, volume, name);
    checkAdoptedLimit(limit, options.size, gluster, name);
    if (!volume.started) await this.cli.expect(['volume', 'start', gluster], name);
    if (limit !== undefined) {
      this.ctx.log.info(`gluster volume ${gluster} keeps its existing limit of ${formatBytesApprox(limit)} on /`);
      if (options.size !== undefined && this.options.quota) await this.cli.quotaTimeouts(gluster, this.options.quotaTimeoutS);
    } else if (options.size !== undefined && this.options.quota) {
      await this.cli.limitUsage(gluster, '/', options.size, this.options.quotaTimeoutS);
    }
    const enforced = options.size === undefined ? {} : { sizeEnforced: limit !== undefined || this.options.quota };
    await this.setRecord(gluster, { ...record, ...enforced });
    return volumeRecordOf(record);
  }

  private async setRecord(gluster: string, record: StoredRecord): Promise<void> {
    await this.cli.expect(['volume', 'set', gluster, RECORD_OPTION, JSON.stringify(record)], record.name);
  }

  private async applyOwnership(gluster: string, request: CreateRequest): Promise<void> {
    const target = this.target(gluster);
    await this.mounter.ensure({ volume: gluster, target, forVolume: request.record.name });
    try {
      const { uid, gid, mode } = request.record.options;
      if (mode !== undefined) await this.ctx.fs.chmod(target, mode);
      if (uid !== undefined || gid !== undefined) {
        const stat = await this.ctx.fs.stat(target);
        await this.ctx.fs.chown(target, uid ?? stat.uid, gid ?? stat.gid);
      }
    } finally {
      await this.mounter.unmount(target);
    }
  }

  async get(name: string): Promise<VolumeRecord | undefined> {
    const { ownership } = await this.lookup(name);
    return ownership.kind === 'ours' ? volumeRecordOf(ownership.record) : undefined;
  }

  async list(): Promise<VolumeRecord[]> {
    const records: VolumeRecord[] = [];
    for (const volume of await this.cli.allVolumes()) {
      const name = stowageNameOf(this.options.volumePrefix, volume.name);
      if (name === undefined || volume.options[RECORD_OPTION] === undefined) continue;
      try {
        const ownership = classify(volume, name, this.deployment());
        if (ownership.kind === 'ours') records.push(volumeRecordOf(ownership.record));
        else if (ownership.kind === 'unclaimed') this.warnOnce(volume.name, notOurs(ownership, volume.name, name, this.deployment(), 'list').message);
      } catch (err) {
        this.ctx.log.warn(`skipping gluster volume ${volume.name}: ${messageOf(err)}`);
      }
    }
    return records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  private warnOnce(key: string, message: string): void {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.ctx.log.warn(message);
  }

  async remove(name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    const { gluster, volume, ownership } = await this.lookup(name);
    if (ownership.kind === 'foreign' || ownership.kind === 'unclaimed') throw notOurs(ownership, gluster, name, this.deployment(), 'stop or delete');
    if (!volume || ownership.kind !== 'ours') return {};
    const record = ownership.record;
    let snapshotsKept: Awaited<ReturnType<typeof this.snapshotRepository.settleWithVolume>>;
    const kept = await this.removal.destroy(gluster, name, request.retain, record.adopted ? [] : record.bricks ?? [], volume, request.lease,
      async () => { snapshotsKept = await this.snapshotRepository.settleWithVolume(name, request); });
    return { ...(kept === undefined ? {} : { retainedAt: kept }), ...(snapshotsKept ? { snapshotsKept } : {}) };
  }

  async attach(name: string): Promise<string> {
    const { gluster, volume, ownership } = await this.lookup(name);
    if (!volume || ownership.kind !== 'ours') throw notOurs(ownership, gluster, name, this.deployment(), 'mount');
    if (!volume.started) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `gluster volume ${gluster} of volume ${name} is ${volume.status.toLowerCase()}, not started; start it ` +
        `(gluster volume start ${gluster}) and mount again`, { volume: name, node: this.ctx.nodeId });
    }
    const target = this.target(gluster);
    await this.mounter.ensure({ volume: gluster, target, forVolume: name });
    return target;
  }

  async detach(name: string): Promise<void> {
    let gluster: string;
    try {
      gluster = glusterNameOf(this.options.volumePrefix, name);
    } catch {
      return;
    }
    await this.mounter.unmount(this.target(gluster));
  }

  async volumeStatus(name: string): Promise<Record<string, string>> {
    const { gluster, volume, ownership } = await this.lookup(name).catch(() => ({ gluster: '', volume: undefined, ownership: { kind: 'none' } as Ownership }));
    if (!volume || ownership.kind !== 'ours') return {};
    const record = ownership.record;
    const status: Record<string, string> = {
      glusterVolume: gluster,
      glusterStatus: volume.status,
      glusterType: volume.type,
      bricks: volume.bricks.map(spec).join(','),
    };
    if (record.adopted) status.adopted = 'true';
    const warning = quotaWarning(record, gluster, this.options.quota);
    if (warning) {
      status.warning = warning;
      this.warnOnce(`quota:${gluster}:${volume.id}`, `volume ${name}: ${warning}`);
    }
    if (record.options.size !== undefined && this.options.quota) {
      const target = this.target(gluster);
      Object.assign(status, await quotaFacts(this.cli, this.ctx.runner, gluster, '/', target, this.options.timeoutMs, record.options.size));
    }
    return status;
  }

  /**
   * statfs of the volume's mount, which gluster answers for the whole gluster volume (its quota
   * when it has one): known only while the volume is mounted on this node.
   */
  async usage(name: string): Promise<VolumeUsage | undefined> {
    let gluster: string;
    try {
      gluster = glusterNameOf(this.options.volumePrefix, name);
    } catch {
      return undefined;
    }
    const target = this.target(gluster);
    if ((await this.mounter.health(gluster, target)).state !== 'live') return undefined;
    const fs = await filesystemSpace(target);
    return { capacityBytes: fs.sizeBytes, usedBytes: fs.usedBytes, availableBytes: fs.availableBytes };
  }

  async storageHealth(): Promise<StorageHealth> {
    return { mounts: [{ target: this.statePool.mountpoint, volume: this.statePool.pool, live: await this.statePool.live() }] };
  }

  async describe(): Promise<Record<string, string>> {
    const layout = this.options.replica ? `replica ${this.options.replica}` : this.options.disperse ? `disperse ${this.options.disperse}` : 'distribute';
    return {
      'glusterfs.mode': 'volume',
      'glusterfs.servers': this.options.servers.join(','),
      'glusterfs.bricks': this.options.brickRoots.map((r) => `${r.host}:${r.path}`).join(','),
      'glusterfs.layout': layout,
      'glusterfs.volumeprefix': this.options.volumePrefix,
      'glusterfs.pool': this.statePool.pool,
      ...(this.me ? { 'glusterfs.deployment': this.me.id } : {}),
      'glusterfs.bricksawaitingremoval': await this.removal.pending().catch((err: unknown) => `unknown: ${messageOf(err)}`),
      'glusterfs.quota': String(this.options.quota),
      ...(this.options.quota ? { 'glusterfs.quotatimeout': `${this.options.quotaTimeoutS}s` } : {}),
      ...await this.snapshots.keptSummary().then((kept): Record<string, string> => (kept ? { keptSnapshots: kept } : {}), (err: unknown) => ({ keptSnapshots: `unknown: ${messageOf(err)}` })),
    };
  }
}
