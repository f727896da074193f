/**
 * Ownership of thin devices, on the host: the thin_dump parser on real output, the pure checks of
 * a state against the pool's metadata, and the set-up refusals over the simulated kernel. The
 * same sequences on a real kernel: test/vm/guest/ownership.guest.ts.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { Dmsetup } from '../../src/backends/devicemapper/dmsetup.js';
import { checkStateAgainstPool, ownership, poolMismatch } from '../../src/backends/devicemapper/pool-ownership.js';
import { emptyState, nextFreeId, type PoolStateFile, type VolumeEntry } from '../../src/backends/devicemapper/pool-state.js';
import { DmParseError } from '../../src/backends/devicemapper/status-parser.js';
import { highestThinId, parseThinDump, type ThinDump } from '../../src/backends/devicemapper/thin-dump-parser.js';
import { request, setupFakeDm } from '../helpers/fake-dm-backend.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dm');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');

describe('thin_dump', () => {
  it('reads device ids and their creation transactions, without and with mappings', () => {
    const dump = parseThinDump(fixture('thin-dump-skip-mappings.xml'));
    expect(dump.transactionId).toBe(281474976710655);
    expect(dump.blockSectors).toBe(128);
    expect([...dump.devices.values()]).toEqual([
      { thinId: 4, transaction: 123456789012345, mappedBlocks: 0, creationTime: 0, snapTime: 1 },
      { thinId: 5, transaction: 77, mappedBlocks: 0, creationTime: 1, snapTime: 1 },
    ]);
    expect(highestThinId(dump)).toBe(5);
    const full = parseThinDump(fixture('thin-dump.xml'));
    expect([...full.devices.keys()]).toEqual([0, 1]);
    expect(full.devices.get(0)).toMatchObject({ mappedBlocks: 92, transaction: 0 });
  });

  it.each([
    ['', /thin_dump output/],
    ['<superblock transaction="1" data_block_size="128">', /thin_dump output/],
    ['<superblock transaction="x" data_block_size="128"></superblock>', /transaction/],
    ['<superblock transaction="1" data_block_size="128"><device dev_id="1" mapped_blocks="0" creation_time="0" snap_time="0"></device></superblock>',
      /device transaction/],
    ['<superblock transaction="1" data_block_size="128"><device dev_id="99999999999999999" mapped_blocks="0" transaction="1" ' +
      'creation_time="0" snap_time="0"></device></superblock>', /dev_id/],
    [`<superblock transaction="1" data_block_size="128">${'<device dev_id="1" mapped_blocks="0" transaction="1" creation_time="0" snap_time="0"></device>'.repeat(2)}</superblock>`,
      /listed twice/],
  ])('refuses %j', (xml, message) => {
    expect(() => parseThinDump(xml)).toThrow(DmParseError);
    expect(() => parseThinDump(xml)).toThrow(message);
  });
});

describe('dmsetup info', () => {
  it('reads the MAJOR:MINOR a thin table names its pool by, and nothing for an absent device', async () => {
    const answers: Record<string, { stdout: string; stderr: string; exitCode: number }> = {
      pool: { stdout: fixture('info-devno.txt'), stderr: '', exitCode: 0 },
      ghost: { stdout: '', stderr: fixture('err-status-absent.txt'), exitCode: 1 },
      odd: { stdout: 'pool:254:0:0\n', stderr: '', exitCode: 0 },
    };
    const calls: string[][] = [];
    const dm = new Dmsetup({ run: async (_p, args) => { calls.push([...args]); return answers[args[args.length - 1]!]!; } }, { udev: true });
    expect(await dm.devno('pool')).toBe('254:0');
    expect(calls[0]).toEqual(['info', '-c', '--noheadings', '-o', 'major,minor', 'pool']);
    expect(await dm.devno('ghost')).toBeUndefined();
    await expect(dm.devno('odd')).rejects.toThrow(/dmsetup info odd printed/);
  });
});

function dumpOf(tx: number, devices: Array<[number, number]>): ThinDump {
  return {
    transactionId: tx, blockSectors: 128,
    devices: new Map(devices.map(([thinId, transaction]) => [thinId, { thinId, transaction, mappedBlocks: 0, creationTime: 0, snapTime: 0 }])),
  };
}

function stateWith(tx: number, volumes: Array<[string, number, number | undefined]>): PoolStateFile {
  const state = emptyState({ name: 'pool', blockSectors: 128, createdByStowage: true, createdAt: '' }, tx);
  for (const [name, thinId, createdInTx] of volumes) {
    const entry: VolumeEntry = {
      record: { name, options: {}, createdAt: '', createdBy: '' }, thinId, sectors: 8, fs: 'ext4', ready: true,
      mounted: false, prepared: true, snapshots: [], ...(createdInTx !== undefined ? { createdInTx } : {}),
    };
    state.volumes[name] = entry;
  }
  return state;
}

describe('a state against the pool metadata', () => {
  it('a device is ours only under the transaction recorded for it', () => {
    const dump = dumpOf(9, [[1, 500]]);
    expect(ownership(dump, 1, 500)).toBe('ours');
    expect(ownership(dump, 1, 501)).toBe('foreign');
    expect(ownership(dump, 1, undefined)).toBe('foreign');
    expect(ownership(dump, 2, 500)).toBe('absent');
  });

  it('refuses a state naming a device the pool made under another transaction, or none of its devices after a jump', () => {
    expect(poolMismatch(checkStateAgainstPool(stateWith(10, [['a', 0, 500]]), dumpOf(10, [[0, 500]])), true)).toBeUndefined();
    expect(poolMismatch(checkStateAgainstPool(stateWith(10, [['a', 0, 500]]), dumpOf(10, [[0, 777]])), false))
      .toMatch(/volume a names thin id 0, but the pool's device 0 was created under transaction 777, not 500/);
    expect(poolMismatch(checkStateAgainstPool(stateWith(10, [['a', 0, 500]]), dumpOf(12, [[1, 11]])), false))
      .toMatch(/none of the thin devices it names is in the pool \(volume a \(thin id 0\)\)/);
    // Others changed the pool, our device is still there as we made it: fine.
    expect(poolMismatch(checkStateAgainstPool(stateWith(10, [['a', 0, 500], ['b', 1, 600]]), dumpOf(12, [[0, 500]])), false)).toBeUndefined();
    // A pool that moved on while the state names nothing: refused only when about to activate it from its devices.
    expect(poolMismatch(checkStateAgainstPool(stateWith(10, []), dumpOf(12, [])), false)).toBeUndefined();
    expect(poolMismatch(checkStateAgainstPool(stateWith(10, []), dumpOf(12, [])), true)).toMatch(/names no thin device/);
  });

  it('state written before creation transactions learns them only when the pool proves the device predates the state', () => {
    const unchanged = stateWith(10, [['a', 0, undefined]]);
    expect(checkStateAgainstPool(unchanged, dumpOf(10, [[0, 3]])).matched).toBe(1);
    expect(unchanged.volumes.a!.createdInTx).toBe(3);
    const older = stateWith(10, [['a', 0, undefined]]);
    expect(checkStateAgainstPool(older, dumpOf(15, [[0, 9]])).matched).toBe(1);
    const newer = stateWith(10, [['a', 0, undefined]]);
    expect(checkStateAgainstPool(newer, dumpOf(15, [[0, 12]])).conflicts[0]).toMatch(/created under transaction 12, not before 10/);
    expect(newer.volumes.a!.createdInTx).toBeUndefined();
  });

  it('hands out ids upwards from the high-water mark, never an id the state names', () => {
    const state = stateWith(0, [['a', 3, 1]]);
    expect(nextFreeId(state)).toBe(4);
    state.nextThinId = 10;
    expect(nextFreeId(state)).toBe(10);
    state.foreignIds.push(10, 11);
    expect(nextFreeId(state)).toBe(12);
  });
});

describe('devicemapper pool set-up refusals (simulated kernel)', () => {
  it('refuses a metadata device holding something that is not pool metadata, and writes nothing to it', async () => {
    const { make, fs } = await setupFakeDm();
    await fs.writeFile('/pool/meta.img', 'ext4 superblock of someone');
    const backend = make();
    await expect(backend.init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/holds data that is not thin-pool metadata \(thin_check: bad checksum.*never wipes one itself.*dd if=\/dev\/zero/),
    });
    expect(await fs.readFile('/dev/loop1', 'utf8')).toBe('ext4 superblock of someone');
  });

  it('names the pool holding the metadata device when another pool name is started on it', async () => {
    const { make } = await setupFakeDm();
    await make().init();
    await expect(make({ 'dm.thinpoolname': 'other' }, '/second').init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/\(\/dev\/loop1\) is in use by device-mapper device pool.*dm.thinpoolname=pool/),
    });
  });

  it('with saved state refuses a blank metadata device and activates nothing', async () => {
    const { kernel, make, fs } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('vol'));
    await kernel.reboot();
    kernel.metadata.clear();
    await fs.writeFile('/pool/meta.img', '');
    kernel.calls.length = 0;
    await expect(make().init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE,
      message: expect.stringMatching(/does not hold the pool the state describes: it holds no thin-pool metadata.*forget the 1 volume/),
    });
    expect(kernel.lines().some((l) => l.startsWith('dmsetup create'))).toBe(false);
  });

  it('migrates state without creation transactions or a high-water mark, and refuses a restored state that names a reused id', async () => {
    const { kernel, make, readState, writeState } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('a'));
    const legacy = await readState() as Record<string, unknown> & { volumes: Record<string, Record<string, unknown>> };
    delete legacy.nextThinId;
    delete legacy.volumes.a!.createdInTx;
    await writeState(legacy);
    await make().init();
    const migrated = await readState() as { nextThinId: number; volumes: Record<string, { createdInTx: number }> };
    expect(migrated.nextThinId).toBe(1);
    expect(migrated.volumes.a!.createdInTx).toBe(kernel.pool('pool').meta.createdIn.get(0));

    // Someone else deletes id 0 and makes it again under their own transaction.
    const meta = kernel.pool('pool').meta;
    meta.createdIn.set(0, 5150);
    meta.tx = 5151;
    await expect(make().init()).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT,
      message: expect.stringMatching(/volume a names thin id 0, but the pool's device 0 was created under transaction 5150.*never deleted/),
    });
    expect(meta.ids.has(0)).toBe(true);
  });

  it('does not roll back an unfinished create whose id the pool now holds for someone else', async () => {
    const { kernel, make, readState, writeState } = await setupFakeDm();
    const backend = make();
    await backend.init();
    await backend.create(request('half'));
    const state = await readState() as { volumes: Record<string, { ready: boolean }> };
    state.volumes.half!.ready = false;
    await writeState(state);
    const meta = kernel.pool('pool').meta;
    meta.createdIn.set(0, 8080);
    kernel.calls.length = 0;
    await expect(make().init()).rejects.toMatchObject({
      code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/volume half \(being created\) names thin id 0/),
    });
    expect(kernel.lines().some((l) => l.includes('delete'))).toBe(false);
    expect(meta.ids.has(0)).toBe(true);
  });

  it('names the mount holding a metadata device exclusively', async () => {
    const { kernel, make, fs } = await setupFakeDm();
    await fs.writeFile('/pool/meta.img', 'a mounted filesystem');
    kernel.inject('thin_check', /loop1/, { stderr: "syscall 'open' failed: Device or resource busy\nNote: you cannot run this tool with these options on live metadata." });
    await fs.writeFile('/proc/self/mounts', '/dev/loop1 /srv/elsewhere ext4 rw,relatime 0 0\n');
    await expect(make().init()).rejects.toMatchObject({
      code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/\(\/dev\/loop1\) is open exclusively by something else \(mounted at \/srv\/elsewhere\)/),
    });
    expect(await fs.readFile('/dev/loop1', 'utf8')).toBe('a mounted filesystem');
  });
});
