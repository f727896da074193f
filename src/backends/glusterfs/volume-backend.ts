import { hostname } from 'node:os';
import { join } from 'node:path';
import type {
  Backend, BackendCapabilities, CreateRequest, Lease, RemoveOutcome, RemoveRequest, VolumeRecord,
} from '../../core/backend.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { BackendContext } from '../context.js';
import { DELETING_DIR, deletingPathOf, isOwnBrick, layoutArgs, layoutFor, planBricks } from './bricks.js';
import type { GlusterCli } from './gluster-cli.js';
import type { GlusterMounter } from './gluster-mount.js';
import { layout, type GlusterfsOptions } from './glusterfs-options.js';
import type { GlusterBrick, GlusterVolume } from './parsers.js';
import type { PoolMount } from './pool-mount.js';
import { quotaFacts } from './usage.js';
import { glusterNameOf, stowageNameOf } from './volume-naming.js';

/** The volume option that holds a stowage volume's record: glusterd itself is the registry. */
export const RECORD_OPTION = 'user.stowage.record';

/**
 * volume mode: each stowage volume is its own gluster volume, named by a one-to-one mapping of
 * its name, so gluster's "already exists" is the cluster-wide lock on a name. The record lives
 * in the gluster volume's own options (`user.stowage.record`), so the registry is glusterd's
 * replicated store: `volume info` lists exactly the volumes that exist, on every peer, with no
 * second copy to drift. A gluster volume with the prefix but without a record is half-made or
 * foreign and never listed.
 */
export class GlusterVolumeBackend implements Backend {
  readonly name = 'glusterfs';
  readonly capabilities: BackendCapabilities;
  /** Node records, references and name locks of the core, in the small state pool every node mounts. */
  readonly clusterStateDir: string;
  private readonly purges = new Set<Promise<void>>();
  private localPeer?: string;

  constructor(
    private readonly ctx: BackendContext,
    private readonly options: GlusterfsOptions,
    private readonly cli: GlusterCli,
    private readonly mounter: GlusterMounter,
    private readonly mountRoot: string,
    private readonly statePool: PoolMount,
  ) {
    this.capabilities = {
      scope: 'global', sizeLimit: options.quota ? 'enforced' : 'recorded', snapshots: false, createOptions: ['replica', 'disperse'],
    };
    this.clusterStateDir = join(statePool.mountpoint, '.stowage', 'cluster');
  }

  async init(): Promise<void> {
    await this.ctx.fs.mkdir(this.mountRoot, { recursive: true });
    // The gluster CLI and mount write their logs there from the first call on.
    await this.ctx.fs.mkdir(layout(this.ctx.root).logs, { recursive: true });
    await this.localPeerId();
    await this.statePool.init();
    await this.ctx.fs.mkdir(this.clusterStateDir, { recursive: true });
    // Finish brick removals a previous run started (only bricks stowage itself moved aside).
    for (const root of this.options.brickRoots.filter((r) => r.host === hostname() || r.host.startsWith(`${hostname()}.`))) {
      const area = join(root.path, DELETING_DIR);
      for (const leftover of await this.ctx.fs.readdir(area).catch(() => [] as string[])) this.purge(join(area, leftover));
    }
  }

  async dispose(): Promise<void> {
    await Promise.allSettled([...this.purges]);
  }

  /** The core's name locks live in the state pool: a stopped pool is reported as such, not as a failed lock file. */
  ready(volume: string): Promise<void> {
    return this.statePool.ensure(volume);
  }

  async settle(): Promise<void> {
    while (this.purges.size > 0) await Promise.allSettled([...this.purges]);
  }

  private async localPeerId(): Promise<string> {
    this.localPeer ??= (await this.cli.peers()).find((p) => p.hostname === 'localhost')?.uuid ?? '';
    return this.localPeer;
  }

  private target(glusterName: string): string {
    return join(this.mountRoot, glusterName);
  }

