import type { Backend, VolumeRecord } from './backend.js';
import type { Cluster } from './cluster/cluster.js';
import { ErrorCodes, StowageError, describeCause, isStowageError, messageOf } from './errors.js';
import type { KeyedMutex } from './keyed-mutex.js';
import type { Logger } from './logger.js';
import { incarnationOf, type MountTable } from './mount-table.js';
import type { RestoreJournal } from './backup/restore-journal.js';
import { RESTORE_MOUNT_PREFIX } from './mount-kinds.js';
import { restoreVolume, type RestoreHost } from './backup/restore-volume.js';
import type { ProgressOptions } from './backup/service-contract.js';
import type { CreateResult, VolumeInfo } from './volume-types.js';

/** What restores need of the volume manager: its ordinary operations, so every check applies. */
export interface RestoreOps extends Omit<RestoreHost, 'journal' | 'log'> {
  backend: Backend;
  locks: KeyedMutex;
  mounts: MountTable;
  log: Logger;
  journal?: RestoreJournal;
  /** Where restores are claimed for every node sharing the storage (no-ops on a local backend). */
  cluster: Pick<Cluster, 'restoreClaims' | 'withLock'>;
  /** This node's id, as claims name it. */
  nodeId: string;
  /** Drops mount records (whole ids) of a volume; the caller holds its lock. */
  dropMounts(name: string, ids: string[], why: string): Promise<void>;
  /** The volume as Get describes it now. */
  describe(name: string): Promise<VolumeInfo>;
}

/** Creates volumes by restoring a backup into them, and cleans up after a restore a killed daemon left. */
export class VolumeRestores {
  private readonly host: RestoreHost;
  /** Restores running per volume name (a second one of a name fails on the existing volume). */
  private readonly running = new Map<string, number>();

  constructor(private readonly ops: RestoreOps) {
    const { journal, cluster } = ops;
    const claims = cluster.restoreClaims;
    this.host = {
      create: (name, options, mark) => ops.create(name, options, mark),
      mount: (name, id, incarnation) => ops.mount(name, id, incarnation),
      unmount: (name, id) => ops.unmount(name, id),
      remove: (name, request) => ops.remove(name, request),
      log: () => ops.log,
      blocks: () => ops.blocks?.(),
      // Both before the volume is made, the node's own marker first: a daemon killed after it
      // removes the volume at its next start if it was made; a claim left without its marker
      // names a volume that is gone or never was, and the next mount of the name drops it.
      journal: {
        begin: async (name, url, incarnation) => {
          await journal?.begin(name, url, incarnation);
          await claims?.claim(name, incarnation);
        },
        // Under the name's locks, as claims are made: a claim is another node's once this
        // restore's volume is gone (a failed restore removed it) and that node restored anew.
        end: (name, incarnation) => ops.locks.run(name, () => cluster.withLock(name, async () => {
          // A file there that is no claim is not this restore's to delete: mounts elsewhere name it.
          const claim = await claims?.read(name).catch((err: unknown) => {
            if (!isStowageError(err, ErrorCodes.STATE_CORRUPT)) throw err;
            ops.log.error(`volume ${name} is restored, but its restore claim cannot be read: ${messageOf(err)}`);
            return undefined;
          });
          if (claim?.node === ops.nodeId && claim.incarnation === incarnation) await claims?.release(name);
          await journal?.end(name, incarnation);
        })),
      },
    };
  }

  /** See backup/restore-volume.ts. */
  async restore(name: string, url: string, options: Record<string, unknown>, progress?: ProgressOptions): Promise<CreateResult> {
    this.running.set(name, (this.running.get(name) ?? 0) + 1);
    let result: CreateResult;
    try {
      result = await restoreVolume(this.host, name, url, options, progress);
    } finally {
      const left = (this.running.get(name) ?? 1) - 1;
      if (left > 0) this.running.set(name, left);
      else this.running.delete(name);
    }
    // Described when it was made, the volume said its restore was running: the answer shows it as it ended.
    const now = await this.ops.describe(name).catch(() => undefined);
    if (now && incarnationOf(now) === incarnationOf(result.volume)) return { ...result, volume: now };
    const { restore: _running, ...status } = result.volume.status;
    return { ...result, volume: { ...result.volume, status } };
  }

  /**
   * Whether a restore of this name runs in this process: its volume is listed from the moment
   * it exists, but holds partial data until the restore ends, so nothing else may mount it.
   */
  isRestoring(name: string): boolean {
    return this.running.has(name);
  }

  /** Why a volume a restore runs into cannot be removed by anyone but that restore. */
  beingRestored(name: string, nodeId: string): StowageError {
    return new StowageError(ErrorCodes.VOLUME_IN_USE,
      `volume ${name} is being restored from a backup on node ${nodeId}: remove it once the restore has ended ` +
      '(a restore that fails removes its volume itself), or cancel the restore', { volume: name, node: nodeId });
  }

  /**
   * Where this volume (this incarnation) stands with a restore: `running` in this process, or
   * `failed` (a restore whose marker stays: it failed and removing its volume failed too, or a
   * start could not remove it); undefined for a volume no restore left partial.
   */
  restoreState(record: VolumeRecord): 'running' | 'failed' | undefined {
    if (this.isRestoring(record.name)) return 'running';
    return this.ops.journal?.partial(record.name, incarnationOf(record)) ? 'failed' : undefined;
  }

