/**
 * Two nodes on one shared vfs directory on the real file system: a remove whose cluster lock
 * lapses while it is stalled (a slow store) must not move away the volume another node made
 * under the same name meanwhile.
 */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { silentLogger } from '../../src/core/logger.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { faultyFs } from '../helpers/lock-faults.js';

const TTL_MS = 600;

describe('vfs: a remove whose cluster lock lapsed', { timeout: 60_000 }, () => {
  let dir: string;
  const managers: VolumeManager[] = [];
  const shared = () => join(dir, 'shared');

  async function node(id: string, fs: FsPort): Promise<VolumeManager> {
    const manager = buildContainer({
      backend: 'vfs', backendOptions: { 'vfs.path': shared(), 'vfs.shared': 'true' }, root: join(dir, id), nodeId: id,
      onRemove: 'delete', fs, logger: silentLogger,
      engine: { socket: undefined }, cluster: { heartbeatMs: 60_000, lockTtlMs: TTL_MS, lockWaitMs: 10_000 },
    }).get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    managers.push(manager);
    return manager;
  }

  beforeEach(async () => {
    dir = await makeTempDir('stowage-lapse-');
    await realFs.mkdir(shared());
  });
  afterEach(async () => {
    for (const m of managers.splice(0)) await m.dispose().catch(() => undefined);
    await removeTempDir(dir);
  });

  it('stops before moving the data, and the volume node b made meanwhile keeps its data', async () => {
    const locks = faultyFs(realFs, join(shared(), '.stowage', 'cluster', 'locks'));
    const journal = faultyFs(locks.fs, join(shared(), '.stowage', 'journal'));
    const a = await node('node-a', journal.fs);
    const b = await node('node-b', realFs);
    await a.create('vol');
    await realFs.writeFile(join(shared(), 'vol', 'old'), 'of the first volume');
    // Node a's remove stalls writing its intent record, and its lock directory becomes unreachable.
    journal.set('hold-writes');
    const removing = a.remove('vol').then(() => undefined, (err: unknown) => err);
    await expect.poll(() => journal.hits, { timeout: 5_000, interval: 10 }).toBeGreaterThan(0);
    locks.set('fail');
    // Node b waits out a's lock, removes the volume and makes a new one of the same name.
    await b.remove('vol');
    await b.create('vol');
    await realFs.writeFile(join(shared(), 'vol', 'new'), 'of node b');
    journal.set('pass');
    const error = await removing;
    locks.set('pass');
    expect(await realFs.readFile(join(shared(), 'vol', 'new'), 'utf8')).toBe('of node b');
    expect(await b.get('vol')).toMatchObject({ createdBy: 'node-b' });
    expect(await a.get('vol')).toMatchObject({ createdBy: 'node-b' });
    expect(error).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/^lost the cluster lock on volume vol \(could not renew for [\d.]+ s: .*\): stopped before moving the data of volume vol out of the store; nothing was deleted; try again$/),
    });
    // The intent record node a left names the first volume only: replaying it at a's restart changes nothing of b's.
    await a.dispose();
    managers.splice(managers.indexOf(a), 1);
    const restarted = await node('node-a', realFs);
    expect(await restarted.get('vol')).toMatchObject({ createdBy: 'node-b' });
    expect(await realFs.readdir(join(shared(), 'vol'))).toEqual(['new']);
    expect(await realFs.readdir(join(shared(), '.stowage', 'journal'))).toEqual([]);
  });
});
