import { LIVE_STATES, type ContainerReferences } from './container-references.js';
import { ErrorCodes, StowageError, describeCause } from './errors.js';
import type { Logger } from './logger.js';
import { incarnationOf, type MountRecordView, type MountTable } from './mount-table.js';

/** What releasing and reconciling need of the volume manager. */
export interface MountOps {
  nodeId(): string;
  engine(): ContainerReferences;
  mounts(): MountTable;
  /** Cluster-clock ms, the clock mount records are stamped with. */
  now(): number;
  graceMs(): number;
  log(): Logger;
  runLocked<T>(name: string, task: () => Promise<T>): Promise<T>;
  /** Drops whole IDs (the caller holds the lock), detaching when none remain. */
  drop(name: string, ids: string[], why: string): Promise<void>;
}

export async function releaseMounts(ops: MountOps, name: string, request: { id?: string; force?: boolean }): Promise<MountRecordView[]> {
  const nodeId = ops.nodeId();
  return ops.runLocked(name, async () => {
    const dropped = ops.mounts().records().filter((r) => r.volume === name && (request.id === undefined || r.id === request.id));
    if (dropped.length === 0) {
      throw new StowageError(ErrorCodes.VOLUME_NOT_FOUND,
        `node ${nodeId} has no mount records of volume ${name}${request.id ? ` with id ${request.id}` : ''}`,
        { volume: name, remedies: [{ action: 'list-mounts' }] });
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
        .filter(([, e]) => Date.parse(e.last ?? e.since) < cutoff)
        .map(([id]) => id);
      if (leaked.length === 0) return;
      await ops.drop(name, leaked, `no live container on this node uses the volume (grace ${Math.round(graceMs / 1000)} s)`);
    }).catch((err: unknown) => ops.log().error(`reconciling mount records of ${name} failed: ${describeCause(err)}`));
  }
}

/**
 * At start: records of volumes that no longer exist, or that were removed and re-created
 * meanwhile (another incarnation), are dropped; volumes still in use are attached again.
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
      const record = await get(name).catch(() => undefined);
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
