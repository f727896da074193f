/**
 * A backend never destroys or exposes what it cannot prove is its own, on a real kernel: a pool
 * held while another daemon starts, two daemons on one pool, a restored or copied state file, a
 * zeroed or replaced metadata device, retained snapshots, and a look-alike device of another pool.
 */
import { copyFile, cp, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { execa } from 'execa';
import { afterEach, describe, expect, it } from 'vitest';
import type { CreateRequest } from '../../../src/core/backend.js';
import { ExecaCommandRunner, type CommandRunner } from '../../../src/core/command-runner.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
import {
  destroyPool, firstBlock, makeBackend, makePoolFiles, poolDevices, sh, teardownPool, type PoolFixture,
} from './dm-harness.js';
import { createRequest } from '../../../src/core/create-request.js';

const req = (name: string): CreateRequest => createRequest(name, {}, { createdAt: new Date().toISOString(), createdBy: 'vm-node' });

const fixtures: PoolFixture[] = [];
async function pool(): Promise<PoolFixture> {
  const fx = await makePoolFiles();
  fixtures.push(fx);
  return fx;
}
afterEach(async () => {
  for (const fx of fixtures.splice(0)) await destroyPool(fx);
});

const statePath = (fx: PoolFixture, root = fx.root) => join(root, 'devicemapper', `${fx.poolName}.json`);
const thinIdOf = async (backend: ReturnType<typeof makeBackend>, name: string) => Number((await backend.volumeStatus(name)).thinId);

/** A runner whose `create_thin` never returns: the daemon dies with the change pending. */
function dyingAtCreate(): CommandRunner {
  const real = new ExecaCommandRunner();
  return {
    run: (program, args, options) => (program === 'dmsetup' && args.some((a) => a.startsWith('create_thin'))
      ? new Promise(() => undefined) : real.run(program, args, options)),
  };
}

async function until(check: () => Promise<boolean>, what: string): Promise<void> {
  for (let i = 0; i < 200; i += 1) {
    if (await check()) return;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error(`timed out waiting for ${what}`);
}

describe('devicemapper ownership on a real kernel', () => {
  it('a pool held by another name: a second daemon on the same files is refused, naming the holder; the superblock is untouched', async () => {
    const fx = await pool();
    const owner = makeBackend(fx);
    await owner.init();
    await owner.create(req('precious'));
    await writeFile(join(await owner.attach('precious'), 'data'), 'owner data');
    await owner.detach('precious');
    const before = await firstBlock(fx.meta);
    expect(before.equals(Buffer.alloc(4096))).toBe(false);

    // The daemon restarted with another dm.thinpoolname (no state of that name), and a second
    // daemon with another root and pool name: both reach the loop device the live pool holds.
    for (const root of [fx.root, join(fx.dir, 'second-root')]) {
      const other = makeBackend({ ...fx, root }, { 'dm.thinpoolname': `${fx.poolName}x` });
      await expect.soft(other.init()).rejects.toMatchObject({
        code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining(`in use by device-mapper device ${fx.poolName}`),
      });
      expect((await firstBlock(fx.meta)).equals(before)).toBe(true);
    }
    await owner.dispose();
    await teardownPool(fx);
    const again = makeBackend(fx);
    await again.init();
    expect(await readFile(join(await again.attach('precious'), 'data'), 'utf8')).toBe('owner data');
  });

  it('two daemons on one pool: a create pending when its daemon died never deletes the id the other daemon took', async () => {
    const fx = await pool();
    const owner = makeBackend(fx);
    await owner.init();
    const { 'dm.datadev': _d, 'dm.metadatadev': _m, ...byName } = fx.options;
    const sharer = { ...fx, root: join(fx.dir, 'sharer-root'), options: byName };
    const doomed = makeBackend(sharer, {}, memoryLogger(), dyingAtCreate());
    await doomed.init();
    void doomed.create(req('never-made')).catch(() => undefined);
    await until(async () => (await readFile(statePath(fx, sharer.root), 'utf8')).includes('"pending"'), 'the pending create');

    await owner.create(req('owned'));
    const ownedId = await thinIdOf(owner, 'owned');
    await writeFile(join(await owner.attach('owned'), 'data'), 'belongs to the owner');
    await owner.detach('owned');

    const log = memoryLogger();
    const restarted = makeBackend(sharer, {}, log);
    await restarted.init();
    expect((await poolDevices(fx)).has(ownedId)).toBe(true);
    expect(await readFile(join(await owner.attach('owned'), 'data'), 'utf8')).toBe('belongs to the owner');
    expect(restarted.pool.state.pending).toBeUndefined();
    await owner.detach('owned');
    // The restarted daemon's next volume takes an id nobody holds.
    await restarted.create(req('sharer-vol'));
    expect(await thinIdOf(restarted, 'sharer-vol')).not.toBe(ownedId);
  });

  it('a restored state file is refused: it neither mounts nor deletes the volume that took its place, and ids are never reused', async () => {
    const fx = await pool();
    const first = makeBackend(fx);
    await first.init();
    await first.create(req('a'));
    const aId = await thinIdOf(first, 'a');
    await copyFile(statePath(fx), join(fx.dir, 'state-backup.json'));
    const copiedRoot = join(fx.dir, 'copied-root');
    await cp(join(fx.root, 'devicemapper'), join(copiedRoot, 'devicemapper'), { recursive: true });
    await first.remove('a', { retain: false });
    await first.create(req('c'));
    const cId = await thinIdOf(first, 'c');
    expect(cId).not.toBe(aId);
    await writeFile(join(await first.attach('c'), 'data'), 'c data');
    await first.detach('c');
    await first.dispose();
    const liveState = await readFile(statePath(fx), 'utf8');

    // Restored backup in place, and a copied root run as a second daemon on the same pool.
    await copyFile(join(fx.dir, 'state-backup.json'), statePath(fx));
    for (const root of [fx.root, copiedRoot]) {
      await expect(makeBackend({ ...fx, root }).init()).rejects.toMatchObject({
        code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/volume a .*thin id \d+/),
      });
    }
    // Someone else takes a's old id: the stale state now names a device that is not a's.
    if (!(await poolDevices(fx)).has(aId)) await sh('dmsetup', ['message', fx.poolName, '0', `create_thin ${aId}`]);
    const devicesBefore = await poolDevices(fx);
    await expect(makeBackend(fx).init()).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/volume a .*created under transaction/),
    });
    expect(await poolDevices(fx)).toEqual(devicesBefore);
    expect(devicesBefore.has(cId)).toBe(true);

    await writeFile(statePath(fx), liveState);
    const live = makeBackend(fx);
    await live.init();
    expect(await readFile(join(await live.attach('c'), 'data'), 'utf8')).toBe('c data');
  });

  it('with saved state, a zeroed or replaced metadata device stops the daemon instead of becoming a fresh pool', async () => {
    const fx = await pool();
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(req('kept'));
    await writeFile(join(await backend.attach('kept'), 'data'), 'kept data');
    await backend.dispose();
    await teardownPool(fx);
    const original = await readFile(fx.meta);

    await execa('dd', ['if=/dev/zero', `of=${fx.meta}`, 'bs=4096', 'count=1', 'conv=notrunc', 'status=none']);
    await expect(makeBackend(fx).init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/holds no thin-pool metadata.*state/),
    });
    expect((await firstBlock(fx.meta)).equals(Buffer.alloc(4096))).toBe(true);
    expect((await execa('dmsetup', ['status', fx.poolName], { reject: false })).exitCode).not.toBe(0);

    // Metadata of another pool in its place.
    const other = await pool();
    const stranger = makeBackend(other);
    await stranger.init();
    await stranger.create(req('strange'));
    await stranger.dispose();
    await teardownPool(other);
    await copyFile(other.meta, fx.meta);
    await teardownPool(fx);
    await expect(makeBackend(fx).init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/does not hold the pool/),
    });
    expect((await execa('dmsetup', ['status', fx.poolName], { reject: false })).exitCode).not.toBe(0);

    await writeFile(fx.meta, original);
    await teardownPool(fx);
    const back = makeBackend(fx);
    await back.init();
    expect(await readFile(join(back.mountPath('kept'), 'data'), 'utf8')).toBe('kept data');
  });

  it('snapshots of retained data whose origin was discarded by hand stay listed and mounted, never lost', async () => {
    const fx = await pool();
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(req('old'));
    await writeFile(join(await backend.attach('old'), 'data'), 'in the snapshot');
    await backend.detach('old');
    await backend.snapshots.createSnapshot('old', 'monday');
    const snapId = backend.pool.state.volumes.old!.snapshots[0]!.thinId;
    const { retainedAt } = await backend.remove('old', { retain: true });
    const retained = backend.pool.state.retained[0]!;
    // The README's discard recipe for retained data.
    await execa('umount', [retainedAt!]);
    await sh('dmsetup', ['remove', '--noudevsync', `${fx.poolName}-t${retained.thinId}`]);
    await sh('dmsetup', ['message', fx.poolName, '0', `delete ${retained.thinId}`]);
    await backend.dispose();

    const again = makeBackend(fx);
    await again.init();
    const kept = again.pool.state.retained.find((r) => r.thinId === snapId);
    expect(kept?.name).toBe('old@monday');
    expect((await poolDevices(fx)).has(snapId)).toBe(true);
    expect(await readFile(join(kept!.path, 'data'), 'utf8')).toBe('in the snapshot');
    expect((await again.describe())[`retained:${basename(kept!.path)}`]).toContain(`thin id ${snapId}`);
  });

  it('refuses an active device of its name that maps another pool', async () => {
    const fx = await pool();
    const backend = makeBackend(fx);
    await backend.init();
    await backend.create(req('mine'));
    const id = await thinIdOf(backend, 'mine');
    const other = await pool();
    const foreign = makeBackend(other);
    await foreign.init();
    await foreign.create(req('theirs'));
    await writeFile(join(await foreign.attach('theirs'), 'secret'), 'other pool');
    await foreign.detach('theirs');
    const theirId = await thinIdOf(foreign, 'theirs');
    const sectors = backend.pool.state.volumes.mine!.sectors;
    await sh('dmsetup', ['create', '--noudevsync', `${fx.poolName}-t${id}`, '--table', `0 ${sectors} thin /dev/mapper/${other.poolName} ${theirId}`]);
    await expect(backend.attach('mine')).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/maps .*not/),
    });
  });
});
