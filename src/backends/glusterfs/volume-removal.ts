import type { Lease } from '../../core/backend.js';
import { BackgroundWork } from '../../core/background-work.js';
import { ErrorCodes, StowageError, messageOf } from '../../core/errors.js';
import type { BackendContext } from '../context.js';
import { BrickCleaner } from './brick-cleanup.js';
import { retainedLocation, spec } from './bricks.js';
import type { GlusterCli } from './gluster-cli.js';
import type { GlusterMounter } from './gluster-mount.js';
import type { GlusterfsOptions } from './glusterfs-options.js';
import type { GlusterVolume } from './parsers.js';
import type { PoolMount } from './pool-mount.js';
import type { RecordedBrick } from './volume-record.js';

/** How often a node looks for bricks of deleted volumes that its peer holds. */
const SWEEP_INTERVAL_MS = 10 * 60_000;

/**
 * How volume mode deletes a gluster volume and its bricks: stops and deletes the gluster
 * volume, records the bricks stowage made (tombstones in the state pool) so that each node
 * removes the ones on its own host, and runs that brick work in the background, at start, after
 * a delete and every SWEEP_INTERVAL_MS. GlusterVolumeBackend decides whether a volume is this
 * deployment's to delete; this only deletes it.
 */
export class GlusterVolumeRemoval {
  private readonly cleaner: BrickCleaner;
  /** Brick work, one task at a time: a tombstone's brick first, then what is left aside. */
  private readonly background: BackgroundWork;
  private queuedSweep?: Promise<void>;
  private sweeper?: NodeJS.Timeout;

  constructor(
    private readonly ctx: BackendContext,
    options: GlusterfsOptions,
    private readonly cli: GlusterCli,
    private readonly mounter: GlusterMounter,
    private readonly statePool: PoolMount,
    /** Where this node mounts a gluster volume for containers. */
    private readonly target: (glusterName: string) => string,
    private readonly localPeerId: () => Promise<string>,
  ) {
    this.background = new BackgroundWork(ctx.log);
    this.cleaner = new BrickCleaner(ctx.fs, ctx.runner, cli, ctx.log, {
      roots: options.brickRoots, prefix: options.volumePrefix, timeoutMs: options.timeoutMs, nodeId: ctx.nodeId,
    }, statePool.mountpoint, localPeerId);
  }

  /** Starts the brick work of this node, whose own brick roots are `localRoots`. */
  start(localRoots: readonly string[]): void {
    // In the background, one after another: a tombstone's brick first, then what is left aside.
    void this.sweep();
    void this.background.enqueue('finishing brick deletions failed', () => this.cleaner.purgeLeftovers(localRoots));
    this.sweeper = setInterval(() => void this.sweep(), SWEEP_INTERVAL_MS);
    this.sweeper.unref();
  }

  /** Stops the periodic sweeps; work already queued still runs (see `settle`). */
  stopSweeps(): void {
    clearInterval(this.sweeper);
  }

  /** Waits for brick work (sweeps, leftovers), including sweeps queued while waiting. */
  settle(): Promise<void> {
    return this.background.settle();
  }

  /** For `stowage info`: deleted volumes whose bricks still wait for removal, by peer. */
  pending(): Promise<string> {
    return this.cleaner.pending();
  }

  /**
   * Cleans this peer's bricks of deleted volumes, in the background (never throws). One sweep
   * at a time; a call during a sweep queues one more, so a tombstone written meanwhile is seen.
   */
  private sweep(): Promise<void> {
    this.queuedSweep ??= this.background.enqueue('cleaning bricks of deleted gluster volumes failed (will retry)', () => {
      this.queuedSweep = undefined;
      return this.statePool.read(() => this.cleaner.sweep());
    });
    return this.queuedSweep;
  }

