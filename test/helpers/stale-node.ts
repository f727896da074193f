import { mkdir, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Plants the record of a node that stopped sending heartbeats an hour ago, still holding a
 * mount of `volume`, in a shared vfs store: what a node killed while holding a volume leaves.
 */
export async function plantStaleNode(store: string, nodeId: string, volume: string): Promise<void> {
  const dir = join(store, '.stowage', 'cluster', 'nodes');
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const file = join(dir, `${nodeId}.json`);
  await writeFile(file, JSON.stringify({
    format: 1, nodeId, version: '0.1.0', host: nodeId, pid: 4242, startedAt: new Date(0).toISOString(), clockOffsetMs: 0,
    mounts: { [volume]: { m1: 1 } }, containers: {}, docker: { reachable: false },
  }), { mode: 0o600 });
  const anHourAgo = new Date(Date.now() - 3_600_000);
  await utimes(file, anHourAgo, anHourAgo);
}
