import { isoTime } from './clock.js';
import { LIVE_STATES, type ContainerReferences } from './container-references.js';
import { ErrorCodes, StowageError, describeCause, messageOf, toStowageError } from './errors.js';
import type { Logger } from './logger.js';
import { incarnationOf, type MountRecordView, type MountTable } from './mount-table.js';
import { RESTORE_MOUNT_PREFIX, assertNewHandLabel, handLabelOf, handMountId, isEngineMountId, isHandMountId } from './mount-kinds.js';

/** What releasing, reconciling and hand mounts need of the volume manager. */
export interface MountOps {
  nodeId(): string;
  engine(): ContainerReferences;
  mounts(): MountTable;
  /** Cluster-clock ms, the clock mount records are stamped with. */
  now(): number;
  graceMs(): number;
  log(): Logger;
  runLocked<T>(name: string, task: () => Promise<T>): Promise<T>;
  /** Drops whole IDs (the caller holds the lock), detaching when none remain; logged as a warning unless `asked`. */
  drop(name: string, ids: string[], why: string, asked?: boolean): Promise<void>;
  /**
   * The manager's own Mount, with every check a Docker Mount gets, under the volume's locks;
   * an id that already mounts this very volume is answered its path and counted no further.
   */
  mount(name: string, id: string): Promise<string>;
  /** The path while mounted on this node. */
  path(name: string): string | undefined;
  /** Whether a restore into the volume runs in this process. */
  isRestoring(name: string): boolean;
}

/** What the manager lends to make its MountOps: its parts, and the calls that stay its own. */
export interface MountHost extends Omit<MountOps, 'drop'> {
  detach(name: string): Promise<void>;
  /** The volume is detached: its path is forgotten. */
  detached(name: string): void;
  /** Removes this node's mount marker of the volume. */
  unmark(name: string): Promise<void>;
}

export function mountOpsOf(host: MountHost): MountOps {
  return { ...host, drop: (name, ids, why, asked) => dropMounts(host, name, ids, why, asked) };
}

/**
 * Drops mount records (whole IDs); the caller holds the volume's lock. Detaches when none
 * remain; if that fails the records stay, since the volume is still attached.
 */
async function dropMounts(host: MountHost, name: string, ids: string[], why: string, asked = false): Promise<void> {
  const mounts = host.mounts();
  const incarnation = mounts.incarnation(name);
  const taken = mounts.entries(name).filter(([id]) => ids.includes(id));
  let remaining = mounts.count(name);
  for (const id of ids) remaining = mounts.drop(name, id);
  if (remaining === 0) {
    await host.detach(name).catch((err: unknown) => {
      mounts.putBack(name, taken, incarnation);
      throw toStowageError(err, `detaching volume ${name} failed, so its mount record(s) ${ids.join(', ')} stay`, name);
    });
    host.detached(name);
  }
  const line = `dropped mount record(s) ${ids.join(', ')} of volume ${name} on node ${host.nodeId()}: ${why}`;
  if (asked) host.log().info(line);
  else host.log().warn(line);
  await mounts.persist();
  if (remaining === 0) await host.unmark(name);
}

/** Ends one mount of `id` (the caller validated both), detaching the volume when none remain. */
export function unmountId(host: MountHost, name: string, id: string): Promise<void> {
  const mounts = host.mounts();
  return host.runLocked(name, async () => {
    if (!mounts.has(name, id)) {
      // Docker replays Unmount after restarts; an unknown ID has nothing left to release.
      host.log().warn(`unmount of ${name} for unknown mount id ${id} ignored`);
      return;
    }
    const remaining = mounts.decrement(name, id);
    if (remaining === 0) {
      await host.detach(name).catch((err: unknown) => {
        mounts.increment(name, id, isoTime(host.now()));
        throw toStowageError(err, `detaching volume ${name} failed`, name);
      });
      host.detached(name);
    }
    // A failed save is only logged: the mount is released, and the record left on disk is
    // dropped by reconciliation with the engine or an Unmount replayed by Docker.
    await mounts.persist().catch((err: unknown) => host.log().error(`unmount of ${name}: ${messageOf(err)}`));
    if (remaining === 0) await host.unmark(name);
  });
}

/** Takes back a mount whose answer could not be given (Docker sends no Unmount for a failed Mount); under the volume's lock. */
export async function undoMount(host: MountHost, name: string, id: string): Promise<void> {
  const mounts = host.mounts();
  const none = mounts.decrement(name, id) === 0;
  if (none) {
    host.detached(name);
    await host.detach(name).catch((err: unknown) =>
      host.log().error(`detaching ${name} after a failed mount failed: ${describeCause(err)}`));
  }
  await mounts.persist().catch(() => undefined);
  if (none) await host.unmark(name);
}

