import type { SnapshotRecord } from '../../core/backend.js';
import type { InvalidNodeRecord, NodeView } from '../../core/cluster/node-record.js';
import type { MountRecordView } from '../../core/mount-table.js';
import type { VolumeInfo } from '../../core/volume-manager.js';
import type { RemoveResult } from '../../core/volume-types.js';

export function printTable(rows: string[][]): void {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) {
    process.stdout.write(row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd() + '\n');
  }
}

/** The DOCKER column: whether the node's containers are known, and as of when. */
function dockerColumn(docker: NodeView['record']['docker']): string {
  if (docker.reachable) return 'reachable';
  if (docker.configured === false || docker.error === 'no --docker-host') return 'not configured';
  if (docker.configured && docker.listedAt) return `unreachable (containers as of ${docker.listedAt})`;
  if (docker.configured) return 'unreachable (containers unknown)';
  return 'unreachable';
}

export function printNodes(nodes: NodeView[], invalid: InvalidNodeRecord[], json: boolean): void {
  if (json) {
    printJson(nodes);
    return;
  }
  const rows = [['NODE', 'LAST HEARTBEAT', 'AGE', 'STATE', 'CLOCK OFFSET', 'VERSION', 'DOCKER']];
  for (const n of nodes) {
    rows.push([
      // A node known only by its mount markers has no heartbeat (its age reads null over JSON).
      n.record.nodeId, n.lastHeartbeat, typeof n.heartbeatAgeMs === 'number' && Number.isFinite(n.heartbeatAgeMs) ? `${Math.round(n.heartbeatAgeMs / 1000)}s` : '-', n.stale ? 'stale' : 'alive',
      `${(n.record.clockOffsetMs / 1000).toFixed(1)}s`, n.record.version, dockerColumn(n.record.docker),
    ]);
  }
  // Shown, never trusted: a record another machine wrote that does not pass the checks.
  for (const bad of invalid) rows.push([JSON.stringify(bad.file), '-', '-', 'invalid', '-', '-', bad.problem]);
  printTable(rows);
}

export function printMounts(mounts: MountRecordView[], json: boolean): void {
  if (json) {
    printJson(mounts);
    return;
  }
  printTable([['VOLUME', 'ID', 'COUNT', 'SINCE', 'LAST MOUNTED'], ...mounts.map((m) => [m.volume, m.id, String(m.count), m.since, m.last])]);
}

export function printList(volumes: VolumeInfo[], json: boolean): void {
  if (json) {
    printJson(volumes);
    return;
  }
  const rows = [['NAME', 'SIZE', 'MOUNTS', 'CREATED', 'CREATED BY']];
  for (const v of volumes) {
    rows.push([v.name, v.status.size ?? '-', String(v.mountCount), v.createdAt, v.createdBy]);
  }
  printTable(rows);
}

/** `text` as one single-quoted shell word, for a command printed to be pasted (a store path may hold a quote). */
export function shellWord(text: string): string {
  return `'${text.replace(/'/g, `'\\''`)}'`;
}

/** What `inspect` and `info` print, and every `--json`. */
export function printJson(value: unknown): void {
  process.stdout.write(JSON.stringify(value, null, 2) + '\n');
}

export function printSnapshots(snapshots: SnapshotRecord[], json: boolean): void {
  if (json) {
    printJson(snapshots);
    return;
  }
  printTable([['NAME', 'VOLUME', 'CREATED'], ...snapshots.map((s) => [s.name, s.volume, s.createdAt])]);
}

/** `stowage delete`'s line: the name, then where retained data and any kept snapshots are. */
export function removalLine(name: string, result: RemoveResult): string {
  const kept = result.snapshotsKept;
  const notes = [
    ...(result.retainedAt ? [`data kept at ${result.retainedAt}`] : []),
    ...(kept ? [`${kept.ofEarlierVolume ? `${kept.snapshots} snapshot(s) of an earlier volume ${name}, finished after it was removed,` : `its ${kept.snapshots} snapshot(s)`} ` +
      `kept as backups: stowage backup list --dest ${shellWord(kept.url)}`] : []),
  ];
  return notes.length > 0 ? `${name} (${notes.join('; ')})` : name;
}
