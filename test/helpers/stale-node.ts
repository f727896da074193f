import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Plants what a node killed while holding a volume leaves in a shared vfs store (cluster layout
 * 2): its record, last written an hour ago, and its mount marker of `volume`.
 */
export async function plantStaleNode(store: string, nodeId: string, volume: string): Promise<void> {
  const cluster = join(store, '.stowage', 'cluster');
  await mkdir(join(cluster, 'members'), { recursive: true, mode: 0o700 });
  await mkdir(join(cluster, 'mounts', nodeId), { recursive: true, mode: 0o700 });
  await writeFile(join(cluster, 'mounts', nodeId, volume), '', { mode: 0o600 });
  const file = join(cluster, 'members', `${nodeId}.json`);
  await writeFile(file, JSON.stringify({
    format: 2, nodeId, version: '0.1.0', host: nodeId, pid: 4242, startedAt: new Date(0).toISOString(), clockOffsetMs: 0,
    containers: {}, docker: { reachable: false },
  }), { mode: 0o600 });
  const anHourAgo = new Date(Date.now() - 3_600_000);
  await utimes(file, anHourAgo, anHourAgo);
}