  /**
   * Refuses a backup's or snapshot's read of a volume that holds a restore's partial data, as a
   * first mount here would be: a backup of it would be recorded complete with part of the data.
   * The caller holds the volume's lock; this takes the name's cluster lock, as mount does (the
   * claims check may drop a stale claim).
   */
  async assertReadable(name: string): Promise<void> {
    await this.ops.cluster.withLock(name, async () => {
      const record = await this.ops.backend.get(name);
      if (!record) return; // the read itself says the volume is not there
      await this.assertMountable(record, '', true, 'read').catch((err: unknown) => {
        if (!(err instanceof StowageError)) throw err;
        throw new StowageError(err.code, `volume ${name} cannot be backed up or snapshotted now: ${err.message}`, { volume: name, remedies: err.remedies });
      });
    });
  }

  /**
   * Refuses a mount (but a restore's own) of a volume that holds partial data of a restore: one
   * running here, one that failed here, or, on a first mount here of this volume (`firstHere`),
   * one another node claims. A volume mounted here already was mountable then and still is: a
   * restore makes a new volume. The caller holds the name's locks.
   */
  async assertMountable(record: VolumeRecord, mountId: string, firstHere: boolean, use: 'mount' | 'read' | 'use' = 'mount'): Promise<void> {
    const after = { mount: 'mount it', read: 'back it up or snapshot it', use: 'use it' }[use];
    if (mountId.startsWith(RESTORE_MOUNT_PREFIX)) return;
    if (this.isRestoring(record.name)) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${record.name} is being restored from a backup and holds partial data: ${after} once the restore has finished`, { volume: record.name });
    }
    const marker = this.ops.journal?.partial(record.name, incarnationOf(record));
    if (marker) {
      throw new StowageError(ErrorCodes.VOLUME_DATA_MISSING,
        `volume ${record.name} holds partial data: its restore from ${marker.url} (started ${marker.startedAt}) failed, ` +
        `and so did removing the volume afterwards; it cannot be ${{ mount: 'mounted', read: 'read', use: 'used' }[use]}`,
        { volume: record.name, remedies: [{ action: 'remove-volume', volume: record.name }] });
    }
    if (firstHere) await this.assertNotRestoringElsewhere(record, after);
  }

  /**
   * Refuses a mount here of a volume another node restores into, or whose restore there failed
   * and left it half-restored (its claim stays until the volume is removed). The caller holds the
   * name's cluster lock, under which claims are made and dropped, so the answer holds until the
   * mount is recorded. This node's own claim, with no restore running here and no marker left,
   * is a restore that finished but could not drop its claim: it is dropped now.
   */
  private async assertNotRestoringElsewhere(record: VolumeRecord, after: string): Promise<void> {
    const { cluster, nodeId, log } = this.ops;
    const claim = await cluster.restoreClaims?.read(record.name);
    if (!claim) return;
    const own = claim.node === nodeId;
    if (claim.incarnation !== incarnationOf(record) || own) {
      log.info(`dropping the restore claim of ${record.name} by node ${claim.node} (started ${claim.startedAt}): ` +
        (own ? 'that restore is over' : 'it names an earlier volume of that name'));
      await cluster.restoreClaims?.release(record.name);
      return;
    }
    throw new StowageError(ErrorCodes.VOLUME_IN_USE,
      `volume ${record.name} is being restored from a backup on node ${claim.node} (since ${claim.startedAt}), or its restore ` +
      `there failed: it holds partial data. ${after[0]!.toUpperCase()}${after.slice(1)} once the restore has finished; a restore that ` +
      `failed leaves a volume to remove (node ${claim.node} removes it at its next start if it stopped during the restore)`,
      { volume: record.name, node: claim.node });
  }

  /**
   * The volume of that name was removed: a marker or claim of a restore of it names a volume that
   * is gone. Left, either would refuse nothing (a volume made later is another incarnation): the
   * next start drops a marker, the next mount of the name a claim; so a failure is only logged.
   */
  async removed(name: string): Promise<void> {
    const { journal, cluster, log } = this.ops;
    await journal?.removed(name).catch((err: unknown) =>
      log.error(`volume ${name} was removed, but clearing its restore marker failed (the next start drops it): ${describeCause(err)}`));
    await cluster.restoreClaims?.release(name).catch((err: unknown) =>
      log.error(`volume ${name} was removed, but clearing its restore claim failed (the next mount of the name drops it): ${describeCause(err)}`));
  }

  /** At start: every restore a previous run left unfinished leaves no volume (see RestoreJournal.recover). */
  async recover(): Promise<void> {
    await this.ops.journal?.recover({
      incarnation: async (name) => {
        const record = await this.ops.backend.get(name);
        return record ? incarnationOf(record) : undefined;
      },
      remove: (name) => this.removeInterrupted(name),
    }, this.ops.log);
  }

  /**
   * A restore's volume left behind: its restore mount records go, then the volume, never retained
   * (it holds part of a backup). Runs in init, before any shell serves, so the volume is still
   * the one recovery found (of the marker's incarnation).
   */
  private async removeInterrupted(name: string): Promise<void> {
    const { locks, mounts } = this.ops;
    await locks.run(name, async () => {
      const ids = Object.keys(mounts.ids(name)).filter((id) => id.startsWith(RESTORE_MOUNT_PREFIX));
      if (ids.length > 0) await this.ops.dropMounts(name, ids, 'its restore was interrupted');
    });
    await this.ops.remove(name, { retain: false });
  }
}
