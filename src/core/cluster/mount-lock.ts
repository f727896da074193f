import { ErrorCodes, StowageError, asStorageFull, describeCause, messageOf } from '../errors.js';
import type { Logger } from '../logger.js';
import type { LocalMounts } from './cluster.js';
import type { ClusterLocks } from './cluster-lock.js';
import { LOCAL_LEASE, type Lease } from './lease.js';
import type { NodeMarkers } from './node-markers.js';

export interface MountLockParts {
  locks: ClusterLocks;
  markers: NodeMarkers;
  /** This node's mounts and live reads: a failed mount leaves the marker to those. */
  mounts: () => LocalMounts;
  log: Logger;
  /**
   * Whether the name's lock may be skipped: the cluster directory is on a local filesystem,
   * where a check that a file is absent sees every change that returned before it. An NFS
   * client may answer such a check from its cache for seconds (and a GlusterFS client for one),
   * so on those every mount takes the lock.
   */
  lockFree: boolean;
}

/**
 * Runs a mount of `volume` (`task`, which counts it in the mount table) with its node's marker
 * made first, and the name's cluster lock taken only when something holds it. A remove takes the
 * lock before it reads the markers and keeps it until the volume is gone; the mount makes its
 * marker, and only then looks for the lock (ClusterLocks.mountNeedsLock). With no lock there, a
 * remove elsewhere either ended before (the mount finds no volume) or takes the lock after the
 * look, reads the marker after that, and is refused: what either wrote before it looked, the
 * other sees. The same guarantee the lock gave, without its seven file calls; a create, a remove
 * or another mount holding the lock makes the mount wait for it as before. A mount that fails
 * before counting itself takes its marker back, unless the volume is mounted or read here otherwise.
 */
export async function withMountLock<T>(parts: MountLockParts, volume: string, task: (lease: Lease) => Promise<T>): Promise<T> {
  const { locks, markers } = parts;
  try {
    await markers.markAhead(volume).catch((err: unknown) => {
      const full = asStorageFull(err, 'the storage holding the cluster directory', 'free space there and mount again');
      if (full instanceof StowageError) throw full;
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `mounting volume ${volume} failed: making its mount marker in the shared store failed: ${describeCause(err)}`, { volume, cause: err });
    });
    if (parts.lockFree && !(await locks.mountNeedsLock(volume))) return await task(LOCAL_LEASE);
    return await locks.withLock(volume, task);
  } catch (err) {
    if (parts.mounts().count(volume) === 0) {
      await markers.markUnmounted(volume).catch((unmarkErr: unknown) =>
        parts.log.warn(`removing the mount marker of ${volume} after a failed mount failed (the next heartbeat tries again): ${messageOf(unmarkErr)}`));
    }
    throw err;
  } finally {
    markers.doneAhead(volume);
  }
}
