/**
 * Volume mode against the real glusterd: a backend only ever stops, deletes or cleans what it
 * can prove is its own. Two deployments on one trusted pool, a state pool inside the volume
 * namespace, an administrator's brick with a colliding name, a crash between `volume delete`
 * and the brick removal, a planted `.stowage-deleting`, and quota settings that disagree
 * across nodes.
 */
import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ExecaCommandRunner, type CommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { createGlusterfsBackend } from '../../src/backends/glusterfs/index.js';
import { createStowage } from '../../src/drivers/api/create-stowage.js';
import type { GlusterVolumeBackend } from '../../src/backends/glusterfs/volume-backend.js';
import { parseReply, parseVolumeInfo } from '../../src/backends/glusterfs/parsers.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { glusterBackend, hardLimitOf, memoryLogger } from '../helpers/gluster-backend.js';
import type { MemoryLogger } from '../helpers/memory-logger.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';
import { createRequest } from '../../src/core/create-request.js';

vi.setConfig({ testTimeout: 120_000 });

const skip = systemSuite('glusterfs', checkGluster());
const MiB = 1024 * 1024;

describe.skipIf(skip)('glusterfs volume mode: a backend destroys only what it can prove is its own', () => {
  let gd: Glusterd;
  let a: GlusterVolumeBackend;
  let b: GlusterVolumeBackend;
  let rootsA: string[];
  let rootB: string;
  const logA = memoryLogger();
  const request = (name: string, options: Record<string, unknown> = {}) =>
    createRequest(name, options, { createdAt: new Date().toISOString(), createdBy: 'node-a' });
  const glusterVolumes = async () =>
    [...(await gd.gluster(['--xml', 'volume', 'list'])).stdout.matchAll(/<volume>([^<]+)<\/volume>/g)].map((m) => m[1]!);
  const infoOf = async (volume: string) => parseVolumeInfo(parseReply(await gd.xml(['volume', 'info', volume])).root)[0]!;
  const exists = (path: string) => realFs.lstat(path).then(() => true, () => false);
  const deploymentA = (bricks: string[], node = 'node-a', log: MemoryLogger = memoryLogger(), extra: Record<string, string> = {}) =>
    glusterBackend(gd, join(gd.dir, 'tmp', `root-${node}`), {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': bricks.map((r) => `${gd.host}:${r}`).join(','),
      'glusterfs.brickforce': 'true', 'glusterfs.pool': 'ostate', ...extra,
    }, node, log) as GlusterVolumeBackend;
  /** A gluster volume made by hand, as an administrator would, with one brick at `brick`. */
  const adminVolume = async (name: string, brick: string) => {
    await realFs.mkdir(brick, { recursive: true });
    await gd.xml(['volume', 'create', name, `${gd.host}:${brick}`, 'force']);
    await gd.xml(['volume', 'start', name]);
  };

  beforeAll(async () => {
    gd = await startGlusterd();
    await gd.createVolume({ name: 'ostate' });
    await gd.createVolume({ name: 'otherstate' });
    rootsA = [await gd.tempDir('bricks-a1-'), await gd.tempDir('bricks-a2-')];
    a = deploymentA(rootsA, 'node-a', logA);
    await a.init();
    rootB = await gd.tempDir('root-b-');
    b = glusterBackend(gd, rootB, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${await gd.tempDir('bricks-b-')}`,
      'glusterfs.brickforce': 'true', 'glusterfs.pool': 'otherstate',
    }, 'node-b') as GlusterVolumeBackend;
    await b.init();
  });
  afterAll(async () => {
    await a?.dispose();
    await b?.dispose();
    await gd?.stop();
  });

  // Item 6
  it('a second deployment on the same trusted pool neither lists, adopts, mounts nor removes the first one\'s volume', async () => {
    await a.create(request('shared'));
    const mounted = await a.attach('shared');
    await realFs.writeFile(join(mounted, 'precious'), 'deployment a');
    expect((await b.list()).map((v) => v.name)).not.toContain('shared');
    expect(await b.get('shared')).toBeUndefined();
    const foreign = expect.stringMatching(/gluster volume stowage-shared belongs to another stowage deployment \(state pool ostate, id [0-9a-f-]{36}\)/);
    await expect(b.remove('shared', { retain: false })).rejects.toMatchObject({ code: ErrorCodes.DATA_CONFLICT, message: foreign });
    await expect(b.create(request('shared', { adopt: true }))).rejects.toMatchObject({ code: ErrorCodes.DATA_CONFLICT, message: foreign });
    await expect(b.attach('shared')).rejects.toMatchObject({ code: ErrorCodes.DATA_CONFLICT, message: foreign });
    expect((await infoOf('stowage-shared')).started).toBe(true);
    expect(await realFs.readFile(join(mounted, 'precious'), 'utf8')).toBe('deployment a');
    expect((await a.get('shared'))?.name).toBe('shared');
    expect(await a.describe()).toMatchObject({ 'glusterfs.deployment': (await infoOf('ostate')).id });
    await a.detach('shared');
  });

  // Item 6, migration of records written before deployments were recorded.
  it('a record without a deployment is claimed only by the deployment whose state pool knows its creator', async () => {
    const legacy = (name: string, createdBy: string) =>
      JSON.stringify({ name, options: {}, createdAt: '2026-01-01T00:00:00.000Z', createdBy });
    await gd.createVolume({ name: 'stowage-old1' });
    await gd.xml(['volume', 'set', 'stowage-old1', 'user.stowage.record', legacy('old1', 'node-a')]);
    await gd.createVolume({ name: 'stowage-old2' });
    await gd.xml(['volume', 'set', 'stowage-old2', 'user.stowage.record', legacy('old2', 'node-gone')]);
    // node-a is a member of deployment a: its node record is in a's state pool.
    await realFs.mkdir(join(a.clusterStateDir, 'nodes'), { recursive: true });
    await realFs.writeFile(join(a.clusterStateDir, 'nodes', 'node-a.json'), JSON.stringify({
      format: 1, nodeId: 'node-a', version: 'test', host: gd.host, pid: 1, startedAt: '2026-01-01T00:00:00.000Z',
      clockOffsetMs: 0, mounts: {}, containers: {},
    }));
    // A record from a daemon of layout 1 that has long stopped: a live one would (rightly) stop
    // the daemons of this version that later tests start on the same state pool.
    const longAgo = new Date(Date.now() - 3600_000);
    await realFs.utimes(join(a.clusterStateDir, 'nodes', 'node-a.json'), longAgo, longAgo);
    const restarted = deploymentA(rootsA, 'node-a2');
    await restarted.init();
    try {
      expect((await restarted.get('old1'))?.createdBy).toBe('node-a');
      expect(await b.get('old1')).toBeUndefined();
      // Nobody can prove old2 is theirs: foreign to both, until an administrator claims it.
      expect(await restarted.get('old2')).toBeUndefined();
      await expect(restarted.remove('old2', { retain: false })).rejects.toMatchObject({
        code: ErrorCodes.DATA_CONFLICT, message: expect.stringMatching(/records no deployment.*claim it by adopting it/),
        remedies: [{ action: 'adopt', volume: 'old2' }],
      });
      expect((await infoOf('stowage-old2')).started).toBe(true);
      const claimed = await restarted.create(request('old2', { adopt: true }));
      expect(claimed.adopted).toBe(true);
      expect((await a.get('old2'))?.name).toBe('old2');
      expect(await b.get('old2')).toBeUndefined();
    } finally {
      await restarted.dispose();
    }
  });

  // Item 7
  it('refuses a state pool whose name falls inside the volume namespace, so no volume can be the cluster state', async () => {
    await gd.createVolume({ name: 'stowage-state' });
    const start = async () => {
      const clash = glusterBackend(gd, await gd.tempDir('root-clash-'), {
        'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${rootsA[0]}`, 'glusterfs.brickforce': 'true',
        'glusterfs.pool': 'stowage-state',
      }) as GlusterVolumeBackend;
      await clash.init();
      // Only reached when start-up let it through: what a user could then do.
      await clash.create(request('state', { adopt: true }));
      await clash.remove('state', { retain: false });
    };
    await expect(start()).rejects.toMatchObject({
      code: ErrorCodes.INVALID_OPTION, message: expect.stringMatching(/glusterfs.pool=stowage-state .*glusterfs.volumeprefix=stowage-/),
    });
    expect(await glusterVolumes()).toContain('stowage-state');
  });

  // Item 8
  it('records the exact bricks it makes, with the peer that holds each', async () => {
    await a.create(request('made'));
    const made = await infoOf('stowage-made');
    const record = JSON.parse(made.options['user.stowage.record']!) as { bricks?: unknown };
    expect(record.bricks).toEqual(made.bricks.map((brick) => ({ host: brick.host, path: brick.path, peer: brick.hostUuid })));
  });

  it('never deletes an adopted volume\'s brick, even one whose name stowage could have made', async () => {
    // An administrator's volume whose brick sits in the brick root with a name stowage could have made.
    const brick = join(rootsA[0]!, 'stowage-db-1');
    await adminVolume('stowage-db', brick);
    await realFs.writeFile(join(brick, 'table'), 'rows');
    await a.create(request('db', { adopt: true }));
    await a.remove('db', { retain: false });
    await a.settle();
    expect(await glusterVolumes()).not.toContain('stowage-db');
    expect(await realFs.readFile(join(brick, 'table'), 'utf8')).toBe('rows');
    expect(logA.lines.some((l) => l.includes(`${gd.host}:${brick}`) && /adopted/.test(l))).toBe(true);
  });

  // Item 10
  it('a volume delete that errs after glusterd deleted the volume still completes the remove: no brick is left behind', async () => {
    await a.create(request('crashy'));
    const bricks = (await infoOf('stowage-crashy')).bricks.map((brick) => brick.path);
    expect(bricks).toHaveLength(2);
    // The delete call fails (a timeout, say) after glusterd deleted the volume.
    const real = new ExecaCommandRunner();
    const runner: CommandRunner = {
      run: async (program, args, options) => {
        const result = await real.run(program, args, options);
        if (program === 'gluster' && args.includes('delete')) throw new Error('no answer after volume delete');
        return result;
      },
    };
    const dying = createGlusterfsBackend({
      nodeId: 'node-a3', root: await gd.tempDir('root-a3-'), runner, log: memoryLogger(), fs: realFs,
    }, {
      'glusterfs.servers': gd.host, 'glusterfs.glusterdsocket': gd.socket, 'glusterfs.mode': 'volume',
      'glusterfs.bricks': rootsA.map((r) => `${gd.host}:${r}`).join(','), 'glusterfs.brickforce': 'true', 'glusterfs.pool': 'ostate',
    }) as GlusterVolumeBackend;
    await dying.init();
    // glusterd says the volume is gone, so the remove is complete: the bricks are stowage's to delete.
    await dying.remove('crashy', { retain: false });
    expect(await glusterVolumes()).not.toContain('stowage-crashy');
    await dying.settle();
    await dying.dispose();
    for (const path of bricks) expect(await exists(path)).toBe(false);
  });

  it('a deletion interrupted after the brick was moved aside is finished at the next start, from its tombstone', async () => {
    await a.create(request('halfway'));
    await realFs.writeFile(join(await a.attach('halfway'), 'file'), 'data');
    await a.detach('halfway');
    const { bricks, id } = await infoOf('stowage-halfway');
    // This daemon moves the bricks aside, then cannot delete a single directory (as if killed there).
    const stuck = createGlusterfsBackend({
      nodeId: 'node-a7', root: await gd.tempDir('root-a7-'), runner: new ExecaCommandRunner(), log: memoryLogger(),
      fs: { ...realFs, rmdir: () => Promise.reject(new Error('killed while deleting')) } as unknown as typeof realFs,
    }, {
      'glusterfs.servers': gd.host, 'glusterfs.glusterdsocket': gd.socket, 'glusterfs.mode': 'volume',
      'glusterfs.bricks': rootsA.map((r) => `${gd.host}:${r}`).join(','), 'glusterfs.brickforce': 'true', 'glusterfs.pool': 'ostate',
    }) as GlusterVolumeBackend;
    await stuck.init();
    await stuck.remove('halfway', { retain: false });
    await stuck.settle();
    const aside = bricks.map((b) => join(b.path, '..', '.stowage-deleting', b.path.split('/').pop()!));
    expect((await Promise.all(aside.map(exists))).some(Boolean)).toBe(true);
    const tombstones = join(a.clusterStateDir, '..', 'glusterfs', 'tombstones');
    expect((await realFs.readdir(tombstones)).filter((f) => f.startsWith(id))).toHaveLength(1);
    await stuck.dispose();
    const nextLog = memoryLogger();
    const next = deploymentA(rootsA, 'node-a8', nextLog);
    await next.init();
    await next.settle();
    await next.dispose();
    for (const path of [...aside, ...bricks.map((b) => b.path)]) expect(await exists(path)).toBe(false);
    expect(nextLog.lines.filter((l) => !l.startsWith('info'))).toEqual([]);
    expect((await realFs.readdir(tombstones)).filter((f) => f.startsWith(id))).toEqual([]);
  });

  it('a tombstone in the shared state cannot make a node delete what is not provably a deleted brick of its own peer', async () => {
    const peer = /<uuid>([0-9a-f-]{36})<\/uuid>[\s\S]*?<hostname>localhost<\/hostname>/.exec(await gd.xml(['pool', 'list']))![1]!;
    const otherPeer = '00000000-0000-4000-8000-000000000001';
    const volumeId = '00000000-0000-4000-8000-0000000000aa';
    // Directories named exactly as stowage names bricks, but gluster never made them bricks of that volume.
    const lookalike = join(rootsA[0]!, 'stowage-ghost-20260101T000000Z-abcdef');
    const remote = join(rootsA[1]!, 'stowage-ghost-20260101T000000Z-abcdef');
    for (const dir of [lookalike, remote]) {
      await realFs.mkdir(dir);
      await realFs.writeFile(join(dir, 'keep'), 'not a brick');
    }
    const tombstones = join(a.clusterStateDir, '..', 'glusterfs', 'tombstones');
    await realFs.mkdir(tombstones, { recursive: true });
    const write = (forPeer: string, path: string) => realFs.writeFile(join(tombstones, `${volumeId}.${forPeer}.json`), JSON.stringify({
      format: 2, gluster: 'stowage-ghost', volumeId, peer: forPeer, bricks: [{ host: gd.host, path, peer: forPeer }],
      deletedAt: '2026-01-01T00:00:00.000Z', deletedBy: 'node-x',
    }));
    await write(peer, lookalike);
    await write(otherPeer, remote);
    const log = memoryLogger();
    const node = deploymentA(rootsA, 'node-a6', log);
    await node.init();
    await node.settle();
    expect((await node.describe())['glusterfs.bricksawaitingremoval']).toMatch(new RegExp(`^1 volume\\(s\\) on peer ${otherPeer} \\(tombstones in `));
    await node.dispose();
    expect(await realFs.readFile(join(lookalike, 'keep'), 'utf8')).toBe('not a brick');
    expect(await realFs.readFile(join(remote, 'keep'), 'utf8')).toBe('not a brick');
    expect(log.lines.some((l) => l.includes(lookalike) && /trusted.glusterfs.volume-id/.test(l))).toBe(true);
    // The other peer's tombstone waits for a node on that peer.
    expect(await exists(join(tombstones, `${volumeId}.${otherPeer}.json`))).toBe(true);
  });

  it('start-up never deletes through a planted .stowage-deleting or entries stowage did not put there', async () => {
    const root = await gd.tempDir('bricks-planted-');
    const precious = await gd.tempDir('admin-data-');
    await realFs.writeFile(join(precious, 'keep'), 'admin');
    await realFs.symlink(precious, join(root, '.stowage-deleting'));
    const root2 = await gd.tempDir('bricks-planted2-');
    await realFs.mkdir(join(root2, '.stowage-deleting', 'not-a-brick'), { recursive: true });
    await realFs.writeFile(join(root2, '.stowage-deleting', 'not-a-brick', 'keep'), 'admin');
    const log = memoryLogger();
    const node = deploymentA([root, root2], 'node-a5', log);
    await node.init();
    await node.settle();
    expect(await realFs.readFile(join(precious, 'keep'), 'utf8')).toBe('admin');
    expect(await realFs.readFile(join(root2, '.stowage-deleting', 'not-a-brick', 'keep'), 'utf8')).toBe('admin');
    expect(log.lines.some((l) => /\.stowage-deleting.*symbolic link/.test(l))).toBe(true);
    await node.dispose();
  });

  it('never writes its brick journal through a symlink planted in the shared state pool', async () => {
    await b.create(request('journaled'));
    const outside = await gd.tempDir('outside-');
    const planted = join(rootB, 'glusterfs', 'mnt', 'otherstate', '.stowage', 'glusterfs');
    await realFs.symlink(outside, planted);
    try {
      await expect(b.remove('journaled', { retain: false })).rejects.toMatchObject({
        code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/\.stowage\/glusterfs is a symbolic link/),
      });
      expect((await infoOf('stowage-journaled')).started).toBe(true);
      expect(await realFs.readdir(outside)).toEqual([]);
    } finally {
      await realFs.unlink(planted);
    }
    await b.remove('journaled', { retain: false });
    await b.settle();
    expect(await glusterVolumes()).not.toContain('stowage-journaled');
  });

  // Item 11
  it('reports a size recorded on a node without quotas when a node with quotas meets it', async () => {
    const log = memoryLogger();
    const noQuota = deploymentA(rootsA, 'node-q', log, { 'glusterfs.quota': 'false' });
    await noQuota.init();
    await noQuota.create(request('capless', { size: 10 * MiB }));
    expect(await hardLimitOf(gd, 'stowage-capless', '/')).toBeUndefined();
    expect(await a.volumeStatus('capless')).toMatchObject({
      warning: expect.stringMatching(/size 10MiB is recorded but not enforced.*glusterfs.quota=false/),
    });
    expect(logA.lines.some((l) => /capless.*not enforced/.test(l))).toBe(true);
    await noQuota.dispose();
    // Docker's create of the same name on a node with quotas answers with the warning.
    const root = await gd.tempDir('root-s-');
    const stowage = await createStowage({ backend: deploymentA(rootsA, 'node-s'), root: join(root, 'state'), nodeId: 'node-s' });
    try {
      const answer = await stowage.create('capless', { size: '10MiB' });
      expect(answer.created).toBe(false);
      expect(answer.volume.status.warning).toMatch(/size 10MiB is recorded but not enforced/);
    } finally {
      await stowage.close();
    }
  });

  it('adopt keeps an existing limit on / and refuses a different size rather than overwrite it', async () => {
    await adminVolume('stowage-limited', join(rootsA[1]!, 'admin-limited'));
    await gd.xml(['volume', 'quota', 'stowage-limited', 'enable']);
    await gd.xml(['volume', 'quota', 'stowage-limited', 'limit-usage', '/', String(20 * MiB)]);
    await expect(a.create(request('limited', { adopt: true, size: 10 * MiB }))).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringMatching(/already has a limit of 20MiB on \//),
    });
    expect(await hardLimitOf(gd, 'stowage-limited', '/')).toBe(20 * MiB);
    expect(await a.get('limited')).toBeUndefined();
    const adopted = await a.create(request('limited', { adopt: true, size: 20 * MiB }));
    expect(adopted.options.size).toBe(20 * MiB);
    expect(await hardLimitOf(gd, 'stowage-limited', '/')).toBe(20 * MiB);
  });
});
