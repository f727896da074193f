import type { VolumeInfo } from '../../core/volume-manager.js';

export function printList(volumes: VolumeInfo[], json: boolean): void {
  if (json) {
    process.stdout.write(JSON.stringify(volumes, null, 2) + '\n');
    return;
  }
  const rows = [['NAME', 'SIZE', 'MOUNTS', 'CREATED', 'CREATED BY']];
  for (const v of volumes) {
    rows.push([v.name, v.status.size ?? '-', String(v.mountCount), v.createdAt, v.createdBy]);
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  for (const row of rows) {
    process.stdout.write(row.map((cell, i) => cell.padEnd(widths[i]!)).join('  ').trimEnd() + '\n');
  }
}

export function printVolume(volume: unknown): void {
  process.stdout.write(JSON.stringify(volume, null, 2) + '\n');
}

export function printInfo(info: unknown): void {
  process.stdout.write(JSON.stringify(info, null, 2) + '\n');
}
