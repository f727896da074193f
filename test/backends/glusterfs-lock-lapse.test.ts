/**
 * A cluster lock that lapses in the middle of a gluster operation, against the real glusterd:
 * two nodes (two VolumeManagers, each with its own mount of the state pool where the locks
 * live) contend for one name while one node's gluster call is held and its lock directory is
 * unreachable. The node that lost its lock must not destroy what the other one made meanwhile.
 */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { buildContainer } from '../../src/container.js';
import { SharedClock } from '../../src/core/clock.js';
import { ClusterLocks } from '../../src/core/cluster/cluster-lock.js';
import { ExecaCommandRunner, type CommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { TOKENS } from '../../src/core/tokens.js';
import type { VolumeManager } from '../../src/core/volume-manager.js';
import type { GlusterVolumeBackend } from '../../src/backends/glusterfs/volume-backend.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { deleteVolumes, glusterBackend, memoryLogger, unmountUnder } from '../helpers/gluster-backend.js';
import { faultyFs, holdingRunner, type FaultyFs } from '../helpers/lock-faults.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';

vi.setConfig({ testTimeout: 120_000 });

const skip = systemSuite('glusterfs', checkGluster());
const TTL_MS = 1_500;

describe.skipIf(skip)('glusterfs volume mode: a lapsed cluster lock', () => {
  let gd: Glusterd;
  let brickRoot: string;
  const managers: VolumeManager[] = [];
  const roots: string[] = [];
  const logA = memoryLogger();

  async function node(id: string, runner: CommandRunner, faults?: (backend: GlusterVolumeBackend) => FaultyFs) {
    const root = await gd.tempDir(`root-${id}-`);
    roots.push(root);
    const backend = glusterBackend(gd, root, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${brickRoot}`, 'glusterfs.brickforce': 'true',
      'glusterfs.pool': 'lstate',
    }, id, id === 'node-a' ? logA : memoryLogger(), runner) as GlusterVolumeBackend;
    const gate = faults?.(backend);
    const fs: FsPort = gate?.fs ?? realFs;
    const manager = buildContainer({
      backend, backendOptions: {}, root, nodeId: id, onRemove: 'delete', fs, logger: id === 'node-a' ? logA : memoryLogger(),
      engine: { socket: undefined }, cluster: { heartbeatMs: 60_000, lockTtlMs: TTL_MS, lockWaitMs: 30_000 },
    }).get<VolumeManager>(TOKENS.VolumeManager);
    await manager.init();
    managers.push(manager);
    return { manager, backend, gate };
  }

  const info = async (volume: string) => (await gd.gluster(['--xml', 'volume', 'info', volume])).stdout;
  const glusterVolumes = async () =>
    [...(await gd.gluster(['--xml', 'volume', 'list'])).stdout.matchAll(/<volume>([^<]+)<\/volume>/g)].map((m) => m[1]!);

  beforeAll(async () => {
    gd = await startGlusterd();
    brickRoot = await gd.tempDir('bricks-');
    await gd.createVolume({ name: 'lstate' });
  });
  afterAll(async () => {
    for (const m of managers) await m.dispose().catch(() => undefined);
    for (const root of roots) await unmountUnder(root);
    if (gd) await deleteVolumes(gd, 'stowage-');
    await gd?.stop();
  });

  it('a create whose lock lapsed during a held gluster call leaves alone the volume another node adopted meanwhile', async () => {
    const held = holdingRunner(new ExecaCommandRunner(),
      (program, args) => program === 'gluster' && args.includes('start') && args.includes('stowage-contested'));
    const a = await node('node-a', held.runner, (backend) => faultyFs(realFs, join(backend.clusterStateDir, 'locks')));
    const b = await node('node-b', new ExecaCommandRunner());
    const creating = a.manager.create('contested').then(() => undefined, (err: unknown) => err);
    await held.reached;
    // Node a's gluster call hangs and its lock directory is unreachable: its lock cannot be renewed.
    a.gate!.set('fail');
    const t0 = Date.now();
    // Node b waits out a's lock, then finds a gluster volume without a record and adopts it.
    const adopted = await b.manager.create('contested', { adopt: 'true' });
    const waitedMs = Date.now() - t0;
    expect(adopted).toMatchObject({ created: true, volume: { createdBy: 'node-b', adopted: true } });
    expect(waitedMs).toBeGreaterThanOrEqual(TTL_MS - 200);
    const brick = (await realFs.readdir(brickRoot)).find((d) => d.startsWith('stowage-contested-'));
    expect(brick).toBeDefined();
    await realFs.writeFile(join(brickRoot, brick!, 'b-was-here'), 'data of node b');
    // Node a's held call goes on now and fails ("already started"): a create that must be undone.
    held.release();
    const error = await creating;
    a.gate!.set('pass');
    await (a.backend as unknown as { settle(): Promise<void> }).settle();
    // Node b's volume is intact: the gluster volume, its record, its brick and its data.
    expect(await glusterVolumes()).toContain('stowage-contested');
    expect(await b.manager.get('contested')).toMatchObject({ createdBy: 'node-b', adopted: true });
    expect(await realFs.readFile(join(brickRoot, brick!, 'b-was-here'), 'utf8')).toBe('data of node b');
    expect(error).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(new RegExp('^lost the cluster lock on volume contested \\(could not renew for [\\d.]+ s: renewing failed: .*EIO.*\\): ' +
        'stopped before undoing the create \\(stopping and deleting gluster volume stowage-contested\\); nothing was deleted; try again$')),
    });
    // What went wrong first is kept: the held start found the volume already started by node b.
    expect(String((error as Error).cause)).toMatch(/start/);
  });

  it('a remove whose lock lapsed while gluster answered slowly leaves alone the volume another node made under the name meanwhile', async () => {
    let infos = 0;
    let removeStarted = false;
    // The remove's second `volume info` of the name is the backend's own lookup, right before its
    // first destructive step (stopping the gluster volume; its snapshots go after the stop, then the volume).
    const held = holdingRunner(new ExecaCommandRunner(), (program, args) =>
      removeStarted && program === 'gluster' && args.includes('info') && args.includes('stowage-again') && ++infos === 2);
    const a = await node('node-c', held.runner, (backend) => faultyFs(realFs, join(backend.clusterStateDir, 'locks')));
    const b = await node('node-d', new ExecaCommandRunner());
    await a.manager.create('again');
    removeStarted = true;
    const removing = a.manager.remove('again').then(() => undefined, (err: unknown) => err);
    await held.reached;
    a.gate!.set('fail');
    // Node d waits out c's lock, removes the volume and makes a new one of the same name.
    await b.manager.remove('again');
    await b.manager.create('again');
    const brick = (await realFs.readdir(brickRoot)).find((d) => d.startsWith('stowage-again-'));
    await realFs.writeFile(join(brickRoot, brick!, 'd-was-here'), 'data of node d');
    held.release();
    const error = await removing;
    a.gate!.set('pass');
    expect(await glusterVolumes()).toContain('stowage-again');
    expect(await info('stowage-again')).toMatch(/<statusStr>Started<\/statusStr>/);
    expect(await b.manager.get('again')).toMatchObject({ createdBy: 'node-d' });
    expect(await realFs.readFile(join(brickRoot, brick!, 'd-was-here'), 'utf8')).toBe('data of node d');
    expect(error).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/^lost the cluster lock on volume again \(could not renew for [\d.]+ s: .*\): stopped before stopping gluster volume stowage-again; nothing was deleted; try again$/),
    });
  });

  it('on two FUSE mounts of the state pool, renewals keep the lock file\'s inode and the other mount sees its expiry move on', async () => {
    const e = await node('node-e', new ExecaCommandRunner());
    const f = await node('node-f', new ExecaCommandRunner());
    const dirE = join(e.backend.clusterStateDir, 'locks');
    const dirF = join(f.backend.clusterStateDir, 'locks');
    const seenFromF = async () => ({
      ino: (await realFs.stat(join(dirF, 'fused.lock'))).ino,
      expiresAt: (JSON.parse(await realFs.readFile(join(dirF, 'fused.lock'), 'utf8')) as { expiresAt: number }).expiresAt,
    });
    const clock = new SharedClock();
    const holder = new ClusterLocks(realFs, dirE, 'node-e', clock, { ttlMs: TTL_MS, waitMs: 1_000 });
    const waiter = new ClusterLocks(realFs, dirF, 'node-f', clock, { ttlMs: TTL_MS, waitMs: 3 * TTL_MS });
    await holder.withLock('fused', async (lease) => {
      const first = await seenFromF();
      // Three lifetimes: only renewals that land through FUSE keep node f out.
      await expect(waiter.withLock('fused', async () => 'in')).rejects.toThrow(/locked by node node-e/);
      const later = await seenFromF();
      expect(later.ino).toBe(first.ino);
      expect(later.expiresAt).toBeGreaterThan(first.expiresAt + TTL_MS);
      lease.assertHeld('the next step');
    });
    expect(await waiter.withLock('fused', async () => 'in')).toBe('in');
    expect((await realFs.readdir(dirF)).filter((n) => n.endsWith('.lock'))).toEqual([]);
  });
});
