/**
 * The devicemapper backend on the host, over a simulated kernel: the conformance suite, and the
 * exact command sequences (which dmsetup calls and messages, in which order). The same backend
 * on a real kernel: test/backends/devicemapper-vm.test.ts.
 */
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { describeBackendConformance, describeSnapshotConformance, type ConformanceHarness } from '../../src/testing/index.js';
import { request, setupFakeDm } from '../helpers/fake-dm-backend.js';

async function simulated(): Promise<ConformanceHarness> {
  const { fs, make } = await setupFakeDm();
  const backend = make();
  await backend.init();
  return {
    backend, fs, dataRoot: '/state/devicemapper',
    // Another pool's name: pool "pool" is active, and an active pool is adopted whatever its devices.
    unavailable: async () => ({
      backend: make({ 'dm.datadev': '/pool/missing.img', 'dm.thinpoolname': 'other' }, '/other'), missing: '/pool/missing.img',
    }),
  };
}

describeBackendConformance('devicemapper on a simulated kernel', simulated);
describeSnapshotConformance('devicemapper on a simulated kernel', simulated);

const MOUNTS = '/state/devicemapper/mounts';

describe('devicemapper command sequences', () => {
  it('creates a pool on two files: loop devices, a blank metadata device nothing holds, error_if_no_space', async () => {
    const { kernel, make, readState, fs } = await setupFakeDm();
    await make().init();
    expect(kernel.lines()).toEqual([
      'dmsetup table pool',
      'losetup --list --json --output NAME,BACK-FILE',
      'losetup --find --show /pool/data.img',
      'losetup --list --json --output NAME,BACK-FILE',
      'losetup --find --show /pool/meta.img',
      'blockdev --getsz /dev/loop0',
      'dmsetup create pool --table 0 2097152 thin-pool /dev/loop1 /dev/loop0 128 1638 1 error_if_no_space',
      'dmsetup status pool',
    ]);
    // Nothing holds the devices, and the metadata device is blank: stowage writes nothing to it, the kernel formats it.
    expect(await fs.readFile('/dev/loop1', 'utf8')).toBe('THINMETA');
    expect(await readState()).toMatchObject({
      format: 1, writtenBy: 'node-a', transactionId: 0, foreignIds: [], volumes: {}, retained: [],
      pool: { name: 'pool', dataDevice: '/pool/data.img', metadataDevice: '/pool/meta.img', blockSectors: 128, createdByStowage: true },
    });
  });

  it('create: health check, create_thin, set_transaction_id, activation, mkfs, deactivation', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    kernel.calls.length = 0;
    await backend.create(request('vol', { size: 8 * 2 ** 20 }));
    expect(kernel.lines()).toEqual([
      'dmsetup status pool',
      'dmsetup message pool 0 set_transaction_id 0 101',
      'dmsetup message pool 0 create_thin 0',
      'dmsetup message pool 0 set_transaction_id 101 102',
      'dmsetup create pool-t0 --table 0 16384 thin /dev/mapper/pool 0',
      'mkfs.ext4 -q -E lazy_itable_init=1,lazy_journal_init=1,nodiscard /dev/mapper/pool-t0',
      'dmsetup remove pool-t0',
    ]);
    // Without udev: --noudevsync on device changes, and libdevmapper makes the nodes itself.
    const dm = kernel.calls.filter((c) => c.program === 'dmsetup');
    expect(dm.filter((c) => c.args.includes('--noudevsync')).map((c) => c.args[0])).toEqual(['create', 'remove']);
    expect(dm.every((c) => c.env?.DM_DISABLE_UDEV === '1')).toBe(true);
    expect(await backend.volumeStatus('vol')).toMatchObject({ thinId: '0', deviceSize: '8MiB', filesystem: 'ext4', poolHealth: 'healthy' });
  });

  it('with udev running, dmsetup waits for it (no --noudevsync, no DM_DISABLE_UDEV)', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make({}, '/state', { udev: true });
    await backend.init();
    await backend.create(request('vol'));
    const dm = kernel.calls.filter((c) => c.program === 'dmsetup');
    expect(dm.some((c) => c.args.includes('--noudevsync') || c.env !== undefined)).toBe(false);
  });

  it('attach activates and mounts under the root; detach unmounts and deactivates; remove deletes the id', async () => {
    const { kernel, make, fs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    kernel.calls.length = 0;
    expect(await backend.attach('vol')).toBe(`${MOUNTS}/vol`);
    await backend.detach('vol');
    await backend.remove('vol', { retain: false });
    expect(kernel.lines()).toEqual([
      'dmsetup create pool-t0 --table 0 131072 thin /dev/mapper/pool 0',
      `mount -t ext4 -o rw,noinit_itable /dev/mapper/pool-t0 ${MOUNTS}/vol`,
      `umount ${MOUNTS}/vol`,
      'dmsetup remove pool-t0',
      'dmsetup remove pool-t0',
      'dmsetup message pool 0 set_transaction_id 102 103',
      'dmsetup message pool 0 delete 0',
      'dmsetup message pool 0 set_transaction_id 103 104',
    ]);
    expect(kernel.pool('pool').meta.ids.size).toBe(0);
    await expect(fs.stat(`${MOUNTS}/vol`)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('skips ids someone else holds ("File exists"), for good, and never reuses its own freed ids', async () => {
    const { kernel, make, readState } = await setupFakeDm();
    const backend = make();
    await backend.init();
    kernel.pool('pool').meta.ids.add(0).add(1);
    kernel.calls.length = 0;
    await backend.create(request('first'));
    expect(kernel.lines().filter((l) => l.includes('create_thin'))).toEqual([
      'dmsetup message pool 0 create_thin 0', 'dmsetup message pool 0 create_thin 1', 'dmsetup message pool 0 create_thin 2',
    ]);
    expect((await backend.volumeStatus('first')).thinId).toBe('2');
    expect((await readState()).foreignIds).toEqual([0, 1]);
    await backend.remove('first', { retain: false });
    const restarted = make();
    await restarted.init();
    kernel.calls.length = 0;
    await restarted.create(request('second'));
    expect(kernel.lines().filter((l) => l.includes('create_thin'))).toEqual(['dmsetup message pool 0 create_thin 3']);
    expect((await readState()).nextThinId).toBe(4);
  });

  it('retries remove while the device is busy, and reports one that stays busy without deleting anything', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    await backend.attach('vol');
    kernel.busyRemoves.set('pool-t0', 3);
    kernel.calls.length = 0;
    await backend.remove('vol', { retain: false });
    expect(kernel.lines().filter((l) => l.startsWith('dmsetup remove'))).toHaveLength(4);
    expect(kernel.lines()).toContain('dmsetup message pool 0 delete 0');

    await backend.create(request('stuck'));
    await backend.attach('stuck');
    kernel.busyRemoves.set('pool-t1', 1000);
    kernel.calls.length = 0;
    await expect(backend.remove('stuck', { retain: false })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/pool-t1 of volume stuck stays open/),
    });
    expect(kernel.lines().filter((l) => l.startsWith('dmsetup remove'))).toHaveLength(10);
    expect(kernel.lines().some((l) => l.includes('delete'))).toBe(false);
    expect(await backend.get('stuck')).toBeDefined();
  });

  it('refuses to remove a volume whose mount is busy', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    const path = await backend.attach('vol');
    kernel.busyUmounts.add(path);
    await expect(backend.remove('vol', { retain: false })).rejects.toMatchObject({
      code: ErrorCodes.VOLUME_IN_USE, message: expect.stringMatching(/cannot be unmounted/),
    });
    expect(kernel.lines().some((l) => l.includes('delete'))).toBe(false);
  });

  it('refuses to create when the pool is nearly full, out of space, needs a check or failed, before any message', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    const pool = kernel.pool('pool');
    const cases: Array<[() => void, RegExp]> = [
      [() => { pool.usedData = 14746; }, /nearly full \(data 900MiB of 1GiB \(90\.0%\) used.*less than 10%/],
      [() => { pool.mode = 'out_of_data_space'; }, /out of data space/],
      [() => { pool.mode = 'rw'; pool.needsCheck = true; }, /needs_check.*thin_check/],
      [() => { pool.needsCheck = false; pool.failed = true; }, /has failed/],
    ];
    for (const [breakIt, message] of cases) {
      breakIt();
      await expect(backend.create(request('vol'))).rejects.toMatchObject({ code: ErrorCodes.STORAGE_FULL, message });
    }
    expect(kernel.lines().some((l) => l.includes('create_thin'))).toBe(false);
    expect(await backend.list()).toEqual([]);
    expect(await backend.describe()).toMatchObject({ poolHealth: 'failed', poolProblem: expect.stringMatching(/has failed/) });
  });

  it('rolls a create back when mkfs fails', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    kernel.inject('mkfs.ext4', /./, { stderr: 'mkfs.ext4: Input/output error while writing out and closing file system' });
    await expect(backend.create(request('vol'))).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_COMMAND, message: expect.stringMatching(/making the ext4 filesystem of volume vol.*Input\/output error/),
    });
    expect(await backend.list()).toEqual([]);
    expect(kernel.pool('pool').meta.ids.size).toBe(0);
    await backend.create(request('vol'));
    expect((await backend.volumeStatus('vol')).thinId).toBe('1');
  });

  it('follows a transaction id someone else moved', async () => {
    const { kernel, make, logs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    kernel.pool('pool').meta.tx = 41;
    await backend.create(request('vol'));
    expect(kernel.lines().filter((l) => l.includes('set_transaction_id'))).toEqual([
      'dmsetup message pool 0 set_transaction_id 0 101', 'dmsetup message pool 0 set_transaction_id 41 101',
      'dmsetup message pool 0 set_transaction_id 101 102',
    ]);
    expect((await backend.describe()).transactionId).toBe('102');
    expect(logs.join('\n')).toMatch(/someone else changes it too/);
  });

  it('keeps retained data mounted read-only outside the namespace; the name starts empty again', async () => {
    const { kernel, make, fs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    await fs.writeFile(join(await backend.attach('vol'), 'keep'), 'me');
    await backend.detach('vol');
    const { retainedAt } = await backend.remove('vol', { retain: true });
    expect(retainedAt).toMatch(/^\/state\/devicemapper\/removed\/vol@\d{8}T\d{6}Z-[0-9a-f]{6}$/);
    expect(kernel.lines()).toContain(`mount -t ext4 -o ro /dev/mapper/pool-t0 ${retainedAt}`);
    expect(await fs.readFile(join(retainedAt!, 'keep'), 'utf8')).toBe('me');
    await backend.create(request('vol'));
    expect((await backend.volumeStatus('vol')).thinId).toBe('1');
    expect(await fs.readdir(await backend.attach('vol'))).toEqual([]);
    expect((await backend.describe()).retainedVolumes).toBe('1');
  });
});
