import { join } from 'node:path';
import type { RemoveRequest } from '../../core/backend.js';
import { incarnationOf, RepositorySnapshots } from '../../core/backup/repository-snapshots.js';
import { removalStamp, type RetainedSnapshots } from '../../core/backup/retained-snapshots.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { BackendContext } from '../context.js';
import type { GlusterMounter } from './gluster-mount.js';
import type { GlusterVolume } from './parsers.js';
import { SNAPSHOT_MOUNTS } from './mount-leftovers.js';
import type { PoolMount } from './pool-mount.js';
import { glusterNameOf } from './volume-naming.js';
import { notOurs, type Deployment, type Ownership } from './volume-record.js';

/** What volume mode's snapshot repository needs of the backend that holds it. */
export interface GlusterSnapshotDeps {
  ctx: BackendContext;
  mounter: GlusterMounter;
  /** Where the backend mounts gluster volumes; snapshots mount theirs under `.snapshots/` in it. */
  mountRoot: string;
  volumePrefix: string;
  statePool: PoolMount;
  /** The gluster volume of a stowage volume and what it is to this deployment (see GlusterVolumeBackend). */
  lookup: (name: string) => Promise<{ gluster: string; volume?: GlusterVolume; ownership: Ownership }>;
  deployment: () => Deployment;
}

/**
 * Volume mode's snapshots: backups into a repository in the state pool (`.stowage/snapshots`,
 * see repository-snapshots.ts), each reading its volume through a mount of its own under
 * `.snapshots/`, so a container's mount is never touched; and their deletion with their volume.
 */
export class GlusterSnapshotRepository {
  readonly snapshots: RepositorySnapshots;

  constructor(private readonly deps: GlusterSnapshotDeps) {
    this.snapshots = new RepositorySnapshots({
      backend: 'glusterfs',
      repositoryDir: () => this.snapshotRepositoryDir(),
      hasRepository: () => this.hasSnapshotRepository(),
      dataPath: (volume) => this.snapshotMount(volume),
      incarnation: async (volume) => {
        const { ownership } = await deps.lookup(volume);
        return ownership.kind === 'ours' ? incarnationOf(ownership.record) : undefined;
      },
      releaseDataPath: async (volume) => deps.mounter.unmount(this.snapshotTarget(glusterNameOf(deps.volumePrefix, volume))),
      log: deps.ctx.log,
    });
  }

  /** Where a snapshot reads a volume: beside the containers' mounts, never one of them (pool names start with no dot). */
  private snapshotTarget(glusterName: string): string {
    return join(this.deps.mountRoot, SNAPSHOT_MOUNTS, glusterName);
  }

  private async hasSnapshotRepository(): Promise<boolean> {
    await this.deps.statePool.ensure();
    return this.deps.ctx.fs.lstat(join(this.deps.statePool.mountpoint, '.stowage', 'snapshots')).then(() => true, (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    });
  }

  private async snapshotRepositoryDir(): Promise<string> {
    await this.deps.statePool.ensure();
    const dir = join(this.deps.statePool.mountpoint, '.stowage', 'snapshots');
    await this.deps.ctx.fs.mkdir(dir, { recursive: true, mode: 0o700 });
    const stat = await this.deps.ctx.fs.lstat(dir);
    if (!stat.isDirectory()) throw new StowageError(ErrorCodes.STATE_CORRUPT, `${dir} in the state pool is not a directory; move it away`);
    return dir;
  }

  private async snapshotMount(name: string): Promise<string> {
    const { gluster, volume, ownership } = await this.deps.lookup(name);
    if (!volume || ownership.kind !== 'ours') throw notOurs(ownership, gluster, name, this.deps.deployment(), 'snapshot');
    if (!volume.started) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `gluster volume ${gluster} of volume ${name} is not started; start it to snapshot it`, { volume: name });
    }
    const target = this.snapshotTarget(gluster);
    await this.deps.mounter.ensure({ volume: gluster, target, forVolume: name });
    return target;
  }

  /**
   * A removed volume's snapshots: deleted with it, or kept as backups in the same repository
   * when its data is retained (see RepositorySnapshots.retainAll; as on vfs, and as devicemapper
   * keeps a retained volume's). Called before the gluster volume is stopped: a failure leaves it
   * as it was.
   */
  async settleWithVolume(name: string, request: RemoveRequest): Promise<RetainedSnapshots | undefined> {
    request.lease?.assertHeld(`${request.retain ? 'keeping' : 'deleting'} the snapshots of volume ${name}`); // lease check
    if (request.retain) return this.snapshots.retainAll(name, removalStamp());
    const { deleted, kept } = await this.snapshots.deleteAll(name);
    if (deleted > 0) this.deps.ctx.log.info(`deleted the ${deleted} snapshot(s) of volume ${name} with it`);
    return kept;
  }
}
