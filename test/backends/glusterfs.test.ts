import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ExecaCommandRunner, type CommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import {
  describeBackendConformance, describeBackupConformance, describeSharedStoreConformance, describeSnapshotConformance,
} from '../../src/testing/index.js';
import { VfsBackend } from '../../src/backends/vfs/vfs-backend.js';
import { parseVfsOptions } from '../../src/backends/vfs/vfs-options.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import type { GlusterSubdirBackend } from '../../src/backends/glusterfs/subdir-backend.js';
import {
  deleteVolumes, eventually, fillUntilRefused, glusterBackend, glusterMountsUnder, hardLimitOf, memoryLogger, quotaDiagnostics, quotaTimeoutsOf,
  unmountUnder,
} from '../helpers/gluster-backend.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';
import { createRequest } from '../../src/core/create-request.js';
import { OwnStorage } from '../../src/core/backup/own-storage.js';

// Every call below goes through a real glusterd: volume create/start/stop take seconds, and the
// shared suite creates 40 volumes in one test.
vi.setConfig({ testTimeout: 240_000 });

const skip = systemSuite('glusterfs', checkGluster());
const MiB = 1024 * 1024;
/** How far past a limit writes may land with strict timeouts: measured 0-1 MiB, see the README. */
const MAX_OVERSHOOT = 2 * MiB;