  /**
   * Stops and deletes the gluster volume; unless retaining, records `bricks` (the ones stowage
   * made and recorded) for deletion once the delete succeeded, so each node removes its peer's
   * bricks (see brick-cleanup.ts for the pending and armed tombstones). Gluster's delete leaves bricks, which is what retain keeps. Returns where
   * retained data is.
   */
  /**
   * `beforeDelete` runs once the gluster volume is stopped, right before it is deleted (the
   * volume's snapshots go there): a stop that fails (a peer down, a rebalance) then leaves them
   * with the volume. If it fails, the volume is started again, as it was, and nothing is deleted.
   */
  async destroy(gluster: string, name: string, retain: boolean, bricks: readonly RecordedBrick[], known?: GlusterVolume, lease?: Lease,
    beforeDelete?: () => Promise<void>): Promise<string | undefined> {
    const volume = known ?? await this.cli.volumeInfo(gluster);
    if (!volume) return undefined;
    lease?.assertHeld(`stopping gluster volume ${gluster}`); // lease check
    await this.mounter.unmount(this.target(gluster));
    // Only bricks that are the volume's now, as glusterd says, on the peer glusterd says.
    const doomed = retain ? [] : bricks.filter((b) => volume.bricks.some((v) => spec(v) === spec(b) && v.hostUuid === b.peer));
    await this.statePool.read(() => retain ? this.cleaner.forget(volume.id) : this.cleaner.journal(gluster, volume.id, doomed), name);
    let deleteSent = false;
    try {
      const stopped = await this.cli.call(['volume', 'stop', gluster], name);
      if (!stopped.ok && !/not in the started state|not started/i.test(stopped.opErrstr)) {
        throw new StowageError(ErrorCodes.BACKEND_COMMAND, `stopping gluster volume ${gluster} of volume ${name} failed: ${stopped.opErrstr}`,
          { volume: name, cause: stopped });
      }
      lease?.assertHeld(`deleting gluster volume ${gluster}`, { kept: `gluster volume ${gluster} is stopped, nothing was deleted` }); // lease check
      if (beforeDelete) {
        await beforeDelete().catch(async (err: unknown) => {
          if (stopped.ok) {
            const started = await this.cli.call(['volume', 'start', gluster], name).catch((e: unknown) => ({ ok: false, opErrstr: messageOf(e) }));
            if (!started.ok) {
              this.ctx.log.error(`gluster volume ${gluster} of volume ${name} stays stopped (gluster volume start ${gluster} starts it): ` +
                `starting it again after a failed remove failed: ${started.opErrstr}`);
            }
          }
          throw err;
        });
      }
      deleteSent = true;
      await this.cli.expect(['volume', 'delete', gluster], name);
    } catch (err) {
      // A delete that answered with an error (a timeout) may still have happened: only then are the bricks ours to delete.
      const state = !deleteSent ? 'live'
        : await this.cli.volumeInfo(gluster).then((v) => (v?.id === volume.id ? 'live' : 'gone'), () => 'unknown');
      if (state !== 'gone') {
        // The volume stays and may be used again: its bricks must never be deleted on the strength of this remove.
        // Not knowing, the pending tombstone stays: a sweep drops it while the volume exists, and never deletes for it.
        if (!retain && state === 'live') {
          await this.statePool.read(() => this.cleaner.disarm(volume.id), name).catch((e: unknown) => this.ctx.log.warn(
            `could not drop the pending brick tombstone of gluster volume ${gluster} (a sweep drops it while the volume exists): ${messageOf(e)}`));
        }
        throw err;
      }
    }
    if (!retain) {
      // Armed only now that this node's delete succeeded; if arming fails the bricks stay (never deleted wrongly), and are named.
      await this.statePool.read(() => this.cleaner.arm(gluster, volume.id, doomed), name).catch((err: unknown) => this.ctx.log.error(
        `bricks ${doomed.map(spec).join(', ')} of deleted gluster volume ${gluster} stay in place: recording them for deletion failed ` +
        `(delete them by hand): ${messageOf(err)}`));
    }
    // Its mount point too (a directory only: rmdir refuses one with anything in it, or mounted).
    await this.ctx.fs.rmdir(this.target(gluster)).catch(() => undefined);
    const local = await this.localPeerId();
    if (retain) {
      this.ctx.log.info(`gluster volume ${gluster} deleted; its data stays in bricks ${volume.bricks.map(spec).join(', ')}`);
      return retainedLocation(volume, local);
    }
    const left = volume.bricks.filter((v) => !doomed.some((d) => spec(d) === spec(v)));
    if (left.length > 0) {
      this.ctx.log.warn(`bricks ${left.map(spec).join(', ')} of deleted gluster volume ${gluster} stay in place: stowage did not ` +
        'record making them (an adopted volume, a record of an earlier version, or a brick added to the volume since)');
    }
    const elsewhere = doomed.filter((b) => b.peer !== local);
    if (elsewhere.length > 0) {
      this.ctx.log.info(`bricks ${elsewhere.map(spec).join(', ')} of deleted gluster volume ${gluster} are removed by stowage on ` +
        'their own hosts (at its next start or sweep); until then they hold a copy of the data');
    }
    void this.sweep();
    return undefined;
  }
}
