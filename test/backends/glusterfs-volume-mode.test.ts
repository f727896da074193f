import * as realFs from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import type { GlusterVolumeBackend } from '../../src/backends/glusterfs/volume-backend.js';
import { startGlusterd, type Glusterd } from '../helpers/glusterd.js';
import { execa } from 'execa';
import {
  clientPidOf, eventually, glusterBackend, glusterMountsUnder, hardLimitOf, memoryLogger, quotaTimeoutsOf, unmountUnder,
} from '../helpers/gluster-backend.js';
import { checkGluster, systemSuite } from '../helpers/requirements.js';
import { createRequest } from '../../src/core/create-request.js';
import { longestGlusterName } from '../../src/backends/glusterfs/volume-naming.js';
import { ExecaCommandRunner, type CommandRunner } from '../../src/core/command-runner.js';

vi.setConfig({ testTimeout: 120_000 });

const skip = systemSuite('glusterfs', checkGluster());

describe.skipIf(skip)('glusterfs backend, volume mode', () => {
  let gd: Glusterd;
  let a: GlusterVolumeBackend;
  let rootA: string;
  let brickRoots: string[];
  const log = memoryLogger();
  const request = (name: string, options: Record<string, unknown> = {}) =>
    createRequest(name, options, { createdAt: new Date().toISOString(), createdBy: 'node-a' });
  const glusterVolumes = async () =>
    [...(await gd.gluster(['--xml', 'volume', 'list'])).stdout.matchAll(/<volume>([^<]+)<\/volume>/g)].map((m) => m[1]!);
  const info = async (volume: string) => (await gd.gluster(['--xml', 'volume', 'info', volume])).stdout;

  beforeAll(async () => {
    gd = await startGlusterd();
    brickRoots = [await gd.tempDir('bricks1-'), await gd.tempDir('bricks2-')];
    await gd.createVolume({ name: 'vstate' });
    rootA = await gd.tempDir('root-a-');
    a = glusterBackend(gd, rootA, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': brickRoots.map((b) => `${gd.host}:${b}`).join(','),
      'glusterfs.brickforce': 'true', 'glusterfs.pool': 'vstate',
    }, 'node-a', log) as GlusterVolumeBackend;
    await a.init();
  });
  afterAll(async () => {
    await a?.dispose();
    await gd?.stop();
  });

  it('makes one gluster volume per stowage volume, with the layout asked for, and removes its bricks on delete', async () => {
    await a.create(request('mirrored', { backend: { replica: '2' } }));
    expect(await glusterVolumes()).toContain('stowage-mirrored');
    expect(await info('stowage-mirrored')).toMatch(/<typeStr>Replicate<\/typeStr>/);
    expect(await a.volumeStatus('mirrored')).toMatchObject({ glusterVolume: 'stowage-mirrored', glusterStatus: 'Started', glusterType: 'Replicate' });
    const path = await a.attach('mirrored');
    expect(path).toBe(join(rootA, 'glusterfs', 'mnt', 'stowage-mirrored'));
    await realFs.writeFile(join(path, 'twice'), 'on both replicas');
    // Each replica brick holds a full copy.
    for (const root of brickRoots) {
      const [brick] = (await realFs.readdir(root)).filter((d) => d.startsWith('stowage-mirrored-'));
      expect(await realFs.readFile(join(root, brick!, 'twice'), 'utf8')).toBe('on both replicas');
    }
    await a.detach('mirrored');
    // Only the state pool stays mounted.
    expect(await glusterMountsUnder(rootA)).toEqual([join(rootA, 'glusterfs', 'mnt', 'vstate')]);
    await a.remove('mirrored', { retain: false });
    await a.settle();
    expect(await glusterVolumes()).not.toContain('stowage-mirrored');
    for (const root of brickRoots) {
      expect((await realFs.readdir(root)).filter((d) => d.startsWith('stowage-mirrored'))).toEqual([]);
      expect(await realFs.readdir(join(root, '.stowage-deleting'))).toEqual([]);
    }
  });

  it('reads a snapshot through a mount of its own, unmounted after, leaving a container\'s mount alone', async () => {
    await a.create(request('snapped'));
    const path = await a.attach('snapped');
    await realFs.writeFile(join(path, 'data'), 'in use');
    const snapshot = await a.snapshots.createSnapshot('snapped', 'one');
    expect(snapshot).toMatchObject({ name: 'one', volume: 'snapped' });
    // The containers' mount stays, the snapshot's is gone.
    expect(await glusterMountsUnder(rootA)).toEqual([join(rootA, 'glusterfs', 'mnt', 'stowage-snapped'), join(rootA, 'glusterfs', 'mnt', 'vstate')]);
    expect(await realFs.readFile(join(path, 'data'), 'utf8')).toBe('in use');
    await a.detach('snapped');
    // Unmounted, it is mounted for the snapshot only.
    await a.snapshots.createSnapshot('snapped', 'two');
    expect(await glusterMountsUnder(rootA)).toEqual([join(rootA, 'glusterfs', 'mnt', 'vstate')]);
    const repository = join(rootA, 'glusterfs', 'mnt', 'vstate', '.stowage', 'snapshots');
    expect(await realFs.readdir(join(repository, 'snapshots', 'snapped'))).toEqual(['one', 'two']);
    // Its snapshots go with the volume.
    await a.remove('snapped', { retain: false });
    await a.settle();
    // The store deletes objects, and may leave their directories empty.
    const objects = (dir: string) => realFs.readdir(join(repository, dir)).catch(() => [] as string[]);
    expect(await objects('snapshots/snapped')).toEqual([]);
    expect(await objects('backups/snapped')).toEqual([]);
  });

  it('a remove whose gluster volume stop fails keeps the volume, started, with its data and its snapshots', async () => {
    // glusterd really refuses the stop: the faulty runner asks it to stop a volume that does not exist.
    let failStops = true;
    const faulty: CommandRunner = {
      run: (program, args, options) => {
        const stop = args.indexOf('stop');
        const redirected = failStops && args[stop - 1] === 'volume' && args[stop + 1] === 'stowage-doomed'
          ? args.map((arg, i) => (i === stop + 1 ? 'stowage-no-such-volume' : arg)) : args;
        return new ExecaCommandRunner().run(program, redirected, options);
      },
    };
    const rootF = await gd.tempDir('root-f-');
    const f = glusterBackend(gd, rootF, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${brickRoots[0]}`, 'glusterfs.brickforce': 'true', 'glusterfs.pool': 'vstate',
    }, 'node-f', memoryLogger(), faulty) as GlusterVolumeBackend;
    await f.init();
    try {
      await f.create(request('doomed'));
      await realFs.writeFile(join(await f.attach('doomed'), 'data'), 'keep me');
      await f.detach('doomed');
      await f.snapshots!.createSnapshot('doomed', 'before');
      await expect(f.remove('doomed', { retain: false })).rejects.toMatchObject({
        code: ErrorCodes.BACKEND_COMMAND, message: expect.stringMatching(/^stopping gluster volume stowage-doomed of volume doomed failed: /),
      });
      expect((await f.snapshots!.listSnapshots('doomed')).map((s) => s.name)).toEqual(['before']);
      expect(await f.volumeStatus('doomed')).toMatchObject({ glusterStatus: 'Started' });
      expect(await realFs.readFile(join(await f.attach('doomed'), 'data'), 'utf8')).toBe('keep me');
      await f.detach('doomed');
      // With the stop working, the remove takes the snapshots with the volume.
      failStops = false;
      await f.remove('doomed', { retain: false });
      await f.settle();
      expect(await glusterVolumes()).not.toContain('stowage-doomed');
      expect(await f.snapshots!.listSnapshots('doomed')).toEqual([]);
    } finally {
      await f.dispose();
      await unmountUnder(rootF);
    }
  });

  it('a remove that fails before its delete marks no brick for deletion: deleting the volume by hand later keeps the data', async () => {
    let failStops = true;
    const faulty: CommandRunner = {
      run: (program, args, options) => {
        const stop = args.indexOf('stop');
        const redirected = failStops && args[stop - 1] === 'volume' && args[stop + 1] === 'stowage-rescued'
          ? args.map((arg, i) => (i === stop + 1 ? 'stowage-no-such-volume' : arg)) : args;
        return new ExecaCommandRunner().run(program, redirected, options);
      },
    };
    const options = { 'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${brickRoots[0]}`, 'glusterfs.brickforce': 'true', 'glusterfs.pool': 'vstate' };
    const rootF = await gd.tempDir('root-t-');
    const f = glusterBackend(gd, rootF, options, 'node-t', memoryLogger(), faulty) as GlusterVolumeBackend;
    await f.init();
    const tombstones = join(rootF, 'glusterfs', 'mnt', 'vstate', '.stowage', 'glusterfs', 'tombstones');
    const sweepOnce = async () => {
      const fresh = glusterBackend(gd, await gd.tempDir('root-s-'), options, 'node-s') as GlusterVolumeBackend;
      await fresh.init();
      await fresh.settle();
      await fresh.dispose();
    };
    try {
      await f.create(request('rescued'));
      const xml = await info('stowage-rescued');
      const id = /<id>([0-9a-f-]{36})<\/id>/.exec(xml)![1]!;
      const peer = /<hostUuid>([0-9a-f-]{36})<\/hostUuid>/.exec(xml)![1]!;
      const brickPath = join(brickRoots[0]!, (await realFs.readdir(brickRoots[0]!)).find((d) => d.startsWith('stowage-rescued-'))!);
      const mine = async () => (await realFs.readdir(tombstones).catch(() => [] as string[])).filter((file) => file.startsWith(id));
      await expect(f.remove('rescued', { retain: false })).rejects.toMatchObject({ code: ErrorCodes.BACKEND_COMMAND });
      failStops = false;
      expect(await mine()).toEqual([]);
      expect((await f.describe())['glusterfs.bricksawaitingremoval']).toBe('none');
      // Used again after the failed remove.
      await realFs.writeFile(join(await f.attach('rescued'), 'data'), 'still wanted');
      await f.detach('rescued');
      // A remove that crashed after its pending mark: a sweep drops the mark while the volume exists.
      const tombstone = (format: number) => JSON.stringify({
        format, gluster: 'stowage-rescued', volumeId: id, peer, bricks: [{ host: gd.host, path: brickPath, peer }],
        deletedAt: '2020-01-01T00:00:00.000Z', deletedBy: 'node-x',
      });
      await realFs.writeFile(join(tombstones, `${id}.${peer}.pending.json`), tombstone(2));
      await sweepOnce();
      expect(await mine()).toEqual([]);
      // An earlier version marked the bricks before its (failed) stop; an administrator deletes the volume by hand.
      await realFs.writeFile(join(tombstones, `${id}.${peer}.json`), tombstone(1));
      expect((await f.describe())['glusterfs.bricksawaitingremoval']).toBe('none');
      await gd.gluster(['volume', 'stop', 'stowage-rescued', 'force']);
      await gd.gluster(['volume', 'delete', 'stowage-rescued']);
      await sweepOnce();
      expect(await realFs.readFile(join(brickPath, 'data'), 'utf8')).toBe('still wanted');
      expect(await mine()).toEqual([]);
      await realFs.rm(brickPath, { recursive: true, force: true });
    } finally {
      await f.dispose();
      await unmountUnder(rootF);
    }
  });

  it('a start unmounts a snapshot mount a killed daemon left and removes empty mount points of gone volumes, touching nothing else', async () => {
    const options = { 'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${brickRoots[0]}`, 'glusterfs.brickforce': 'true', 'glusterfs.pool': 'vstate' };
    const root = await gd.tempDir('root-l-');
    const mnt = join(root, 'glusterfs', 'mnt');
    const first = glusterBackend(gd, root, options, 'node-l') as GlusterVolumeBackend;
    await first.init();
    await first.create(request('leftover'));
    await first.dispose();
    // What a daemon killed during a snapshot leaves: the snapshot's own mount, and its client.
    const snapshotMount = join(mnt, '.snapshots', 'stowage-leftover');
    await realFs.mkdir(snapshotMount, { recursive: true });
    await execa('mount', ['-t', 'glusterfs', `${gd.host}:/stowage-leftover`, snapshotMount]);
    // Mount points of volumes deleted since (one with stray data in it), and a directory stowage does not name.
    await realFs.mkdir(join(mnt, 'stowage-gone'));
    await realFs.mkdir(join(mnt, 'stowage-gone__with__data'));
    await realFs.writeFile(join(mnt, 'stowage-gone__with__data', 'keep'), 'stray');
    await realFs.mkdir(join(mnt, 'not-ours'));
    const log = memoryLogger();
    const restarted = glusterBackend(gd, root, options, 'node-l', log) as GlusterVolumeBackend;
    await restarted.init();
    try {
      expect(await glusterMountsUnder(root)).toEqual([join(mnt, 'vstate')]);
      expect(await eventually(async () => (await clientPidOf(snapshotMount)) === undefined)).toBe(true);
      expect((await realFs.readdir(join(mnt, '.snapshots'))).sort()).toEqual([]);
      expect((await realFs.readdir(mnt)).sort()).toEqual(['.snapshots', 'not-ours', 'stowage-gone__with__data', 'vstate']);
      expect(await realFs.readFile(join(mnt, 'stowage-gone__with__data', 'keep'), 'utf8')).toBe('stray');
      expect(log.lines.some((l) => /stowage-gone__with__data .* was left in place: it is not empty/.test(l))).toBe(true);
      // A remove takes its volume's mount point with it.
      await restarted.attach('leftover');
      await restarted.detach('leftover');
      await restarted.remove('leftover', { retain: false });
      expect((await realFs.readdir(mnt)).sort()).toEqual(['.snapshots', 'not-ours', 'stowage-gone__with__data', 'vstate']);
    } finally {
      await restarted.dispose();
      await unmountUnder(root);
    }
  });

  it('retain deletes the gluster volume but keeps its bricks, and says where the data is', async () => {
    await a.create(request('kept'));
    await realFs.writeFile(join(await a.attach('kept'), 'data'), 'still here');
    await a.detach('kept');
    const outcome = await a.remove('kept', { retain: true });
    // Two distribute bricks: the file sits on one of them, so the answer names both.
    const bricks = outcome.retainedAt!.split(',');
    expect(bricks).toHaveLength(2);
    const found: string[] = [];
    for (const [i, brick] of bricks.entries()) {
      expect(brick).toMatch(new RegExp(`^${gd.host}:${brickRoots[i]}/stowage-kept-`));
      const file = join(brick.slice(gd.host.length + 1), 'data');
      if (await realFs.readFile(file, 'utf8').catch(() => undefined) === 'still here') found.push(file);
    }
    expect(found).toHaveLength(1);
    expect(await glusterVolumes()).not.toContain('stowage-kept');
    expect(log.lines.some((l) => /its data stays in bricks/.test(l))).toBe(true);
  });

  it('refuses a layout the brick roots cannot hold, creating nothing', async () => {
    const before = await glusterVolumes();
    await expect(a.create(request('threeway', { backend: { replica: '3' } }))).rejects.toMatchObject({
      code: ErrorCodes.INVALID_OPTION, message: expect.stringMatching(/replica 3 needs a multiple of 3 bricks, but glusterfs.bricks lists 2/),
    });
    expect(await glusterVolumes()).toEqual(before);
  });

  it('maps names with "." and "_" to distinct gluster volumes and lists them by their own names', async () => {
    await a.create(request('app.data'));
    await a.create(request('app_ddata'));
    expect(await glusterVolumes()).toEqual(expect.arrayContaining(['stowage-app_ddata', 'stowage-app__ddata']));
    expect((await a.list()).map((v) => v.name)).toEqual(expect.arrayContaining(['app.data', 'app_ddata']));
    expect((await a.get('app.data'))?.name).toBe('app.data');
  });

  it('enforces size with a strict quota on the gluster volume and shows it in Status', async () => {
    await a.create(request('capped', { size: 50 * 1024 * 1024 }));
    expect(await hardLimitOf(gd, 'stowage-capped', '/')).toBe(52428800);
    expect(await quotaTimeoutsOf(gd, 'stowage-capped')).toEqual({ soft: '0', hard: '0' });
    await realFs.writeFile(join(await a.attach('capped'), 'blob'), Buffer.alloc(2 * 1024 * 1024, 1));
    let status: Record<string, string> = {};
    expect(await eventually(async () => {
      status = await a.volumeStatus('capped');
      return status.quotaUsed === '2MiB';
    })).toBe(true);
    expect(status).toMatchObject({ quotaLimit: '50MiB', quotaSource: 'gluster quota list' });
  });

  it('refuses an existing gluster volume it did not make unless asked to adopt it', async () => {
    await gd.createVolume({ name: 'stowage-legacy' });
    await expect(a.create(request('legacy'))).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT, message: expect.stringMatching(/stowage-legacy already exists but stowage did not make it.*adopt it/),
      remedies: [{ action: 'adopt', volume: 'legacy' }],
    });
    expect(await a.get('legacy')).toBeUndefined();
    const adopted = await a.create(request('legacy', { adopt: true }));
    expect(adopted.adopted).toBe(true);
    expect((await a.list()).map((v) => v.name)).toContain('legacy');
    expect(await a.volumeStatus('legacy')).toMatchObject({ adopted: 'true' });
  });

  it('creates the longest name glusterd accepts with these brick roots, quota on, and refuses a longer one up front', async () => {
    const longest = longestGlusterName(brickRoots.map((path) => ({ host: gd.host, path })));
    const name = 'n'.repeat(longest - 'stowage-'.length);
    // A size turns quota on, which writes the longest of gluster's volume files.
    await a.create(request(name, { size: 10 * 1024 * 1024 }));
    expect(await hardLimitOf(gd, `stowage-${name}`, '/')).toBe(10 * 1024 * 1024);
    await a.remove(name, { retain: false });
    const before = await glusterVolumes();
    await expect(a.create(request(`${name}n`))).rejects.toMatchObject({
      code: ErrorCodes.INVALID_NAME, message: expect.stringMatching(new RegExp(`is too long .* gluster accepts at most ${longest} here`)),
    });
    expect(await glusterVolumes()).toEqual(before);
    // One character longer and glusterd's quota never gets the limit to its daemon: the limit is gluster's, not a guess.
    const longer = `stowage-${name}n`;
    const brick = `${brickRoots[0]}/${longer}-20261207T000000Z-abcdef`;
    try {
      expect((await gd.gluster(['volume', 'create', longer, `${gd.host}:${brick}`, 'force'])).exitCode).toBe(0);
      expect((await gd.gluster(['volume', 'start', longer])).exitCode).toBe(0);
      await gd.gluster(['volume', 'quota', longer, 'enable']);
      await gd.gluster(['volume', 'quota', longer, 'limit-usage', '/', '10485760']);
      expect(await hardLimitOf(gd, longer, '/')).toBeUndefined();
    } finally {
      await gd.gluster(['volume', 'stop', longer, 'force']);
      await gd.gluster(['volume', 'delete', longer]);
      await realFs.rm(brick, { recursive: true, force: true });
    }
  });

  it('names the bricks to delete by hand for a gluster volume a create stopped before its record', async () => {
    const brick = `${brickRoots[0]}/stowage-halfmade-20261207T000000Z-abcdef`;
    await gd.gluster(['volume', 'create', 'stowage-halfmade', `${gd.host}:${brick}`, 'force']);
    await expect(a.create(request('halfmade'))).rejects.toMatchObject({
      code: ErrorCodes.DATA_CONFLICT,
      message: expect.stringMatching(new RegExp(`without stowage's record: an earlier create of volume halfmade stopped half-way.*delete the brick directories ${gd.host}:${brick} `)),
      remedies: [{ action: 'adopt', volume: 'halfmade' }],
    });
    await gd.gluster(['volume', 'delete', 'stowage-halfmade']);
    await realFs.rm(brick, { recursive: true, force: true });
  });

  it('a second node sees the same volumes (glusterd is the registry) and mounts them itself', async () => {
    await a.create(request('seen'));
    await realFs.writeFile(join(await a.attach('seen'), 'hello'), 'from a');
    const rootB = await gd.tempDir('root-b-');
    const b = glusterBackend(gd, rootB, {
      'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${brickRoots[0]}`, 'glusterfs.brickforce': 'true',
      'glusterfs.pool': 'vstate',
    }, 'node-b');
    await b.init();
    try {
      expect((await b.get('seen'))?.createdBy).toBe('node-a');
      const onB = await b.attach('seen');
      expect(onB.startsWith(rootB)).toBe(true);
      expect(await realFs.readFile(join(onB, 'hello'), 'utf8')).toBe('from a');
    } finally {
      await unmountUnder(rootB);
    }
  });

  it('explains a brick on the root filesystem when glusterfs.brickforce is off', async () => {
    const root = await gd.tempDir('root-c-');
    const strict = glusterBackend(gd, root, { 'glusterfs.mode': 'volume', 'glusterfs.bricks': `${gd.host}:${brickRoots[0]}`, 'glusterfs.pool': 'vstate' });
    await strict.init();
    await expect(strict.create(request('rootfs'))).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_COMMAND, message: expect.stringMatching(/creating gluster volume stowage-rootfs for volume rootfs failed: .*glusterfs.brickforce=true/),
    });
    expect(await glusterVolumes()).not.toContain('stowage-rootfs');
  });
});
