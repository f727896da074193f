/**
 * Node directories left by test processes that died without `stop()` (a crash, SIGKILL, vitest
 * killing a worker). Their processes died with them (pdeathsig); the directories are removed
 * by the next `startDockerNode`.
 */
import { readdir, readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { pidAlive } from './child-process-stop.js';
import { mountsUnder } from './node-mounts.js';

/** Every node directory is `<base>/<NODE_DIR_PREFIX><name>-<random>`. */
export const NODE_DIR_PREFIX = 'stowage-node-';

/**
 * A directory is only removed once its owner and its dockerd are gone (the holder died with the
 * owner: SIGKILL by pdeathsig) and nothing is mounted under it in this namespace.
 */
export async function reapOrphanedNodes(base: string): Promise<void> {
  const entries = await readdir(base).catch(() => [] as string[]);
  for (const entry of entries.filter((e) => e.startsWith(NODE_DIR_PREFIX))) {
    const dir = join(base, entry);
    const owner = await readFile(join(dir, 'owner.json'), 'utf8')
      .then((text) => (JSON.parse(text) as { pid?: unknown }).pid)
      .catch(() => undefined);
    if (typeof owner !== 'number' || owner === process.pid || (await pidAlive(owner))) continue;
    const dockerdPid = Number((await readFile(join(dir, 'docker.pid'), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(dockerdPid) && dockerdPid > 0 && (await pidAlive(dockerdPid))) continue;
    if ((await mountsUnder(dir)).length > 0) continue;
    await rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/** Records who owns a node directory, for the reaper above. */
export function ownerRecord(): string {
  return JSON.stringify({ pid: process.pid, startedAt: new Date().toISOString() });
}
