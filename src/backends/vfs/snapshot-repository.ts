import { lstat as realLstat } from 'node:fs/promises';
import { join } from 'node:path';
import type { RemoveRequest, VolumeRecord } from '../../core/backend.js';
import { incarnationOf, RepositorySnapshots } from '../../core/backup/repository-snapshots.js';
import type { RetainedSnapshots } from '../../core/backup/retained-snapshots.js';
import { ErrorCodes, StowageError, messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import type { CheckedDirs } from '../../core/safe-path.js';

/** What the snapshot repository needs of the vfs backend that holds it. */
export interface VfsSnapshotRepositoryDeps {
  fs: FsPort;
  log: Logger;
  /** `vfs.path`: the store. */
  storePath: string;
  /** The store's `.stowage` directory; the repository is its `snapshots`. */
  metaDir: string;
  dirs: CheckedDirs;
  /** The backend name recorded in snapshots. */
  label: string;
  /** Throws unless the store is still the one the backend started on (see VfsBackend). */
  assertStorePresent: (volume?: string) => Promise<void>;
  /** The checked data directory of a registered volume. */
  dataPath: (volume: string) => Promise<string>;
  /** The registered volume's record, fresh (another node may have removed and re-created it). */
  record: (volume: string) => Promise<VolumeRecord | undefined>;
}

/**
 * The vfs store's snapshots: backups into a repository at `.stowage/snapshots` in the store
 * (see repository-snapshots.ts), and their deletion when their volume is removed.
 */
export class VfsSnapshotRepository {
  readonly snapshots: RepositorySnapshots;

  constructor(private readonly deps: VfsSnapshotRepositoryDeps) {
    this.snapshots = new RepositorySnapshots({
      backend: deps.label,
      repositoryDir: () => this.dir(),
      hasRepository: () => this.exists(),
      dataPath: deps.dataPath,
      incarnation: async (volume) => {
        const record = await deps.record(volume);
        return record && incarnationOf(record);
      },
      log: deps.log,
    });
  }

  private get path(): string {
    return join(this.deps.metaDir, 'snapshots');
  }

  /**
   * `.stowage/snapshots` in the store, checked like the other internal directories. The backup
   * library reads and writes through node:fs, so the store must be the one node:fs sees (not
   * an in-memory filesystem given to the backend).
   */
  async dir(volume?: string): Promise<string> {
    const { fs, storePath, dirs } = this.deps;
    await this.deps.assertStorePresent(volume);
    const ours = await fs.stat(storePath);
    const real = await realLstat(storePath).catch(() => undefined);
    if (!real || real.ino !== ours.ino || real.dev !== ours.dev) {
      throw new StowageError(ErrorCodes.NOT_SUPPORTED, `snapshots need the store ${storePath} on the machine's own filesystem`, { volume });
    }
    await dirs.ensure(this.path);
    return this.path;
  }

  private async exists(): Promise<boolean> {
    return this.deps.fs.lstat(this.path).then(() => true, (err: unknown) => {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    });
  }

  /** `keptSnapshots` for the backend's description (RepositorySnapshots.keptSummary); empty when none, or on a store snapshots cannot use. */
  async keptSummary(): Promise<{ keptSnapshots?: string }> {
    if (!(await this.exists())) return {};
    const kept = await this.snapshots.keptSummary().catch((err: unknown) => {
      if (err instanceof StowageError && err.code === ErrorCodes.NOT_SUPPORTED) return undefined;
      return `unknown: ${messageOf(err)}`;
    });
    return kept === undefined ? {} : { keptSnapshots: kept };
  }

  /**
   * A removed volume's snapshots: deleted with it, or, when its data is retained, kept as
   * backups in the same repository under a name no volume can take (see
   * RepositorySnapshots.retainAll), as devicemapper keeps a retained volume's snapshots. Either
   * way a new volume of the same name starts without snapshots. What it answers is what was
   * kept: the retained volume's snapshots, or an earlier volume's that a delete leaves (see
   * RepositorySnapshots.deleteAll). Called once the remove can no
   * longer be refused, and before the data moves, so a failure here leaves the volume in place.
   */
  async settleWithVolume(name: string, request: RemoveRequest, stamp: string): Promise<RetainedSnapshots | undefined> {
    // No repository, no snapshots: a remove creates nothing in the store.
    if (!(await this.exists())) return undefined;
    const usable = await this.dir(name).then(() => true, (err: unknown) => {
      if (err instanceof StowageError && err.code === ErrorCodes.NOT_SUPPORTED) return false;
      throw err;
    });
    if (!usable) return undefined;
    // Lease check: the snapshots are the volume's, and another node may hold the name by now.
    request.lease?.assertHeld(`${request.retain ? 'keeping' : 'deleting'} the snapshots of volume ${name}`);
    if (request.retain) return this.snapshots.retainAll(name, stamp);
    const { deleted, kept } = await this.snapshots.deleteAll(name);
    if (deleted > 0) this.deps.log.info(`deleted the ${deleted} snapshot(s) of volume ${name} with it`);
    return kept;
  }
}
