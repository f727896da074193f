/**
 * Two nodes (two VolumeManagers with their own roots) on one shared vfs directory on the real
 * file system: a mount on one node racing a remove on the other must never both succeed.
 */
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { ErrorCodes, isStowageError } from '../../src/core/errors.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';

async function nodeManager(dir: string, nodeId: string): Promise<VolumeManager> {
  const manager = buildContainer({
    backend: 'vfs',
    backendOptions: { 'vfs.path': join(dir, 'shared'), 'vfs.shared': 'true' },
    root: join(dir, nodeId),
    nodeId,
    onRemove: 'delete',
    logger: silentLogger,
    engine: { socket: undefined }, cluster: { heartbeatMs: 60_000 },
  }).get<VolumeManager>(TOKENS.VolumeManager);
  await manager.init();
  return manager;
}

describe('mount on one node against remove on another', { timeout: 60_000 }, () => {
  let dir: string;
  let a: VolumeManager;
  let b: VolumeManager;

  beforeAll(async () => {
    dir = await makeTempDir('stowage-race-');
    await mkdir(join(dir, 'shared'));
    a = await nodeManager(dir, 'node-a');
    b = await nodeManager(dir, 'node-b');
  });
  afterAll(async () => {
    await a?.dispose();
    await b?.dispose();
    await removeTempDir(dir);
  });

  it('either refuses the remove or fails the mount with not-found, never both succeed (40 tries)', async () => {
    const outcomes = { removed: 0, mounted: 0 };
    for (let i = 0; i < 40; i += 1) {
      const name = `race-${i}`;
      await a.create(name);
      // Stagger the start a little so both orders and the overlap are all exercised.
      const [removed, mounted] = await Promise.allSettled([
        new Promise((r) => setTimeout(r, i % 4)).then(() => a.remove(name)),
        new Promise((r) => setTimeout(r, (i + 2) % 4)).then(() => b.mount(name, `m-${i}`)),
      ]);
      expect(removed.status === 'fulfilled' && mounted.status === 'fulfilled', `try ${i}: both succeeded`).toBe(false);
      if (removed.status === 'fulfilled') {
        outcomes.removed += 1;
        expect(isStowageError((mounted as PromiseRejectedResult).reason, ErrorCodes.VOLUME_NOT_FOUND)).toBe(true);
        expect(b.mountRecords().filter((r) => r.volume === name)).toEqual([]);
      } else {
        outcomes.mounted += 1;
        expect((removed.reason as Error).message).toMatch(/still used on node-b: mounted/);
        await b.unmount(name, `m-${i}`);
        // The last unmount removes the node's mount marker before it returns.
        await a.remove(name);
      }
    }
    // Both orders happened, or the test proved nothing about the race.
    expect(outcomes.removed).toBeGreaterThan(0);
    expect(outcomes.mounted).toBeGreaterThan(0);
  });
});
