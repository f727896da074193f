/**
 * Faults with the real daemon: glusterd down or hung while stowage mounts, a gluster volume
 * stopped under a mounted volume, a dead FUSE client, a missing volume directory, and files
 * in an unmounted mount point. Each must end in a clear error within a bound well under
 * Docker's 2-minute Mount timeout, or in a repaired mount, and never in a local directory
 * handed out in place of gluster.
 */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import type { GlusterSubdirBackend } from '../../src/backends/glusterfs/subdir-backend.js';
import type { GlusterVolumeBackend } from '../../src/backends/glusterfs/volume-backend.js';
import { createStowage } from '../../src/drivers/api/create-stowage.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { clientPidOf, eventually, glusterBackend, glusterMountsUnder, memoryLogger, unmountUnder } from '../helpers/gluster-backend.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';
import { createRequest } from '../../src/core/create-request.js';

vi.setConfig({ testTimeout: 120_000 });

const skip = systemSuite('glusterfs', checkGluster());
const TIMEOUT_S = 3;

/** Pids of every gluster FUSE client serving `target` (its last argument). */
async function clientPidsOf(target: string): Promise<number[]> {
  const pids: number[] = [];
  for (const pid of (await realFs.readdir('/proc')).filter((e) => /^\d+$/.test(e))) {
    const args = (await realFs.readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
    if (/(^|\/)glusterfs$/.test(args[0] ?? '') && args[args.length - 1] === target) pids.push(Number(pid));
  }
  return pids;
}

describe.skipIf(skip)('glusterfs backend faults', () => {
  let gd: Glusterd;
  let sub: GlusterSubdirBackend;
  let vol: GlusterVolumeBackend;
  let subRoot: string;
  let volRoot: string;
  const subLog = memoryLogger();
  const pool = 'fpool';
  const poolMount = () => join(subRoot, 'glusterfs', 'mnt', pool);
  const request = (name: string) => createRequest(name, {}, { createdAt: new Date().toISOString(), createdBy: 'node-a' });
  const timed = async <T>(fn: () => Promise<T>): Promise<{ ms: number; error: unknown }> => {
    const t0 = Date.now();
    const error = await fn().then(() => undefined, (err: unknown) => err);
    return { ms: Date.now() - t0, error };
  };

  beforeAll(async () => {
    gd = await startGlusterd();
    await gd.createVolume({ name: pool });
    await gd.createVolume({ name: 'fstate' });
    subRoot = await gd.tempDir('root-sub-');
    volRoot = await gd.tempDir('root-vol-');
    sub = glusterBackend(gd, subRoot, { 'glusterfs.pool': pool, 'glusterfs.timeout': String(TIMEOUT_S) }, 'node-a', subLog) as GlusterSubdirBackend;
    vol = glusterBackend(gd, volRoot, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${await gd.tempDir('bricks-')}`, 'glusterfs.brickforce': 'true',
      'glusterfs.timeout': String(TIMEOUT_S), 'glusterfs.pool': 'fstate',
    }) as GlusterVolumeBackend;
    await sub.init();
    await vol.init();
    await sub.create(request('steady'));
    await realFs.writeFile(join(await sub.attach('steady'), 'file'), 'gluster data');
  });
  afterEach(async () => {
    // A failed test must not leave the next one with a paused or stopped glusterd or pool.
    gd.resume();
    await gd.startDaemon();
    await gd.startVolume(pool).catch(() => undefined);
    await gd.startVolume('fstate').catch(() => undefined);
  });
  afterAll(async () => {
    await gd?.stop();
  });

  it('glusterd stopped during a mount attempt: a clear error at once, nothing mounted or written locally', async () => {
    await unmountUnder(subRoot);
    await gd.stopDaemon();
    const { ms, error } = await timed(() => sub.attach('steady'));
    expect(error).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(new RegExp(`cannot mount gluster volume ${pool} for volume steady at .* on node node-a: ` +
        `glusterd on ${gd.host} did not answer \\(port 24007\\).*client log: `)),
    });
    expect(ms).toBeLessThan(10_000);
    expect(await glusterMountsUnder(subRoot)).toEqual([]);
    expect(await realFs.readdir(poolMount())).toEqual([]);
    // The CLI says the same in its own words, just as fast.
    const cli = await timed(() => vol.list());
    expect(cli.error).toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/glusterd is not reachable.*socket/) });
    expect(cli.ms).toBeLessThan(10_000);
    await gd.startDaemon();
    expect(await realFs.readFile(join(await sub.attach('steady'), 'file'), 'utf8')).toBe('gluster data');
  });

  it('glusterd hung (never answers) during a mount attempt: bounded by glusterfs.timeout, no client left behind', async () => {
    await unmountUnder(subRoot);
    gd.pause();
    const { ms, error } = await timed(() => sub.attach('steady'));
    expect(error).toMatchObject({ code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/cannot mount gluster volume fpool/) });
    // mount (3 s) + one probe of what it left (3 s) + cleanup: far below Docker's 120 s.
    expect(ms).toBeLessThan(20_000);
    expect(await glusterMountsUnder(subRoot)).toEqual([]);
    expect(await clientPidOf(poolMount())).toBeUndefined();
    // The CLI is bounded the same way: gluster's own --timeout answers, our runner timeout backs it up.
    const cli = await timed(() => vol.list());
    expect(cli.error).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/gluster volume info on node node-a failed: glusterd did not answer within 3 s/),
    });
    expect(cli.ms).toBeLessThan(10_000);
    gd.resume();
    expect(await realFs.readFile(join(await sub.attach('steady'), 'file'), 'utf8')).toBe('gluster data');
  });

  it('a dead FUSE client ("Transport endpoint is not connected") is detected and remounted', async () => {
    const path = await sub.attach('steady');
    const pid = await clientPidOf(poolMount());
    expect(pid).toBeDefined();
    process.kill(pid!, 'SIGKILL');
    // The kernel aborts the dead connection: ECONNABORTED or ENOTCONN, depending on the call.
    await expect(realFs.readFile(join(path, 'file'))).rejects.toMatchObject({ code: expect.stringMatching(/^(ECONNABORTED|ENOTCONN)$/) });
    expect(await sub.attach('steady')).toBe(path);
    expect(await realFs.readFile(join(path, 'file'), 'utf8')).toBe('gluster data');
    expect(subLog.lines.some((l) => /is dead \(Transport endpoint is not connected\); mounting it again/.test(l))).toBe(true);
  });

  it('a dead pool mount met by concurrent requests is remounted once: one mount, one client', async () => {
    await sub.attach('steady');
    process.kill((await clientPidOf(poolMount()))!, 'SIGKILL');
    const results = await Promise.allSettled([sub.list(), sub.get('steady'), sub.attach('steady'), sub.list(), sub.get('steady')]);
    expect(results.map((r) => (r.status === 'rejected' ? String(r.reason) : r.status))).toEqual(Array(5).fill('fulfilled'));
    expect((await glusterMountsUnder(subRoot)).filter((m) => m === poolMount())).toHaveLength(1);
    expect(await clientPidsOf(poolMount())).toHaveLength(1);
    expect(await realFs.readFile(join(await sub.attach('steady'), 'file'), 'utf8')).toBe('gluster data');
  });

  it('volume mode: detach unmounts every mount stacked at the volume\'s mount point', async () => {
    await vol.create(request('stacked'));
    const path = await vol.attach('stacked');
    // A second client at the same point, as concurrent remounts made it (mount.glusterfs itself refuses to stack).
    await execa('glusterfs', ['--volfile-server', gd.host, '--volfile-id', '/stowage-stacked', path]);
    expect(await eventually(async () => (await glusterMountsUnder(volRoot)).filter((m) => m === path).length === 2)).toBe(true);
    await vol.detach('stacked');
    expect((await glusterMountsUnder(volRoot)).filter((m) => m === path)).toEqual([]);
    expect(await eventually(async () => (await clientPidsOf(path)).length === 0)).toBe(true);
  });

  it('the pool stopped under a mounted volume: reported with what to do, healed after it starts again', async () => {
    const path = await sub.attach('steady');
    await gd.stopVolume(pool);
    await expect(realFs.readdir(path)).rejects.toMatchObject({ code: 'ENOTCONN' });
    const { ms, error } = await timed(() => sub.attach('steady'));
    expect(error).toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/the pool volume fpool is stopped, not started, so volume steady cannot be reached on node node-a; start it: gluster volume start fpool/),
    });
    expect(ms).toBeLessThan(20_000);
    expect(await glusterMountsUnder(subRoot)).toEqual([]);
    await gd.startVolume(pool);
    expect(await sub.attach('steady')).toBe(path);
    expect(await realFs.readFile(join(path, 'file'), 'utf8')).toBe('gluster data');
  });

  it('the pool stopped: create, remove and mount through the core say so and what to do, never a lock file\'s ENOENT', async () => {
    const root = await gd.tempDir('root-core-');
    const backend = glusterBackend(gd, root, { 'glusterfs.pool': pool, 'glusterfs.timeout': String(TIMEOUT_S) }, 'node-c');
    const stowage = await createStowage({ backend, root: join(root, 'state'), nodeId: 'node-c' });
    try {
      await stowage.create('kept');
      await gd.stopVolume(pool);
      const stopped = (name: string) => expect.objectContaining({
        code: ErrorCodes.BACKEND_UNAVAILABLE,
        message: expect.stringMatching(new RegExp(`^the pool volume ${pool} is stopped, not started, so volume ${name} cannot be ` +
          `reached on node node-c; start it: gluster volume start ${pool}$`)),
      });
      // Twice: the first call finds the dead mount, the second the bare mount point it leaves.
      for (let round = 0; round < 2; round += 1) {
        const { ms, error } = await timed(() => stowage.create('fresh'));
        expect(error).toEqual(stopped('fresh'));
        expect(ms).toBeLessThan(20_000);
        await expect(stowage.remove('kept')).rejects.toEqual(stopped('kept'));
        await expect(stowage.mount('kept', 'm1')).rejects.toEqual(stopped('kept'));
      }
      expect(await realFs.readdir(join(root, 'glusterfs', 'mnt', pool))).toEqual([]);
      await gd.startVolume(pool);
      expect((await stowage.create('fresh')).created).toBe(true);
      await stowage.remove('kept');
      expect((await stowage.list()).map((v) => v.name)).toContain('fresh');
      await stowage.remove('fresh');
    } finally {
      await stowage.close();
      await unmountUnder(root);
    }
  });

  it('volume mode, the state pool stopped: create and remove say which pool to start', async () => {
    const root = await gd.tempDir('root-vcore-');
    const backend = glusterBackend(gd, root, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${await gd.tempDir('bricks-')}`, 'glusterfs.brickforce': 'true',
      'glusterfs.timeout': String(TIMEOUT_S), 'glusterfs.pool': 'fstate', 'glusterfs.volumeprefix': 'fcore-',
    }, 'node-v');
    const stowage = await createStowage({ backend, root: join(root, 'state'), nodeId: 'node-v' });
    try {
      await stowage.create('vkept');
      await gd.stopVolume('fstate');
      for (const attempt of [() => stowage.create('vfresh'), () => stowage.remove('vkept'), () => stowage.create('vfresh')]) {
        await expect(attempt()).rejects.toMatchObject({
          code: ErrorCodes.BACKEND_UNAVAILABLE,
          message: expect.stringMatching(/^the pool volume fstate is stopped, not started, so volume v(fresh|kept) cannot be reached on node node-v; start it: gluster volume start fstate$/),
        });
      }
      expect((await gd.xml(['volume', 'list'])).includes('fcore-vfresh')).toBe(false);
      await gd.startVolume('fstate');
      await stowage.remove('vkept');
      expect((await gd.xml(['volume', 'list'])).includes('fcore-vkept')).toBe(false);
    } finally {
      await stowage.close();
      await unmountUnder(root);
    }
  });

  it('volume mode: a stopped gluster volume under a mounted volume is reported, and remounted once started', async () => {
    await vol.create(request('vstop'));
    const path = await vol.attach('vstop');
    await realFs.writeFile(join(path, 'file'), 'vol data');
    await gd.stopVolume('stowage-vstop');
    await expect(realFs.readFile(join(path, 'file'))).rejects.toMatchObject({ code: 'ENOTCONN' });
    await expect(vol.attach('vstop')).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/gluster volume stowage-vstop of volume vstop is stopped, not started; start it \(gluster volume start stowage-vstop\)/),
    });
    expect(await vol.volumeStatus('vstop')).toMatchObject({ glusterStatus: 'Stopped' });
    await gd.startVolume('stowage-vstop');
    expect(await eventually(async () => {
      const again = await vol.attach('vstop').catch(() => '');
      return again === path && (await realFs.readFile(join(path, 'file'), 'utf8').catch(() => '')) === 'vol data';
    })).toBe(true);
  });

  it('a missing volume directory is refused, and neither gluster nor the node gets a stand-in', async () => {
    await sub.create(request('fragile'));
    const path = await sub.attach('fragile');
    await realFs.rmdir(path);
    await expect(sub.attach('fragile')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_DATA_MISSING, message: expect.stringMatching(/data directory .*fragile of volume fragile is missing/),
    });
    await expect(realFs.stat(path)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('refuses to mount over files written into the bare mount point, and leaves them alone', async () => {
    await unmountUnder(subRoot);
    await realFs.writeFile(join(poolMount(), 'stray'), 'written while unmounted');
    await expect(sub.attach('steady')).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/mount point is not empty \(stray\.\.\.\).*move those files away/),
    });
    expect(await glusterMountsUnder(subRoot)).toEqual([]);
    expect(await realFs.readFile(join(poolMount(), 'stray'), 'utf8')).toBe('written while unmounted');
    await realFs.rm(join(poolMount(), 'stray'));
    expect(await realFs.readFile(join(await sub.attach('steady'), 'file'), 'utf8')).toBe('gluster data');
  });
});
