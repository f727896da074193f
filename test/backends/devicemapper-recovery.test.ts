/**
 * The devicemapper backend on a simulated kernel: restarts and reboots, crash recovery, adopted
 * pools, snapshots and thin_delta, option validation.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { CommandError } from '../../src/core/command-runner.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { parseDevicemapperOptions } from '../../src/backends/devicemapper/dm-options.js';
import { request, setupFakeDm } from '../helpers/fake-dm-backend.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dm');

describe('devicemapper restarts and reboots', () => {
  it('after a reboot re-creates the pool without wiping it, re-activates and re-mounts what was mounted', async () => {
    const { kernel, make, fs } = await setupFakeDm();
    const first = make();
    await first.init();
    await first.create(request('mounted'));
    await first.create(request('idle'));
    await fs.writeFile(join(await first.attach('mounted'), 'data'), 'survives');
    await kernel.reboot();
    kernel.calls.length = 0;
    const second = make();
    await second.init();
    const lines = kernel.lines();
    // With saved state the metadata device is checked to hold that pool before it is activated.
    const create = lines.indexOf('dmsetup create pool --table 0 2097152 thin-pool /dev/loop1 /dev/loop0 128 1638 1 error_if_no_space');
    expect(create).toBeGreaterThan(lines.indexOf('thin_dump --skip-mappings /dev/loop1'));
    expect(lines.indexOf('thin_dump --skip-mappings /dev/loop1')).toBeGreaterThan(lines.indexOf('thin_check --skip-mappings /dev/loop1'));
    expect(lines.indexOf('thin_check --skip-mappings /dev/loop1')).toBeGreaterThan(-1);
    expect(lines.filter((l) => l.startsWith('mount'))).toEqual([
      'mount -t ext4 -o rw,noinit_itable /dev/mapper/pool-t0 /state/devicemapper/mounts/mounted',
    ]);
    expect(await fs.readFile('/state/devicemapper/mounts/mounted/data', 'utf8')).toBe('survives');
    expect((await second.list()).map((v) => v.name)).toEqual(['idle', 'mounted']);
    expect((await second.describe()).transactionId).toBe('104');
  });

  it('a plain restart adopts the active pool, checks the state against its metadata and re-checks the mounts', async () => {
    const { kernel, make } = await setupFakeDm();
    const first = make();
    await first.init();
    await first.create(request('vol'));
    await first.attach('vol');
    await first.dispose();
    kernel.calls.length = 0;
    await make().init();
    expect(kernel.lines()).toEqual([
      'dmsetup table pool',
      'dmsetup status pool',
      'dmsetup table pool',
      'dmsetup message pool 0 reserve_metadata_snap',
      'thin_dump --skip-mappings -m /dev/loop1',
      'dmsetup message pool 0 release_metadata_snap',
      'dmsetup create pool-t0 --table 0 131072 thin /dev/mapper/pool 0',
      'dmsetup table pool-t0',
      'dmsetup info -c --noheadings -o major,minor pool',
    ]);
  });

  it('refuses a metadata device holding pool metadata it has no state for, and never wipes it', async () => {
    const { kernel, make } = await setupFakeDm();
    await make().init();
    await kernel.reboot();
    await expect(make({}, '/elsewhere').init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/already holds thin-pool metadata.*zero its first 4 KiB yourself/),
    });
    expect(kernel.lines().filter((l) => l.startsWith('dmsetup create pool '))).toHaveLength(1);
  });

  it('needs the devices when the pool is not active, and refuses a different block size', async () => {
    const { kernel, make } = await setupFakeDm();
    await expect(make({ 'dm.datadev': '', 'dm.metadatadev': '' }).init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/set dm.datadev and dm.metadatadev/),
    });
    await make().init();
    await kernel.reboot();
    await expect(make({ 'dm.thinpoolblocksize': '256' }).init()).rejects.toMatchObject({ code: ErrorCodes.INVALID_OPTION });
  });

  it('says what is missing when the kernel has no device-mapper or a tool is not installed', async () => {
    const { kernel, make } = await setupFakeDm();
    kernel.inject('dmsetup', /table pool/, { stderr: readFileSync(join(FIXTURES, 'err-no-kernel-dm.txt'), 'utf8') });
    await expect(make().init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/device-mapper is not available in this kernel.*modprobe dm_thin_pool/),
    });
    // thin_check runs when a pool with saved state is activated again.
    await make().init();
    await kernel.reboot();
    const run = kernel.run.bind(kernel);
    kernel.run = async (program, args, options) => {
      if (program === 'thin_check') {
        throw new CommandError({ program, args, reason: 'spawn', stdout: '', stderr: '' }, 'cannot run thin_check: spawn thin_check ENOENT');
      }
      return run(program, args, options);
    };
    await expect(make().init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/needs thin_check: install dmsetup, thin-provisioning-tools/),
    });
  });

  it('rejects a state file that is not its own format', async () => {
    const { make, writeState } = await setupFakeDm();
    await writeState({ format: 7 });
    await expect(make().init()).rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT });
  });
});

describe('devicemapper crash recovery', () => {
  it('rolls back an interrupted create only when the pool shows the device was made under its claim', async () => {
    const { kernel, make, readState, writeState, logs } = await setupFakeDm();
    await make().init();
    const state = await readState();
    const meta = kernel.pool('pool').meta;
    // Crashed after create_thin under claim 555: the pool shows device 0 made under 555.
    meta.tx = 555;
    meta.ids.add(0);
    meta.createdIn.set(0, 555);
    await writeState({ ...state, pending: { op: 'create', thinId: 0, claimTx: 555, doneTx: 556 } });
    kernel.calls.length = 0;
    await make().init();
    expect(kernel.lines()).toContain('dmsetup message pool 0 delete 0');
    expect(meta.ids.size).toBe(0);
    expect((await readState()).pending).toBeUndefined();

    // Crashed before create_thin; someone else then made id 1 under their own claim: left alone.
    meta.ids.add(1);
    meta.createdIn.set(1, 777);
    meta.tx = 778;
    await writeState({ ...(await readState()), pending: { op: 'create', thinId: 1, claimTx: 600, doneTx: 601 } });
    kernel.calls.length = 0;
    await make().init();
    expect(kernel.lines().some((l) => l.includes('delete'))).toBe(false);
    expect(meta.ids.has(1)).toBe(true);
    expect((await readState()).foreignIds).toEqual([1]);
    expect(logs.join('\n')).toMatch(/thin id 1 of an interrupted create now belongs to someone else \(created under transaction 777\)/);
  });

  it('never replays a pending change written before claims: nothing proves whose the id is', async () => {
    const { kernel, make, readState, writeState, logs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('kept'));
    const meta = kernel.pool('pool').meta;
    meta.ids.add(4);
    const state = await readState();
    await writeState({ ...state, pending: { op: 'create', thinId: 4, fromTx: 102, toTx: 103 } });
    kernel.calls.length = 0;
    await make().init();
    expect(kernel.lines().some((l) => l.includes('delete'))).toBe(false);
    expect((await readState()).foreignIds).toEqual([4]);
    await writeState({ ...(await readState()), pending: { op: 'delete', thinId: 0, fromTx: 102, toTx: 103 } });
    const restarted = make();
    await restarted.init();
    expect(meta.ids.has(0)).toBe(true);
    expect((await restarted.list()).map((v) => v.name)).toEqual(['kept']);
    expect(logs.join('\n')).toMatch(/interrupted delete of thin id 0 .* cannot be proven ours; its volume stays listed/);
  });

  it('finishes an interrupted delete of its own device and rolls back a volume whose filesystem was never made', async () => {
    const { kernel, make, readState, writeState } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('half-deleted'));
    await backend.create(request('half-made'));
    const state = await readState() as { volumes: Record<string, { ready: boolean; createdInTx: number }> };
    state.volumes['half-made']!.ready = false;
    const createdInTx = state.volumes['half-deleted']!.createdInTx;
    expect(kernel.pool('pool').meta.createdIn.get(0)).toBe(createdInTx);
    await writeState({ ...state, pending: { op: 'delete', thinId: 0, claimTx: 900, doneTx: 901, createdInTx } });
    const restarted = make();
    await restarted.init();
    expect(await restarted.list()).toEqual([]);
    expect(kernel.pool('pool').meta.ids.size).toBe(0);
  });

  it('a delete whose id someone else re-created is not replayed on their device', async () => {
    const { kernel, make, readState, writeState } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('gone'));
    const meta = kernel.pool('pool').meta;
    // Our delete of id 0 went through, then someone else made id 0 again under their claim.
    meta.createdIn.set(0, 4242);
    const state = await readState() as { volumes: Record<string, { createdInTx: number }> };
    const createdInTx = state.volumes.gone!.createdInTx;
    delete (state.volumes as Record<string, unknown>).gone;
    await writeState({ ...state, pending: { op: 'delete', thinId: 0, claimTx: 900, doneTx: 901, createdInTx } });
    kernel.calls.length = 0;
    await make().init();
    expect(kernel.lines().some((l) => l.includes('delete'))).toBe(false);
    expect(meta.ids.has(0)).toBe(true);
    expect((await readState()).foreignIds).toEqual([0]);
  });

  it('settles a change whose commit failed before making the next one', async () => {
    const { kernel, make, readState } = await setupFakeDm();
    const backend = make();
    await backend.init();
    kernel.inject('dmsetup', /set_transaction_id 101 102/, { stderr: 'device-mapper: message ioctl on pool  failed: Cannot allocate memory\nCommand failed.' });
    await expect(backend.create(request('first'))).rejects.toMatchObject({ code: ErrorCodes.BACKEND_COMMAND });
    expect((await readState()).pending).toMatchObject({ op: 'create', thinId: 0, claimTx: 101 });
    kernel.calls.length = 0;
    await backend.create(request('second'));
    expect(kernel.lines().filter((l) => l.includes('message') && !l.includes('metadata_snap'))).toEqual([
      'dmsetup message pool 0 delete 0',
      'dmsetup message pool 0 set_transaction_id 101 103',
      'dmsetup message pool 0 create_thin 1',
      'dmsetup message pool 0 set_transaction_id 103 104',
    ]);
    expect((await backend.list()).map((v) => v.name)).toEqual(['second']);
  });

  it('a create made while another daemon moved the pool is left to them and retried under a new id', async () => {
    const { kernel, make, logs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    const meta = kernel.pool('pool').meta;
    // Another daemon moves the pool to its own claim right after ours, before our create_thin.
    const run = kernel.run.bind(kernel);
    let interfered = false;
    kernel.run = async (program, args, options) => {
      if (!interfered && args.includes('create_thin 0')) {
        interfered = true;
        meta.tx = 31337;
        meta.ids.add(0);
        meta.createdIn.set(0, 31337);
        return { stdout: '', stderr: '', exitCode: 0 };
      }
      return run(program, args, options);
    };
    await backend.create(request('vol'));
    expect((await backend.volumeStatus('vol')).thinId).toBe('1');
    expect(meta.ids.has(0)).toBe(true);
    expect(backend.pool.state.foreignIds).toEqual([0]);
    expect(logs.join('\n')).toMatch(/thin id 0 .* cannot be proven ours/);
  });

  it('refuses to adopt a pool that skips block zeroing', async () => {
    const { kernel, make } = await setupFakeDm();
    await make().init();
    await kernel.run('dmsetup', ['create', 'raw', '--table', '0 2097152 thin-pool /dev/loop1 /dev/loop0 128 10 1 skip_block_zeroing']);
    await expect(make({ 'dm.datadev': '', 'dm.metadatadev': '', 'dm.thinpoolname': 'raw' }, '/raw').init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/skip_block_zeroing/),
    });
  });
});

describe('devicemapper snapshots', () => {
  it('suspends an active origin around create_snap and keeps the snapshot content', async () => {
    const { kernel, make, fs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    const path = await backend.attach('vol');
    await fs.writeFile(join(path, 'f'), 'before');
    kernel.calls.length = 0;
    const snap = await backend.snapshots.createSnapshot('vol', 'snap1');
    expect(kernel.lines()).toEqual([
      'dmsetup status pool',
      'dmsetup message pool 0 set_transaction_id 102 103',
      'dmsetup table pool-t0',
      'dmsetup suspend pool-t0',
      'dmsetup message pool 0 create_snap 1 0',
      'dmsetup resume pool-t0',
      'dmsetup message pool 0 set_transaction_id 103 104',
    ]);
    expect(snap).toMatchObject({ name: 'snap1', volume: 'vol', details: { thinId: '1', pool: 'pool', device: '/dev/mapper/pool-t1' } });
    await fs.writeFile(join(path, 'f'), 'after');
    expect(await fs.readFile(join(kernel.store(kernel.pool('pool').meta, 1), 'f'), 'utf8')).toBe('before');
    await expect(backend.snapshots.createSnapshot('vol', 'snap1')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_EXISTS });
    await expect(backend.snapshots.createSnapshot('ghost', 's')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    expect(await backend.snapshots.activateSnapshot('vol', 'snap1')).toBe('/dev/mapper/pool-t1');
  });

  it('does not suspend an inactive origin, resumes after a failed create_snap, deletes and lists', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    kernel.calls.length = 0;
    await backend.snapshots.createSnapshot('vol', 'a');
    expect(kernel.lines().some((l) => l.includes('suspend'))).toBe(false);
    await backend.attach('vol');
    kernel.inject('dmsetup', /create_snap/, { stderr: 'device-mapper: message ioctl on pool  failed: Operation not supported\nCommand failed.' });
    kernel.calls.length = 0;
    await expect(backend.snapshots.createSnapshot('vol', 'b')).rejects.toMatchObject({ message: expect.stringMatching(/Operation not supported/) });
    expect(kernel.lines().slice(-1)).toEqual(['dmsetup resume pool-t0']);
    expect((await backend.snapshots.listSnapshots('vol')).map((s) => s.name)).toEqual(['a']);
    await backend.snapshots.deleteSnapshot('vol', 'a');
    await expect(backend.snapshots.deleteSnapshot('vol', 'a')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
    expect(await backend.snapshots.listSnapshots('vol')).toEqual([]);
  });

  it('runs thin_delta between a reserve and a release of the metadata snapshot, also when thin_delta fails', async () => {
    const { kernel, make } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    await backend.snapshots.createSnapshot('vol', 'monday');
    await backend.snapshots.createSnapshot('vol', 'tuesday');
    kernel.calls.length = 0;
    const changes = await backend.snapshots.changedBlocks('vol', 'monday', 'tuesday');
    expect(kernel.lines()).toEqual([
      'dmsetup table pool',
      'dmsetup message pool 0 reserve_metadata_snap',
      'thin_delta -m --snap1 1 --snap2 2 /dev/loop1',
      'dmsetup message pool 0 release_metadata_snap',
    ]);
    expect(changes.blockSizeBytes).toBe(65536);
    expect(changes.ranges[0]).toEqual({ offsetBytes: 0, lengthBytes: 65536 });
    kernel.inject('thin_delta', /./, { stderr: 'thin_delta: I/O error' });
    await expect(backend.snapshots.changedBlocks('vol', 'monday')).rejects.toThrow(/thin_delta/);
    expect(kernel.pool('pool').meta.held).toBe(false);
    kernel.pool('pool').meta.held = true;
    await expect(backend.snapshots.changedBlocks('vol', 'monday')).rejects.toMatchObject({
      message: expect.stringMatching(/already holds a metadata snapshot.*release_metadata_snap/),
    });
  });
});

describe('devicemapper options', () => {
  it('has Convoy-compatible names and defaults', () => {
    expect(parseDevicemapperOptions({})).toEqual({ poolName: 'stowage-pool', defaultVolumeSize: 100 * 2 ** 30, filesystem: 'ext4' });
    expect(parseDevicemapperOptions({
      'dm.datadev': '/dev/sdb', 'dm.metadatadev': '/dev/sdc', 'dm.thinpoolname': 'docker-pool',
      'dm.thinpoolblocksize': '2097152', 'dm.defaultvolumesize': '10G', 'dm.fs': 'xfs',
    })).toEqual({
      dataDevice: '/dev/sdb', metadataDevice: '/dev/sdc', poolName: 'docker-pool', blockSectors: 2097152,
      defaultVolumeSize: 10 * 2 ** 30, filesystem: 'xfs',
    });
  });

  it.each([
    [{ 'dm.thinpoolblocksize': '64' }, /from 128 to 2097152.*multiple of 128/],
    [{ 'dm.thinpoolblocksize': '200' }, /multiple of 128/],
    [{ 'dm.thinpoolblocksize': '4194304' }, /from 128 to 2097152/],
    [{ 'dm.thinpoolblocksize': '2M' }, /number of 512-byte sectors/],
    [{ 'dm.fs': 'btrfs' }, /ext4 or xfs/],
    [{ 'dm.datadev': '/dev/sdb' }, /go together/],
    [{ 'dm.datadev': 'data.img', 'dm.metadatadev': '/m' }, /absolute path/],
    [{ 'dm.datadev': '/same', 'dm.metadatadev': '/same' }, /different devices/],
    [{ 'dm.thinpoolname': 'bad name' }, /dm.thinpoolname/],
    [{ 'dm.defaultvolumesize': 'huge' }, /dm.defaultvolumesize/],
    [{ 'dm.fs': 'xfs', 'dm.defaultvolumesize': '100M' }, /at least 300M/],
    [{ 'dm.poolname': 'x' }, /unknown devicemapper option "dm.poolname"/],
  ])('refuses %j', (raw, message) => {
    expect(() => parseDevicemapperOptions(raw)).toThrow(message);
  });

  it('refuses xfs volumes below 300 MiB at create', async () => {
    const { make } = await setupFakeDm();
    const backend = make({ 'dm.fs': 'xfs', 'dm.defaultvolumesize': '1G' });
    await backend.init();
    await expect(backend.create(request('small', { size: 64 * 2 ** 20 }))).rejects.toMatchObject({ code: ErrorCodes.INVALID_OPTION });
    await backend.create(request('big'));
    expect((await backend.volumeStatus('big')).filesystem).toBe('xfs');
  });
});
