import { LIVE_STATES } from '../../../core/container-references.js';
import { messageOf } from '../../../core/errors.js';
import { RESTORE_MOUNT_PREFIX, isEngineMountId } from '../../../core/mount-kinds.js';
import { MountFiles } from '../../../core/mount-log.js';
import type { MountRecordView } from '../../../core/mount-table.js';
import { fail, ok, seconds, skip, warn, type CheckResult, type DoctorContext } from './check.js';
import { engineOf } from './engine-checks.js';

/** This node's mount records: from the daemon, or read from --root when none runs. */
async function mountRecords(ctx: DoctorContext): Promise<MountRecordView[]> {
  if (ctx.daemon) return ctx.daemon.mounts;
  const { volumes } = await new MountFiles(ctx.fs, ctx.settings.root, ctx.settings.nodeId).read();
  const views: MountRecordView[] = [];
  for (const [volume, { ids }] of Object.entries(volumes)) {
    for (const [id, entry] of Object.entries(ids)) {
      const e = entry as { count?: number; since?: string; last?: string };
      views.push({ volume, id, count: e.count ?? 1, since: e.since ?? '', last: e.last ?? e.since ?? '' });
    }
  }
  return views;
}

/**
 * Leaked mount records: a record keeps its volume attached and blocks its removal everywhere,
 * so one that no container accounts for (as the daemon's reconciliation judges it: no running,
 * paused or restarting container on this node uses the volume, and it was last mounted longer
 * ago than --mount-grace) or whose volume is gone needs releasing.
 */
export async function mountRecordsCheck(ctx: DoctorContext): Promise<CheckResult> {
  let records: MountRecordView[];
  try {
    records = await mountRecords(ctx);
  } catch (err) {
    return fail('mount-records', `this node's mount records cannot be read: ${messageOf(err)}`,
      'the daemon refuses to start so; fix or move the file aside (see "Mounts and restarts" in the README)');
  }
  if (records.length === 0) return ok('mount-records', 'no mount records on this node');
  const byVolume = new Map<string, MountRecordView[]>();
  for (const r of records) byVolume.set(r.volume, [...(byVolume.get(r.volume) ?? []), r]);
  const gone = ctx.daemon?.volumes ? [...byVolume.keys()].filter((v) => !ctx.daemon!.volumes!.includes(v)) : [];
  const engine = engineOf(ctx);
  const scan = engine ? await engine.scan() : undefined;
  if (!scan?.reachable) {
    const why = scan ? `the Docker engine cannot be asked (${scan.error})` : 'no Docker engine is configured';
    return gone.length > 0
      ? warn('mount-records', `mount records of volume(s) that no longer exist: ${gone.join(', ')}; ${why}`, `stowage release ${gone[0]}`)
      : skip('mount-records', `${records.length} mount record(s) of ${byVolume.size} volume(s); ${why}, so leaks cannot be told apart`);
  }
  const cutoff = ctx.now() - ctx.settings.mountGraceMs;
  const leaked: string[] = [];
  /** The release that drops exactly the first volume's leaked records, and nothing else. */
  let firstRelease: string | undefined;
  for (const [volume, rows] of byVolume) {
    if (gone.includes(volume)) continue;
    if ((scan.byVolume[volume] ?? []).some((c) => LIVE_STATES.has(c.state))) continue;
    // A hand mount or a restore's is stowage's own, as the daemon's reconciliation judges it too.
    const old = rows.filter((r) => isEngineMountId(r.id) && Date.parse(r.last || r.since) < cutoff);
    if (old.length === 0) continue;
    leaked.push(`${volume} (${old.map((r) => r.id).join(', ')})`);
    // A release of the volume leaves hand mounts, but would take a record still within the grace.
    const wholeVolume = old.length === rows.filter((r) => isEngineMountId(r.id)).length && rows.every((r) => !r.id.startsWith(RESTORE_MOUNT_PREFIX));
    firstRelease ??= wholeVolume ? `stowage release ${volume}` : `stowage release ${volume} ${old[0]!.id}${old.length > 1 ? ' (and each other id listed)' : ''}`;
  }
  const problems = [
    ...(leaked.length > 0 ? [`no live container on this node uses ${leaked.join(', ')} (mounted more than ${seconds(ctx.settings.mountGraceMs)} ago)`] : []),
    ...(gone.length > 0 ? [`records of volume(s) that no longer exist: ${gone.join(', ')}`] : []),
  ];
  if (problems.length === 0) {
    const own = records.filter((r) => !isEngineMountId(r.id)).length;
    return ok('mount-records', `${records.length} mount record(s), each accounted for by a live container` +
      (own > 0 ? `, or held by stowage itself (${own}: by hand or by a restore)` : ''));
  }
  return warn('mount-records', `leaked mount records: ${problems.join('; ')}`,
    `${firstRelease ?? `stowage release ${gone[0]!}`} (until then those records keep the volume attached and its removal refused; ` +
    'a running daemon that reaches the engine drops them itself at its next reconciliation)');
}
