/**
 * devicemapper openSnapshot over the simulated kernel: the exact commands (a read-only
 * activation, a read-only mount without journal replay), readers sharing one view, refusals
 * while a snapshot is open, name checks, and leftovers of a crashed run cleaned at start. The
 * same on a real kernel (consistency of a snapshot of a mounted volume, backups from a view):
 * test/vm/guest/snapshot-views.guest.ts.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { request, setupFakeDm } from '../helpers/fake-dm-backend.js';

const VIEWS = '/state/devicemapper/snapshots';

async function withSnapshot(extra: Record<string, string> = {}) {
  const setup = await setupFakeDm();
  const backend = setup.make(extra);
  await backend.init();
  await backend.create(request('vol'));
  const live = await backend.attach('vol');
  await setup.fs.writeFile(join(live, 'f'), 'at snapshot time');
  await backend.snapshots.createSnapshot('vol', 'snap');
  await setup.fs.writeFile(join(live, 'f'), 'later');
  setup.kernel.calls.length = 0;
  return { ...setup, backend, live };
}

describe('devicemapper openSnapshot (simulated kernel)', () => {
  it('activates the snapshot read-only, mounts it ro,noload under snapshots/VOLUME/SNAPSHOT; readers share it, the last release unmounts', async () => {
    const { kernel, backend, fs } = await withSnapshot();
    const first = await backend.snapshots.openSnapshot('vol', 'snap');
    const second = await backend.snapshots.openSnapshot('vol', 'snap');
    expect(first).toMatchObject({ kind: 'tree', path: `${VIEWS}/vol/snap` });
    expect(second).toMatchObject({ kind: 'tree', path: `${VIEWS}/vol/snap` });
    if (first.kind !== 'tree') throw new Error('unreachable');
    expect(await fs.readFile(join(first.path, 'f'), 'utf8')).toBe('at snapshot time');
    expect(kernel.lines()).toEqual([
      'dmsetup create pool-t1 --table 0 131072 thin /dev/mapper/pool 1 --readonly',
      `mount -t ext4 -o ro,noload /dev/mapper/pool-t1 ${VIEWS}/vol/snap`,
    ]);
    kernel.calls.length = 0;
    await first.release();
    await first.release();
    // The second reader still reads: a release is counted once, however often it is called.
    expect(kernel.lines()).toEqual([]);
    expect(await fs.readFile(join(first.path, 'f'), 'utf8')).toBe('at snapshot time');
    await second.release();
    expect(kernel.lines()).toEqual([`umount ${VIEWS}/vol/snap`, 'dmsetup remove pool-t1']);
    await expect(fs.stat(`${VIEWS}/vol`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('mounts an xfs snapshot ro,norecovery,nouuid (the origin, mounted, has the same UUID)', async () => {
    const { kernel, backend } = await withSnapshot({ 'dm.fs': 'xfs', 'dm.defaultvolumesize': '300M' });
    const source = await backend.snapshots.openSnapshot('vol', 'snap');
    expect(kernel.lines('mount')).toEqual([`mount -t xfs -o ro,norecovery,nouuid /dev/mapper/pool-t1 ${VIEWS}/vol/snap`]);
    await source.release();
  });

  it('refuses to delete an open snapshot or remove its volume, changing nothing; both work after the release', async () => {
    const { kernel, backend } = await withSnapshot();
    const source = await backend.snapshots.openSnapshot('vol', 'snap');
    kernel.calls.length = 0;
    await expect(backend.snapshots.deleteSnapshot('vol', 'snap')).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/cannot delete snapshot snap of volume vol: snapshot snap of volume vol is open for reading/),
    });
    await backend.detach('vol');
    kernel.calls.length = 0;
    await expect(backend.remove('vol', { retain: false })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/cannot remove volume vol: snapshot snap/),
    });
    await expect(backend.remove('vol', { retain: true })).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    expect(kernel.lines()).toEqual([]);
    expect((await backend.snapshots.listSnapshots('vol')).map((s) => s.name)).toEqual(['snap']);
    await source.release();
    await backend.snapshots.deleteSnapshot('vol', 'snap');
    await backend.remove('vol', { retain: false });
    expect(kernel.pool('pool').meta.ids.size).toBe(0);
  });

  it('a release whose unmount is busy fails; the view stays and a later delete unmounts it first', async () => {
    const { kernel, backend } = await withSnapshot();
    const source = await backend.snapshots.openSnapshot('vol', 'snap');
    kernel.busyUmounts.add(`${VIEWS}/vol/snap`);
    await expect(source.release()).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/snapshot snap of vol cannot be unmounted/) });
    await expect(backend.snapshots.deleteSnapshot('vol', 'snap')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_IN_USE });
    expect(kernel.pool('pool').meta.ids.has(1)).toBe(true);
    kernel.busyUmounts.clear();
    kernel.calls.length = 0;
    await backend.snapshots.deleteSnapshot('vol', 'snap');
    expect(kernel.lines().slice(0, 2)).toEqual([`umount ${VIEWS}/vol/snap`, 'dmsetup remove pool-t1']);
    expect(kernel.pool('pool').meta.ids.has(1)).toBe(false);
  });

  it('refuses bad names and unknown snapshots before any command', async () => {
    const { kernel, backend } = await withSnapshot();
    await expect(backend.snapshots.openSnapshot('../vol', 'snap')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
    await expect(backend.snapshots.openSnapshot('vol', 'a/b')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME, message: expect.stringMatching(/^invalid snapshot name "a\/b"/) });
    await expect(backend.snapshots.openSnapshot('vol', '..')).rejects.toMatchObject({ code: ErrorCodes.INVALID_NAME });
    await expect(backend.snapshots.openSnapshot('vol', 'other')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
    await expect(backend.snapshots.openSnapshot('ghost', 'snap')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    expect(kernel.lines()).toEqual([]);
  });

  it('at start, a view and an active snapshot device left by a crashed run are unmounted and deactivated', async () => {
    const { kernel, backend, make, fs, logs } = await withSnapshot();
    await backend.snapshots.createSnapshot('vol', 'other');
    // A run that died with a backup reading `snap` and `other` activated (not yet mounted).
    await backend.snapshots.openSnapshot('vol', 'snap');
    await backend.snapshots.activateSnapshot('vol', 'other');
    kernel.calls.length = 0;
    const restarted = make();
    await restarted.init();
    const lines = kernel.lines();
    expect(lines).toContain(`umount ${VIEWS}/vol/snap`);
    expect(lines).toContain('dmsetup remove pool-t1');
    expect(lines).toContain('dmsetup remove pool-t2');
    expect(lines.filter((l) => l.startsWith('umount'))).toEqual([`umount ${VIEWS}/vol/snap`]);
    expect([...kernel.devices.keys()].sort()).toEqual(['pool', 'pool-t0']);
    await expect(fs.stat(`${VIEWS}/vol`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(logs.filter((l) => l.startsWith('warn')).join('\n')).toMatch(/unmounted .*snapshots\/vol\/snap.*left by an earlier run[\s\S]*deactivated snapshot other of vol/);
    // The volume stayed mounted, the snapshots stay, and one opens again.
    expect(await fs.readFile(join(restarted.mountPath('vol'), 'f'), 'utf8')).toBe('later');
    const again = await restarted.snapshots.openSnapshot('vol', 'snap');
    if (again.kind !== 'tree') throw new Error('unreachable');
    expect(await fs.readFile(join(again.path, 'f'), 'utf8')).toBe('at snapshot time');
    await again.release();
  });

  it('at start, a leftover view directory holding files is left alone and reported', async () => {
    const { backend, make, fs, logs } = await withSnapshot();
    await backend.snapshots.openSnapshot('vol', 'snap');
    await fs.mkdir(`${VIEWS}/stray/dir`, { recursive: true });
    await fs.writeFile(`${VIEWS}/stray/dir/file`, 'not ours to delete');
    await make().init();
    expect(await fs.readFile(`${VIEWS}/stray/dir/file`, 'utf8')).toBe('not ours to delete');
    await expect(fs.stat(`${VIEWS}/vol`)).rejects.toMatchObject({ code: 'ENOENT' });
    expect(logs.join('\n')).toMatch(/snapshots\/stray\/dir, where snapshot views are mounted, holds files/);
  });
});