/** A hand mount as it is answered: which volume, under which label, and where its data is. */
export interface HandMount {
  volume: string;
  label: string;
  id: string;
  mountpoint: string;
}

/**
 * Mounts a volume on this node for a person or a program rather than a container, until
 * unmountByHand: reconciliation with the engine never drops it, a restart attaches it again,
 * and removing the volume is refused meanwhile. A label is held or not: mounting it again
 * answers the same path and counts nothing.
 */
export async function mountByHand(ops: MountOps, name: string, label?: string): Promise<HandMount> {
  assertNewHandLabel(label);
  const id = handMountId(label);
  return { volume: name, label: handLabelOf(id), id, mountpoint: await ops.mount(name, id) };
}

/** Drops a hand mount (however many times it was mounted), detaching the volume when no mount remains. */
export async function unmountByHand(ops: MountOps, name: string, label?: string): Promise<HandMount & { remaining: number }> {
  const id = handMountId(label);
  return ops.runLocked(name, async () => {
    if (!ops.mounts().has(name, id)) {
      // An id copied whole from the mount records: the label is what follows the prefix.
      const whole = isHandMountId(handLabelOf(id)) && ops.mounts().has(name, handLabelOf(id));
      throw new StowageError(ErrorCodes.MOUNT_NOT_FOUND,
        `node ${ops.nodeId()} holds no hand mount of volume ${name} labelled ${handLabelOf(id)}` +
        (whole ? ` (the label of mount id ${handLabelOf(id)} is ${handLabelOf(handLabelOf(id))}: give it without the prefix)` : ''),
        { volume: name, remedies: [{ action: 'list-mounts' }] });
    }
    const mountpoint = ops.path(name) ?? '';
    await ops.drop(name, [id], 'unmounted by hand', true);
    return { volume: name, label: handLabelOf(id), id, mountpoint, remaining: ops.mounts().count(name) };
  });
}

/** Why a volume mounted on this node cannot be removed, with the way out of each hand mount. */
export function mountedHere(mounts: MountTable, name: string, nodeId: string): StowageError {
  const ids = Object.entries(mounts.ids(name));
  const hand = ids.filter(([id]) => isHandMountId(id));
  const restores = ids.filter(([id]) => id.startsWith(RESTORE_MOUNT_PREFIX));
  const byContainers = ids.length > hand.length + restores.length;
  const labels = hand.map(([id]) => handLabelOf(id)).join(', ');
  const some = byContainers || (hand.length > 0 && restores.length > 0) ? ', some of them' : ',';
  const handClause = hand.length === 0 ? '' : `${some} by hand (label ${labels})`;
  const restoreClause = restores.length === 0 ? '' : `${some} by a restore from a backup (${restores.map(([id]) => id).join(', ')})`;
  return new StowageError(ErrorCodes.VOLUME_IN_USE,
    `volume ${name} is mounted ${mounts.count(name)} time(s) on node ${nodeId}${handClause}${restoreClause}` +
    (byContainers ? '; stop or remove the containers using it, then remove it again' : ''),
    { volume: name, node: nodeId, remedies: hand.map(([id]) => ({ action: 'hand-unmount' as const, volume: name, label: handLabelOf(id) })) });
}