describe.skipIf(skip)('glusterfs backend against a real glusterd', () => {
  let gd: Glusterd;
  let seq = 0;
  beforeAll(async () => {
    gd = await startGlusterd();
    // One brick process for all volumes: the shared suite makes ~60 gluster volumes in volume
    // mode, and multiplexing (a normal production setting) cuts their start/stop time by a third.
    await gd.xml(['volume', 'set', 'all', 'cluster.brick-multiplex', 'on']);
    process.stderr.write(`[glusterfs tests] private glusterd answered after ${gd.startMs} ms\n`);
  });
  afterAll(async () => {
    await gd?.stop();
  });

  let pool: string | undefined;
  /** Empties the shared pool after a test (cheaper than a gluster volume per test), then unmounts. */
  const emptyPool = async (...roots: string[]) => {
    const mountpoint = join(roots[0]!, 'glusterfs', 'mnt', pool!);
    for (const entry of await realFs.readdir(mountpoint)) await realFs.rm(join(mountpoint, entry), { recursive: true, force: true });
    for (const root of roots) await unmountUnder(root);
  };
  describeBackendConformance('glusterfs, subdir mode', async () => {
    if (pool === undefined) await gd.createVolume({ name: (pool = 'cpool') });
    const root = await gd.tempDir('root-');
    const backend = glusterBackend(gd, root, { 'glusterfs.pool': pool });
    await backend.init();
    const mountpoint = join(root, 'glusterfs', 'mnt', pool);
    return {
      backend, fs: realFs,
      // A volume's data is a top-level directory of the pool.
      plantData: async (name, file, content) => {
        await realFs.mkdir(join(mountpoint, name));
        await realFs.writeFile(join(mountpoint, name, file), content);
      },
      dataRoot: mountpoint,
      unavailable: async () => ({
        backend: glusterBackend(gd, await gd.tempDir('root-'), { 'glusterfs.pool': 'no-such-pool' }), missing: 'no-such-pool',
      }),
      cleanup: () => emptyPool(root),
    };
  });

  describeSnapshotConformance('glusterfs, subdir mode', async () => {
    if (pool === undefined) await gd.createVolume({ name: (pool = 'cpool') });
    const root = await gd.tempDir('root-');
    const backend = glusterBackend(gd, root, { 'glusterfs.pool': pool });
    await backend.init();
    return { backend, fs: realFs, cleanup: () => emptyPool(root) };
  });

  describeSharedStoreConformance('glusterfs, subdir mode, two nodes', async () => {
    if (pool === undefined) await gd.createVolume({ name: (pool = 'cpool') });
    const roots = [await gd.tempDir('root-'), await gd.tempDir('root-')];
    const [first, second] = roots.map((root, i) => glusterBackend(gd, root, { 'glusterfs.pool': pool! }, `node-${i}`));
    await first!.init();
    await second!.init();
    return { first: first!, second: second!, fs: realFs, cleanup: () => emptyPool(...roots) };
  });

  let statePool: string | undefined;
  const volumeMode = async (bricks: string, prefix: string, nodeId?: string) => {
    // One small state pool (cluster records only) serves every backend of these suites.
    if (statePool === undefined) await gd.createVolume({ name: (statePool = 'cvstate') });
    const root = await gd.tempDir('root-');
    const backend = glusterBackend(gd, root, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${bricks}`, 'glusterfs.brickforce': 'true',
      'glusterfs.volumeprefix': prefix, 'glusterfs.pool': statePool,
    }, nodeId);
    await backend.init();
    return { backend, root };
  };
  describeBackendConformance('glusterfs, volume mode', async () => {
    const prefix = `cv${++seq}-`;
    const bricks = await gd.tempDir('bricks-');
    const { backend, root } = await volumeMode(bricks, prefix);
    return {
      backend, fs: realFs, dataRoot: bricks,
      unavailable: async () => ({
        backend: glusterBackend(gd, await gd.tempDir('root-'), {
          'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${bricks}`, 'glusterfs.pool': 'no-such-state-pool',
        }),
        missing: 'no-such-state-pool',
      }),
      cleanup: async () => {
        await unmountUnder(root);
        await deleteVolumes(gd, prefix);
      },
    };
  });

  describeSnapshotConformance('glusterfs, volume mode', async () => {
    const prefix = `cv${++seq}-`;
    const bricks = await gd.tempDir('bricks-');
    const { backend, root } = await volumeMode(bricks, prefix);
    return {
      backend, fs: realFs,
      cleanup: async () => {
        // The state pool serves every test: its snapshot repository goes with each test's volumes.
        await realFs.rm(join(root, 'glusterfs', 'mnt', statePool!, '.stowage', 'snapshots'), { recursive: true, force: true });
        await unmountUnder(root);
        await deleteVolumes(gd, prefix);
      },
    };
  });

  /** A vfs store on the host: the backups of gluster volumes are restored into it too. */
  const vfsElsewhere = async () => {
    const dir = await gd.tempDir('vfs-');
    return {
      label: 'vfs on the host', root: dir,
      backend: new VfsBackend({ nodeId: 'node-a', root: dir, fs: realFs, runner: new ExecaCommandRunner(), log: memoryLogger() },
        parseVfsOptions({ 'vfs.path': join(dir, 'store') }, dir)),
    };
  };

  describeBackupConformance('glusterfs, subdir mode', async () => {
    if (pool === undefined) await gd.createVolume({ name: (pool = 'cpool') });
    const root = await gd.tempDir('root-');
    // Not initialised: the core does that, as in the daemon, with its state in the same root.
    return {
      backend: glusterBackend(gd, root, { 'glusterfs.pool': pool }), root, timeoutMs: 600_000,
      other: await vfsElsewhere(),
      cleanup: async () => {
        await realFs.rm(join(root, 'glusterfs', 'mnt', pool!, '.stowage', 'snapshots'), { recursive: true, force: true }).catch(() => undefined);
        await emptyPool(root);
      },
    };
  });

  describeBackupConformance('glusterfs, volume mode', async () => {
    if (statePool === undefined) await gd.createVolume({ name: (statePool = 'cvstate') });
    const prefix = `cv${++seq}-`;
    const bricks = await gd.tempDir('bricks-');
    const root = await gd.tempDir('root-');
    return {
      backend: glusterBackend(gd, root, {
        'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${bricks}`, 'glusterfs.brickforce': 'true',
        'glusterfs.volumeprefix': prefix, 'glusterfs.pool': statePool,
      }),
      root, timeoutMs: 600_000,
      cleanup: async () => {
        await realFs.rm(join(root, 'glusterfs', 'mnt', statePool!, '.stowage', 'snapshots'), { recursive: true, force: true });
        await unmountUnder(root);
        await deleteVolumes(gd, prefix);
      },
    };
  });

  describeSharedStoreConformance('glusterfs, volume mode, two nodes', async () => {
    const prefix = `cv${++seq}-`;
    const bricks = await gd.tempDir('bricks-');
    const one = await volumeMode(bricks, prefix, 'node-one');
    const two = await volumeMode(bricks, prefix, 'node-two');
    return {
      first: one.backend, second: two.backend, fs: realFs,
      cleanup: async () => {
        await unmountUnder(one.root);
        await unmountUnder(two.root);
        await deleteVolumes(gd, prefix);
      },
    };
  });
});