  private recordOf(volume: GlusterVolume, name: string): VolumeRecord | undefined {
    const raw = volume.options[RECORD_OPTION];
    if (raw === undefined) return undefined;
    let record: VolumeRecord;
    try {
      record = JSON.parse(raw) as VolumeRecord;
    } catch (err) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `the ${RECORD_OPTION} option of gluster volume ${volume.name} is not JSON`,
        { volume: name, cause: err });
    }
    if (record?.name !== name || typeof record.createdAt !== 'string' || typeof record.options !== 'object') {
      throw new StowageError(ErrorCodes.STATE_CORRUPT,
        `the ${RECORD_OPTION} option of gluster volume ${volume.name} does not describe volume ${name}`, { volume: name });
    }
    return record;
  }

  /** The gluster volume and record of a stowage volume; names too long to map cannot exist. */
  private async lookup(name: string): Promise<{ gluster: string; volume?: GlusterVolume; record?: VolumeRecord }> {
    let gluster: string;
    try {
      gluster = glusterNameOf(this.options.volumePrefix, name);
    } catch {
      return { gluster: '' };
    }
    const volume = await this.cli.volumeInfo(gluster);
    return { gluster, volume, record: volume && this.recordOf(volume, name) };
  }

  async create(request: CreateRequest): Promise<VolumeRecord> {
    const { name, options } = request;
    const layout = layoutFor(this.options, options.backend);
    glusterNameOf(this.options.volumePrefix, name); // refuses names that cannot map, before anything else
    const { gluster, volume, record: existing } = await this.lookup(name);
    const { adopt: _adopt, ...defining } = options;
    if (existing) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
    if (volume && !options.adopt) {
      throw new StowageError(ErrorCodes.DATA_CONFLICT,
        `gluster volume ${gluster} already exists but stowage did not make it; to make it volume ${name} create with ` +
        `-o adopt=true, otherwise delete it (gluster volume stop ${gluster}; gluster volume delete ${gluster})`, { volume: name });
    }
    const record: VolumeRecord = {
      name, options: defining, createdAt: request.createdAt, createdBy: request.createdBy, ...(volume ? { adopted: true } : {}),
    };
    if (volume) {
      if (!volume.started) await this.cli.expect(['volume', 'start', gluster], name);
      if (options.size !== undefined && this.options.quota) await this.cli.limitUsage(gluster, '/', options.size, this.options.quotaTimeoutS);
      await this.setRecord(gluster, record);
      return record;
    }
    const bricks = planBricks(this.options.brickRoots, gluster);
    const made = await this.cli.call(['volume', 'create', gluster, ...layoutArgs(layout), ...bricks,
      ...(this.options.brickForce ? ['force'] : [])], name);
    if (!made.ok) {
      if (/already exists/i.test(made.opErrstr)) throw new StowageError(ErrorCodes.VOLUME_EXISTS, `volume ${name} already exists`, { volume: name });
      const hint = /root partition|force/i.test(made.opErrstr) ? ' (set glusterfs.brickforce=true to accept this)' : '';
      throw new StowageError(ErrorCodes.BACKEND_COMMAND,
        `creating gluster volume ${gluster} for volume ${name} failed: ${made.opErrstr}${hint}`, { volume: name, cause: made });
    }
    try {
      await this.cli.expect(['volume', 'start', gluster], name);
      if (options.size !== undefined && this.options.quota) await this.cli.limitUsage(gluster, '/', options.size, this.options.quotaTimeoutS);
      if (options.uid !== undefined || options.gid !== undefined || options.mode !== undefined) await this.applyOwnership(gluster, request);
      // Last: a gluster volume only becomes a stowage volume once it is complete.
      await this.setRecord(gluster, record);
    } catch (err) {
      // Lease check: with the name's cluster lock lost, this volume may be another node's by now.
      request.lease?.assertHeld(`undoing the create (stopping and deleting gluster volume ${gluster})`, { cause: err });
      await this.destroy(gluster, name, false, undefined, request.lease).catch((undo: unknown) =>
        this.ctx.log.error(`could not undo gluster volume ${gluster}: ${(undo as Error).message}`));
      throw err;
    }
    return record;
  }

  private async setRecord(gluster: string, record: VolumeRecord): Promise<void> {
    await this.cli.expect(['volume', 'set', gluster, RECORD_OPTION, JSON.stringify(record)], record.name);
  }

  private async applyOwnership(gluster: string, request: CreateRequest): Promise<void> {
    const target = this.target(gluster);
    await this.mounter.ensure({ volume: gluster, target, forVolume: request.name });
    try {
      const { uid, gid, mode } = request.options;
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
    return (await this.lookup(name)).record;
  }

  async list(): Promise<VolumeRecord[]> {
    const records: VolumeRecord[] = [];
    for (const volume of await this.cli.allVolumes()) {
      const name = stowageNameOf(this.options.volumePrefix, volume.name);
      if (name === undefined || volume.options[RECORD_OPTION] === undefined) continue;
      try {
        const record = this.recordOf(volume, name);
        if (record) records.push(record);
      } catch (err) {
        this.ctx.log.warn(`skipping gluster volume ${volume.name}: ${(err as Error).message}`);
      }
    }
    return records.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async remove(name: string, request: RemoveRequest): Promise<RemoveOutcome> {
    const { gluster, volume, record } = await this.lookup(name);
    if (!volume || !record) return {};
    const kept = await this.destroy(gluster, name, request.retainData, volume, request.lease);
    return kept === undefined ? {} : { retainedAt: kept };
  }

  /**
   * Stops and deletes the gluster volume, then removes this host's bricks (unless retaining:
   * gluster's delete leaves the bricks, which is what retain keeps). Returns where retained data is.
   */
  private async destroy(gluster: string, name: string, retain: boolean, known?: GlusterVolume, lease?: Lease): Promise<string | undefined> {
    const volume = known ?? await this.cli.volumeInfo(gluster);
    if (!volume) return undefined;
    lease?.assertHeld(`stopping gluster volume ${gluster}`); // lease check
    await this.mounter.unmount(this.target(gluster));
    const stopped = await this.cli.call(['volume', 'stop', gluster], name);
    if (!stopped.ok && !/not in the started state|not started/i.test(stopped.opErrstr)) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `stopping gluster volume ${gluster} of volume ${name} failed: ${stopped.opErrstr}`,
        { volume: name, cause: stopped });
    }
    lease?.assertHeld(`deleting gluster volume ${gluster}`, { kept: `gluster volume ${gluster} is stopped, nothing was deleted` }); // lease check
    await this.cli.expect(['volume', 'delete', gluster], name);
    const local = await this.localPeerId();
    if (retain) {
      this.ctx.log.info(`gluster volume ${gluster} deleted; its data stays in bricks ${volume.bricks.map(spec).join(', ')}`);
      // A local path only where one brick holds all the data: a single brick, or a replica of a
      // pure replicate volume. Otherwise the files are spread (or encoded) over every brick.
      const here = volume.bricks.find((b) => b.hostUuid === local);
      const whole = volume.bricks.length === 1 || volume.type === 'Replicate';
      return here && whole ? here.path : volume.bricks.map(spec).join(',');
    }
    for (const brick of volume.bricks) {
      if (brick.hostUuid !== local || !isOwnBrick(brick, this.options.brickRoots, gluster)) {
        this.ctx.log.warn(`brick ${spec(brick)} of deleted gluster volume ${gluster} was left in place; ` +
          (brick.hostUuid === local ? 'stowage did not make it' : 'remove it on its host (or run stowage there)'));
        continue;
      }
      lease?.assertHeld(`removing brick ${spec(brick)}`, { kept: `gluster volume ${gluster} is deleted, its bricks stay` }); // lease check
      const aside = deletingPathOf(brick.path);
      await this.ctx.fs.mkdir(join(aside, '..'), { recursive: true });
      await this.ctx.fs.rename(brick.path, aside);
      this.purge(aside);
    }
    return undefined;
  }

  private purge(path: string): void {
    const task = this.ctx.fs.rm(path, { recursive: true, force: true })
      .catch((err: unknown) => this.ctx.log.error(`could not finish deleting brick ${path}: ${(err as Error).message}`))
      .finally(() => this.purges.delete(task));
    this.purges.add(task);
  }

  async attach(name: string): Promise<string> {
    const { gluster, volume, record } = await this.lookup(name);
    if (!volume || !record) throw new StowageError(ErrorCodes.VOLUME_NOT_FOUND, `volume ${name} does not exist`, { volume: name });
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
    const { gluster } = await this.lookup(name).catch(() => ({ gluster: glusterNameOf(this.options.volumePrefix, name) }));
    if (gluster !== '') await this.mounter.unmount(this.target(gluster));
  }

  async volumeStatus(name: string): Promise<Record<string, string>> {
    const { gluster, volume, record } = await this.lookup(name).catch(() => ({ gluster: '', volume: undefined, record: undefined }));
    if (!volume || !record) return {};
    const status: Record<string, string> = {
      glusterVolume: gluster,
      glusterStatus: volume.status,
      glusterType: volume.type,
      bricks: volume.bricks.map(spec).join(','),
    };
    if (record.adopted) status.adopted = 'true';
    if (record.options.size !== undefined && this.options.quota) {
      const target = this.target(gluster);
      Object.assign(status, await quotaFacts(this.cli, this.ctx.runner, gluster, '/', target, this.options.timeoutMs, record.options.size));
    }
    return status;
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
      'glusterfs.quota': String(this.options.quota),
      ...(this.options.quota ? { 'glusterfs.quotatimeout': `${this.options.quotaTimeoutS}s` } : {}),
    };
  }
}

function spec(brick: GlusterBrick): string {
  return `${brick.host}:${brick.path}`;
}