export async function releaseMounts(ops: MountOps, name: string, request: { id?: string; force?: boolean }): Promise<MountRecordView[]> {
  const nodeId = ops.nodeId();
  return ops.runLocked(name, async () => {
    const asked = ops.mounts().records().filter((r) => r.volume === name && (request.id === undefined || r.id === request.id));
    if (asked.length === 0) {
      throw new StowageError(ErrorCodes.MOUNT_NOT_FOUND,
        `node ${nodeId} has no mount records of volume ${name}${request.id ? ` with id ${request.id}` : ''}`,
        { volume: name, remedies: [{ action: 'list-mounts' }] });
    }
    // A hand mount is no leak: someone works in that path until they unmount it by hand. Releasing
    // the volume leaves it alone, and naming it alone is refused (unless forced).
    const hand = asked.filter((r) => isHandMountId(r.id));
    const dropped = request.force ? asked : asked.filter((r) => !isHandMountId(r.id));
    if (dropped.length === 0) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${name} is mounted by hand on node ${nodeId} (label ${hand.map((r) => handLabelOf(r.id)).join(', ')}): ` +
        'such a mount is no leak, and ends when it is unmounted by hand',
        { volume: name, node: nodeId, remedies: [
          ...hand.map((r) => ({ action: 'hand-unmount' as const, volume: name, label: handLabelOf(r.id) })),
          { action: 'force-release' as const, volume: name },
        ] });
    }
    // A running restore's record is no leak: dropping it would detach the volume under the restore.
    if (!request.force && ops.isRestoring(name) && dropped.some((r) => r.id.startsWith(RESTORE_MOUNT_PREFIX))) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `volume ${name} is being restored from a backup on node ${nodeId}; its restore's mount ends with the restore`,
        { volume: name, node: nodeId, remedies: [{ action: 'force-release', volume: name }] });
    }
    const engine = ops.engine();
    // Without a configured engine the person asking is the only authority there is.
    if (!request.force && engine.configured) {
      const scan = await engine.scan();
      if (!scan.reachable) {
        throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
          `cannot ask the Docker engine whether containers use ${name} (${scan.error})`,
          { volume: name, remedies: [{ action: 'force-release', volume: name }] });
      }
      const live = (scan.byVolume[name] ?? []).filter((c) => LIVE_STATES.has(c.state));
      if (live.length > 0) {
        throw new StowageError(ErrorCodes.VOLUME_IN_USE,
          `volume ${name} is used by ${live.map((c) => `container ${c.name} (${c.id.slice(0, 12)}, ${c.state})`).join(', ')} ` +
          `on node ${nodeId}; stop it first`, { volume: name, node: nodeId, remedies: [{ action: 'force-release', volume: name }] });
      }
    }
    await ops.drop(name, dropped.map((r) => r.id), 'released on request');
    return dropped;
  });
}

/**
 * Docker's mount IDs are not visible through its API, so leaked mount records are found per
 * volume: records of a volume that no running, paused or restarting container on this node
 * uses, last mounted longer ago than the grace period (a container may be starting right now),
 * belong to a Mount whose answer Docker never got or an Unmount whose save failed.
 * Records stowage made itself (a restore's, a hand mount) are not the engine's to account for.
 * Does nothing while the engine cannot be asked.
 */
export async function reconcileWithEngine(ops: MountOps): Promise<void> {
  const scan = await ops.engine().scan();
  if (!scan.reachable) return;
  const graceMs = ops.graceMs();
  for (const name of ops.mounts().mountedVolumes()) {
    if ((scan.byVolume[name] ?? []).some((c) => LIVE_STATES.has(c.state))) continue;
    await ops.runLocked(name, async () => {
      const cutoff = ops.now() - graceMs;
      const leaked = ops.mounts().entries(name)
        .filter(([id, e]) => isEngineMountId(id) && Date.parse(e.last ?? e.since) < cutoff)
        .map(([id]) => id);
      if (leaked.length === 0) return;
      await ops.drop(name, leaked, `no live container on this node uses the volume (grace ${Math.round(graceMs / 1000)} s)`);
    }).catch((err: unknown) => ops.log().error(`reconciling mount records of ${name} failed: ${describeCause(err)}`));
  }
}

/**
 * At start: records of volumes that no longer exist, or that were removed and re-created
 * meanwhile (another incarnation), are dropped; volumes still in use are attached again. A volume
 * whose record cannot be read keeps its records.
 */
export async function reconcileAtStart(
  ops: MountOps,
  get: (name: string) => Promise<{ createdAt: string; createdBy: string } | undefined>,
  attach: (name: string) => Promise<void>,
): Promise<void> {
  const mounts = ops.mounts();
  const log = ops.log();
  for (const name of mounts.mountedVolumes()) {
    await ops.runLocked(name, async () => {
      let record: { createdAt: string; createdBy: string } | undefined;
      try {
        record = await get(name);
      } catch (err) {
        // Not knowing is not "gone": dropping them would unmark a volume containers may still use.
        log.error(`volume ${name} was mounted ${mounts.count(name)} time(s) before the restart, but its record cannot be read ` +
          `(${describeCause(err)}); its mount records are kept, and its next mount attaches it again`);
        return;
      }
      if (!record) {
        log.warn(`dropping mount records of ${name}: the volume no longer exists`);
        mounts.forget(name);
        return;
      }
      const incarnation = mounts.incarnation(name);
      if (incarnation !== undefined && incarnation !== incarnationOf(record)) {
        log.warn(`dropping mount records of ${name}: they belong to a volume of that name that was removed (${incarnation})`);
        mounts.forget(name);
        return;
      }
      try {
        await attach(name);
        log.info(`volume ${name} kept attached for ${mounts.count(name)} mount(s) from before the restart`);
      } catch (err) {
        log.error(`volume ${name} was mounted before the restart but cannot be attached again: ${describeCause(err)}`);
      }
    });
  }
  await mounts.persist();
}