describe.skipIf(skip)('glusterfs backend, subdir mode', () => {
  let gd: Glusterd;
  const pool = 'xpool';
  let a: GlusterSubdirBackend;
  let rootA: string;
  const request = (name: string, size?: number) =>
    createRequest(name, size === undefined ? {} : { size }, { createdAt: new Date().toISOString(), createdBy: 'node-a' });

  beforeAll(async () => {
    gd = await startGlusterd();
    await gd.createVolume({ name: pool, bricks: 2, replica: 2 });
    rootA = await gd.tempDir('root-a-');
    a = glusterBackend(gd, rootA, { 'glusterfs.pool': pool }) as GlusterSubdirBackend;
    await a.init();
  });
  afterAll(async () => {
    await a?.dispose();
    await gd?.stop();
  });

  it('mounts the pool once under --root, confirmed as fuse.glusterfs, and says so in describe', async () => {
    const mountpoint = join(rootA, 'glusterfs', 'mnt', pool);
    expect(await glusterMountsUnder(rootA)).toEqual([mountpoint]);
    expect(await a.describe()).toMatchObject({ 'glusterfs.mode': 'subdir', 'glusterfs.pool': pool, mountpoint });
    await a.create(request('first'));
    await a.create(request('second'));
    await a.attach('first');
    await a.attach('second');
    expect(await glusterMountsUnder(rootA)).toEqual([mountpoint]);
  });

  it('takes a second FUSE mount of the pool for its own storage: no backup repository there', async () => {
    const store = join(rootA, 'glusterfs', 'mnt', pool);
    const again = await gd.tempDir('second-mount-');
    await execa('mount', ['-t', 'glusterfs', `${gd.host}:/${pool}`, again]);
    try {
      const own = new OwnStorage([rootA, store]);
      const outcome = (path: string) => own.assertOutside({ scheme: 'vfs', path }, 'the repository')
        .then(() => 'allowed', (err: unknown) => (err as { code?: string }).code ?? String(err));
      // Not the same device as the daemon's mount: only the volume's name tells them apart.
      const devOf = async (path: string) => (await realFs.stat(path)).dev;
      expect(await devOf(again)).not.toBe(await devOf(store));
      expect(await outcome(join(again, '.stowage', 'snapshots'))).toBe(ErrorCodes.INVALID_REQUEST);
      expect(await outcome(join(again, 'first', 'repo'))).toBe(ErrorCodes.INVALID_REQUEST);
      expect(await outcome(join(gd.dir, 'backups'))).toBe('allowed');
    } finally {
      await execa('umount', [again]);
    }
  });

  it('turns size into a gluster directory quota, shows limit and usage, and drops the limit on remove', async () => {
    await a.create(request('sized', 50 * 1024 * 1024));
    expect(await hardLimitOf(gd, pool, '/sized')).toBe(52428800);
    const path = await a.attach('sized');
    await realFs.writeFile(join(path, 'blob'), Buffer.alloc(3 * 1024 * 1024, 1));
    let status: Record<string, string> = {};
    expect(await eventually(async () => {
      status = await a.volumeStatus('sized');
      return status.quotaUsed === '3MiB';
    })).toBe(true);
    expect(status).toMatchObject({ glusterVolume: pool, glusterPath: '/sized', quotaLimit: '50MiB', quotaExceeded: 'no' });
    // The limit is what the filesystem reports inside the volume: a container's df shows 50M.
    const df = await realFs.statfs(path);
    expect(df.blocks * df.bsize).toBe(52428800);
    await a.remove('sized', { retain: false });
    expect(await hardLimitOf(gd, pool, '/sized')).toBeUndefined();
  });

  it('a remove the store refuses keeps the volume\'s limit', async () => {
    await a.create(request('refused', 5 * MiB));
    const meta = join(rootA, 'glusterfs', 'mnt', pool, '.stowage');
    const decoy = await gd.tempDir('decoy-');
    await realFs.mkdir(join(meta, 'deleting'), { recursive: true });
    await realFs.rename(join(meta, 'deleting'), join(meta, 'deleting.orig'));
    await realFs.symlink(decoy, join(meta, 'deleting'));
    try {
      await expect(a.remove('refused', { retain: false })).rejects.toThrow();
    } finally {
      await realFs.unlink(join(meta, 'deleting'));
      await realFs.rename(join(meta, 'deleting.orig'), join(meta, 'deleting'));
    }
    expect((await a.get('refused'))?.options.size).toBe(5 * MiB);
    expect(await hardLimitOf(gd, pool, '/refused')).toBe(5 * MiB);
    await a.remove('refused', { retain: false });
    expect(await hardLimitOf(gd, pool, '/refused')).toBeUndefined();
  });

  it('a start sets the limit of a volume whose size is recorded but has none (a create killed before its limit)', async () => {
    await a.create(request('unlimited-after-crash', 6 * MiB));
    await gd.xml(['volume', 'quota', pool, 'remove', '/unlimited-after-crash']);
    expect(await hardLimitOf(gd, pool, '/unlimited-after-crash')).toBeUndefined();
    // And one whose directory never had a limit: registered by a node that only records sizes.
    const recording = glusterBackend(gd, await gd.tempDir('root-q-'), { 'glusterfs.pool': pool, 'glusterfs.quota': 'false' }, 'node-q');
    await recording.init();
    await recording.create(request('never-limited', 7 * MiB));
    await recording.dispose();
    expect(await hardLimitOf(gd, pool, '/never-limited')).toBeUndefined();
    const log = memoryLogger();
    const restarted = glusterBackend(gd, await gd.tempDir('root-r-'), { 'glusterfs.pool': pool }, 'node-r', log) as GlusterSubdirBackend;
    await restarted.init();
    try {
      expect(await hardLimitOf(gd, pool, '/unlimited-after-crash')).toBe(6 * MiB);
      expect(log.lines.some((l) => /volume unlimited-after-crash had no gluster quota limit .* the limit is set again/.test(l))).toBe(true);
      expect(await hardLimitOf(gd, pool, '/never-limited')).toBe(7 * MiB);
      await restarted.remove('unlimited-after-crash', { retain: false });
      await restarted.remove('never-limited', { retain: false });
    } finally {
      await restarted.dispose();
    }
  });

  it('removes a volume whose limit an administrator already dropped by hand', async () => {
    await a.create(request('hand-dropped', 10 * MiB));
    await gd.xml(['volume', 'quota', pool, 'remove', '/hand-dropped']);
    expect(await hardLimitOf(gd, pool, '/hand-dropped')).toBeUndefined();
    await a.remove('hand-dropped', { retain: false });
    expect(await a.get('hand-dropped')).toBeUndefined();
  });

  it('enforces size strictly by default: 40 MiB of writes into a 20 MiB volume stop just past 20 MiB', async () => {
    const fill = async (name: string) => {
      const since = new Date();
      await a.create(request(name, 20 * MiB));
      expect(await quotaTimeoutsOf(gd, pool)).toEqual({ soft: '0', hard: '0' });
      const filled = await fillUntilRefused(await a.attach(name), 40);
      process.stderr.write(`[glusterfs tests] 20 MiB quota, strict: ${(filled.bytes / MiB).toFixed(2)} MiB landed\n`);
      const unenforced = filled.refusal === undefined ? await quotaDiagnostics(gd, pool, `/${name}`, since) : undefined;
      await a.remove(name, { retain: false });
      return { ...filled, unenforced };
    };
    let { bytes, refusal, unenforced } = await fill('capped');
    if (unenforced !== undefined) {
      // Once, in one CI run of many, gluster let all 40 MiB into a limit set moments before; the
      // cause is not known yet (the output above is for finding it). Say so, then hold a second
      // volume to the promise (see the README's GlusterFS notes).
      process.stderr.write(`[glusterfs tests] a fresh 20 MiB limit was not enforced at all; gluster said:\n${unenforced}\n`);
      ({ bytes, refusal } = await fill('capped-again'));
    }
    expect(refusal).toMatch(/Disk quota exceeded/);
    // Measured 20-21 MiB (README); gluster's default timeouts let all 40 MiB through.
    expect(bytes).toBeGreaterThanOrEqual(19 * MiB);
    expect(bytes).toBeLessThanOrEqual(20 * MiB + MAX_OVERSHOOT);
  });

  it('glusterfs.quotatimeout relaxes the checking; a default daemon makes a pool found with quotas strict at start', async () => {
    await gd.createVolume({ name: 'relaxpool' });
    const root = await gd.tempDir('root-r-');
    const relaxed = glusterBackend(gd, root, { 'glusterfs.pool': 'relaxpool', 'glusterfs.quotatimeout': '7' }, 'node-r') as GlusterSubdirBackend;
    await relaxed.init();
    // Quota off on the pool: nothing to set at start.
    expect(await quotaTimeoutsOf(gd, 'relaxpool')).toEqual({ soft: undefined, hard: undefined });
    await relaxed.create(request('loose', 5 * MiB));
    expect(await quotaTimeoutsOf(gd, 'relaxpool')).toEqual({ soft: '7', hard: '7' });
    expect(await relaxed.describe()).toMatchObject({ 'glusterfs.quotatimeout': '7s' });
    await relaxed.dispose();
    await unmountUnder(root);
    const strict = glusterBackend(gd, root, { 'glusterfs.pool': 'relaxpool' }, 'node-r') as GlusterSubdirBackend;
    await strict.init();
    expect(await quotaTimeoutsOf(gd, 'relaxpool')).toEqual({ soft: '0', hard: '0' });
    await strict.dispose();
    await unmountUnder(root);
  });

  it('shares volumes between nodes through the registry in the pool', async () => {
    const rootB = await gd.tempDir('root-b-');
    const b = glusterBackend(gd, rootB, { 'glusterfs.pool': pool }, 'node-b') as GlusterSubdirBackend;
    await b.init();
    try {
      await a.create(request('shared'));
      await realFs.writeFile(join(await a.attach('shared'), 'from-a'), 'written on node a');
      expect((await b.list()).map((v) => v.name)).toContain('shared');
      expect((await b.get('shared'))?.createdBy).toBe('node-a');
      const onB = await b.attach('shared');
      expect(onB.startsWith(rootB)).toBe(true);
      expect(await realFs.readFile(join(onB, 'from-a'), 'utf8')).toBe('written on node a');
      await b.remove('shared', { retain: false });
      // Node a's FUSE client caches entries for up to a second (gluster's entry/md-cache timeouts).
      expect(await eventually(async () => (await a.get('shared')) === undefined, 5_000)).toBe(true);
    } finally {
      await b.dispose();
      await unmountUnder(rootB);
    }
  });

  it('attaches a volume removed and re-created on another node freshly, never through a stale handle', async () => {
    const rootB = await gd.tempDir('root-b-');
    const b = glusterBackend(gd, rootB, { 'glusterfs.pool': pool }, 'node-b') as GlusterSubdirBackend;
    await b.init();
    try {
      await a.create(request('recycled'));
      const path = await a.attach('recycled');
      await realFs.writeFile(join(path, 'old'), 'first life');
      await b.remove('recycled', { retain: false });
      await b.create(request('recycled'));
      // Node a's kernel still caches the old directory entry. Docker bind-mounts what attach
      // returns, pinning that entry, so attach must have refreshed it (a plain open would retry
      // a stale handle by itself, a bind mount does not).
      expect(await a.attach('recycled')).toBe(path);
      const bind = await gd.tempDir('bind-');
      await execa('mount', ['--bind', path, bind]);
      try {
        expect(await realFs.readdir(bind)).toEqual([]);
      } finally {
        await execa('umount', [bind]);
      }
    } finally {
      await b.dispose();
      await unmountUnder(rootB);
    }
  });

  it('answers Get from the gluster registry even after the pool was unmounted behind its back', async () => {
    await a.create(request('survivor'));
    const mountpoint = join(rootA, 'glusterfs', 'mnt', pool);
    await unmountUnder(rootA);
    expect(await glusterMountsUnder(rootA)).toEqual([]);
    // An unmounted pool looks like an empty store; Get must not answer "no such volume" from it.
    expect((await a.get('survivor'))?.name).toBe('survivor');
    expect(await glusterMountsUnder(rootA)).toEqual([mountpoint]);
  });

  it('a size gluster refuses to enforce creates nothing, and adopted data stays where it was', async () => {
    const real = new ExecaCommandRunner();
    const refusing: CommandRunner = {
      run: (program, args, options) => (args.includes('limit-usage')
        ? Promise.resolve({ exitCode: 0, stderr: '', stdout: '<cliOutput><opRet>-1</opRet><opErrstr>Quota limit refused for the test</opErrstr></cliOutput>' })
        : real.run(program, args, options)),
    };
    const root = await gd.tempDir('root-q-');
    const strict = glusterBackend(gd, root, { 'glusterfs.pool': pool }, 'node-q', memoryLogger(), refusing) as GlusterSubdirBackend;
    await strict.init();
    await expect(strict.create(request('unlimited', 1048576))).rejects.toThrow(/setting a 1048576-byte quota on \/unlimited of gluster volume xpool failed: Quota limit refused/);
    expect(await strict.get('unlimited')).toBeUndefined();
    const legacy = join(root, 'glusterfs', 'mnt', pool, 'legacy');
    await realFs.mkdir(legacy);
    await realFs.writeFile(join(legacy, 'old'), 'data from before');
    await expect(strict.create({ ...request('legacy', 1048576), adopt: true })).rejects.toThrow(/Quota limit refused/);
    expect(await strict.get('legacy')).toBeUndefined();
    expect(await realFs.readFile(join(legacy, 'old'), 'utf8')).toBe('data from before');
    await unmountUnder(root);
  });

  it('refuses to start on a pool that does not exist or is not started, mounting nothing', async () => {
    const root = await gd.tempDir('root-c-');
    const missing = glusterBackend(gd, root, { 'glusterfs.pool': 'nosuchpool' });
    await expect(missing.init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/pool volume nosuchpool does not exist on .*gluster volume create nosuchpool/),
    });
    await gd.createVolume({ name: 'idlepool', start: false });
    const idle = glusterBackend(gd, root, { 'glusterfs.pool': 'idlepool' });
    await expect(idle.init()).rejects.toThrow(/idlepool is created, not started; start it: gluster volume start idlepool/);
    expect(await glusterMountsUnder(root)).toEqual([]);
  });
});
