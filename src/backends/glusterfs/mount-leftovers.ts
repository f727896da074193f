import { join } from 'node:path';
import { errnoCode, messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import type { GlusterMounter } from './gluster-mount.js';
import { stowageNameOf } from './volume-naming.js';

/** The directory snapshots mount their volumes under, in the mount root (see GlusterSnapshotRepository). */
export const SNAPSHOT_MOUNTS = '.snapshots';

export interface LeftoverScope {
  /** Where volume mode mounts gluster volumes: `<root>/glusterfs/mnt`. */
  mountRoot: string;
  /** Only directories named for this prefix's gluster volumes are stowage's. */
  prefix: string;
  /** The state pool's mount point, in the mount root too: never touched here. */
  statePool: string;
}

/**
 * Cleans what a daemon killed mid-way leaves in volume mode's mount root, at start: a snapshot's
 * own mount (`.snapshots/<gluster>`, and with it its client, which exits once unmounted), and the
 * mount points of gluster volumes that no longer exist. Only directories named as stowage names
 * its gluster volumes; a mount only by a plain unmount, which the kernel refuses while anything
 * uses it (no lazy detach); a directory only by rmdir, which refuses one with anything in it.
 * Containers' mounts of existing volumes are never touched. Never throws: it logs.
 */
export async function cleanMountLeftovers(fs: FsPort, mounter: GlusterMounter, log: Logger, scope: LeftoverScope,
  exists: (gluster: string) => boolean): Promise<void> {
  const entries = (dir: string) => fs.readdir(dir).catch((err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') log.warn(`cannot list ${dir} for leftover mounts: ${messageOf(err)}`);
    return [] as string[];
  });
  const ours = (entry: string) => stowageNameOf(scope.prefix, entry) !== undefined;
  // A snapshot mount is only ever in use while this daemon takes a snapshot, which no start does.
  const snapshots = join(scope.mountRoot, SNAPSHOT_MOUNTS);
  for (const entry of (await entries(snapshots)).filter(ours)) await release(entry, join(snapshots, entry), 'a snapshot\'s mount');
  for (const entry of (await entries(scope.mountRoot)).filter((e) => ours(e) && !exists(e))) {
    const target = join(scope.mountRoot, entry);
    if (target !== scope.statePool) await release(entry, target, 'the mount point of a deleted gluster volume');
  }

  async function release(gluster: string, target: string, what: string): Promise<void> {
    try {
      const unmounted = await mounter.unmountIfIdle(gluster, target);
      if (unmounted !== 'done') {
        log.warn(`${target} (${what}) stays mounted: ${unmounted === 'busy' ? 'it is in use; unmount it once nothing uses it'
          : `something other than gluster volume ${gluster} is mounted there`}`);
        return;
      }
      await fs.rmdir(target);
      log.info(`removed ${target}, ${what} left by an earlier run`);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') return;
      log.warn(`${target} (${what}) was left in place: ${code === 'ENOTEMPTY' || code === 'EEXIST' ? 'it is not empty' : messageOf(err)}`);
    }
  }
}
