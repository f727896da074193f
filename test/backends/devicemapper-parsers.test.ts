/** The devicemapper parsers on output captured from a real kernel (test/fixtures/dm/README.md). */
import { readFileSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { ExecaCommandRunner } from '../../src/core/command-runner.js';
import { parseDmError } from '../../src/backends/devicemapper/dm-errors.js';
import { evaluatePoolHealth } from '../../src/backends/devicemapper/pool-health.js';
import { DmParseError, parsePoolStatus, parseThinStatus, splitByDevice } from '../../src/backends/devicemapper/status-parser.js';
import { parseLosetupJson, parseUeventDevname } from '../../src/backends/devicemapper/system-parsers.js';
import { mountAt, parseProcMounts } from '../../src/core/proc-mounts.js';
import { parseLs, parsePoolTable, parseThinTable } from '../../src/backends/devicemapper/table-parser.js';
import { changedRanges, parseThinDelta } from '../../src/backends/devicemapper/thin-delta-parser.js';
import { findExecutable } from '../helpers/requirements.js';

const FIXTURES = join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dm');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');

describe('dmsetup status of a thin-pool', () => {
  it('parses a fresh pool', () => {
    expect(parsePoolStatus(fixture('pool-status-fresh.txt'))).toEqual({
      failed: false, lengthSectors: 131072, transactionId: 0,
      usedMetadataBlocks: 418, totalMetadataBlocks: 4096, usedDataBlocks: 0, totalDataBlocks: 1024,
      mode: 'rw', discardPassdown: true, errorIfNoSpace: true, needsCheck: false, metadataLowWatermark: 1024,
    });
  });

  it('parses usage, a held metadata root, out_of_data_space, queue_if_no_space, read-only with needs_check and Fail', () => {
    expect(parsePoolStatus(fixture('pool-status-used.txt'))).toMatchObject({ usedDataBlocks: 75, usedMetadataBlocks: 419 });
    expect(parsePoolStatus(fixture('pool-status-used.txt'))).not.toHaveProperty('heldMetadataRoot');
    expect(parsePoolStatus(fixture('pool-status-held.txt'))).toMatchObject({ heldMetadataRoot: 64, mode: 'rw' });
    expect(parsePoolStatus(fixture('pool-status-full.txt'))).toMatchObject({ mode: 'out_of_data_space', usedDataBlocks: 1024, totalDataBlocks: 1024 });
    expect(parsePoolStatus(fixture('pool-status-queue.txt'))).toMatchObject({ errorIfNoSpace: false, totalDataBlocks: 512 });
    expect(parsePoolStatus(fixture('pool-status-ro-needs-check.txt'))).toMatchObject({ mode: 'ro', needsCheck: true });
    expect(parsePoolStatus(fixture('pool-status-fail.txt'))).toEqual({ failed: true, lengthSectors: 131072 });
  });

  it('rejects output that is not a thin-pool status', () => {
    expect(() => parsePoolStatus(fixture('thin-status-used.txt'))).toThrow(DmParseError);
    expect(() => parsePoolStatus('')).toThrow(DmParseError);
    expect(() => parsePoolStatus('0 100 thin-pool 0 x/1 0/1 - rw')).toThrow(/metadata usage/);
  });
});

describe('dmsetup status of a thin device and listings', () => {
  it('parses mapped sectors, and "-" for a device with nothing mapped', () => {
    expect(parseThinStatus(fixture('thin-status-used.txt'))).toEqual({
      failed: false, lengthSectors: 65536, mappedSectors: 9600, highestMappedSector: 65535,
    });
    expect(parseThinStatus(fixture('thin-status-empty.txt'))).toEqual({ failed: false, lengthSectors: 65536, mappedSectors: 0 });
    expect(parseThinStatus('0 65536 thin Fail')).toMatchObject({ failed: true });
  });

  it('splits the all-devices form of status and table', () => {
    const status = splitByDevice(fixture('status-all.txt'));
    expect([...status.keys()]).toEqual(['pool', 'thin0']);
    expect(parsePoolStatus(status.get('pool')![0]!)).toMatchObject({ usedDataBlocks: 97 });
    expect(parseThinStatus(status.get('thin0')![0]!)).toMatchObject({ mappedSectors: 11776 });
    const tables = splitByDevice(fixture('table-all.txt'));
    expect(parseThinTable(tables.get('thin0')![0]!)).toMatchObject({ thinId: 0, poolDevice: '254:0' });
    expect(splitByDevice(fixture('ls-empty.txt')).size).toBe(0);
  });

  it('parses dmsetup ls', () => {
    expect(parseLs(fixture('ls-devices.txt'))).toEqual([
      { name: 'pool', major: 254, minor: 0 },
      { name: 'thin0', major: 254, minor: 1 },
    ]);
    expect(parseLs(fixture('ls-empty.txt'))).toEqual([]);
    expect(() => parseLs('garbage here')).toThrow(DmParseError);
  });
});

describe('dmsetup table', () => {
  it('parses a pool table with and without features', () => {
    expect(parsePoolTable(fixture('pool-table.txt'))).toEqual({
      lengthSectors: 131072, metadataDevice: '7:0', dataDevice: '7:1', blockSectors: 128, lowWaterBlocks: 32,
      features: ['error_if_no_space'],
    });
    expect(parsePoolTable(fixture('pool-table-plain.txt'))).toMatchObject({ metadataDevice: '254:0', blockSectors: 256, features: [] });
  });

  it('parses a thin table and refuses other targets', () => {
    expect(parseThinTable(fixture('thin-table.txt'))).toEqual({ lengthSectors: 65536, poolDevice: '254:0', thinId: 0 });
    expect(() => parseThinTable(fixture('pool-table.txt'))).toThrow(DmParseError);
    expect(() => parsePoolTable('0 100 linear 7:0 0')).toThrow(DmParseError);
  });
});

describe('dmsetup error lines', () => {
  const cases: Array<[string, string, string | undefined, string]> = [
    ['err-create-thin-exists.txt', 'exists', 'message', 'File exists'],
    ['err-delete-absent.txt', 'no-data', 'message', 'No data available'],
    ['err-thin-table-absent-id.txt', 'no-data', 'reload', 'No data available'],
    ['err-remove-busy.txt', 'busy', 'remove', 'Device or resource busy'],
    ['err-create-name-busy.txt', 'busy', 'create', 'Device or resource busy'],
    ['err-reserve-held.txt', 'busy', 'message', 'Device or resource busy'],
    ['err-remove-absent.txt', 'no-device', 'remove', 'No such device or address'],
    ['err-status-absent.txt', 'no-device', undefined, 'Device does not exist'],
    ['err-set-txid-wrong.txt', 'invalid', 'message', 'Invalid argument'],
    ['err-release-none.txt', 'invalid', 'message', 'Invalid argument'],
    ['err-message-read-only.txt', 'not-supported', 'message', 'Operation not supported'],
    ['err-no-kernel-dm.txt', 'no-kernel', undefined, 'the kernel has no device-mapper driver (/dev/mapper/control cannot be opened)'],
  ];
  it.each(cases)('%s is %s', (file, kind, ioctl, reason) => {
    const failure = parseDmError(fixture(file));
    expect(failure).toMatchObject({ kind, reason });
    expect(failure.ioctl).toBe(ioctl);
  });

  it('names the device and keeps unknown failures readable', () => {
    expect(parseDmError(fixture('err-thin-table-absent-id.txt')).device).toBe('ghost');
    expect(parseDmError('dmsetup: unrecognised option\nCommand failed.')).toEqual({ kind: 'other', reason: 'dmsetup: unrecognised option' });
    expect(parseDmError('')).toEqual({ kind: 'other', reason: 'unknown error' });
  });
});

describe('thin_delta', () => {
  it('parses the compact and the verbose form to the same ranges', () => {
    const compact = parseThinDelta(fixture('thin-delta.xml'));
    const verbose = parseThinDelta(fixture('thin-delta-verbose.xml'));
    expect(compact).toMatchObject({ blockSectors: 128, transactionId: 0, left: 1, right: 0 });
    expect(compact.ranges[0]).toEqual({ kind: 'different', beginBlock: 0, lengthBlocks: 1 });
    expect(compact.ranges.map((r) => r.kind)).toContain('right_only');
    expect(verbose.ranges).toEqual(compact.ranges);
  });

  it('turns differences into sorted, merged byte ranges', () => {
    const delta = parseThinDelta(fixture('thin-delta.xml'));
    const ranges = changedRanges(delta);
    expect(ranges[0]).toEqual({ offsetBytes: 0, lengthBytes: 65536 });
    for (let i = 1; i < ranges.length; i += 1) {
      expect(ranges[i]!.offsetBytes).toBeGreaterThan(ranges[i - 1]!.offsetBytes + ranges[i - 1]!.lengthBytes);
    }
    expect(changedRanges(parseThinDelta(fixture('thin-delta-restored-same.xml')))).toEqual([]);
    expect(changedRanges({ blockSectors: 8, transactionId: 0, left: 0, right: 1, ranges: [
      { kind: 'right_only', beginBlock: 2, lengthBlocks: 2 }, { kind: 'different', beginBlock: 0, lengthBlocks: 2 },
      { kind: 'same', beginBlock: 4, lengthBlocks: 1 }, { kind: 'left_only', beginBlock: 5, lengthBlocks: 1 },
    ] })).toEqual([{ offsetBytes: 0, lengthBytes: 16384 }, { offsetBytes: 20480, lengthBytes: 4096 }]);
  });

  it('refuses output that is not a thin_delta diff', () => {
    expect(() => parseThinDelta(fixture('thin-dump.xml'))).toThrow(DmParseError);
    expect(() => parseThinDelta('<superblock data_block_size="x"><diff left="1" right="0"></diff></superblock>')).toThrow(DmParseError);
  });

  it.skipIf(!findExecutable('thin_restore') && !findExecutable('/usr/sbin/thin_restore'))(
    'matches what the host thin tools compute on metadata restored from the captured dump', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'stowage-thin-'));
      try {
        const runner = new ExecaCommandRunner();
        await writeFile(join(dir, 'dump.xml'), fixture('thin-dump.xml').replace('nr_data_blocks="0"', 'nr_data_blocks="1024"'));
        await runner.run('truncate', ['-s', '16M', join(dir, 'meta.bin')]);
        await runner.run('thin_restore', ['-q', '-i', join(dir, 'dump.xml'), '-o', join(dir, 'meta.bin')]);
        const live = await runner.run('thin_delta', ['--snap1', '1', '--snap2', '0', join(dir, 'meta.bin')]);
        expect(parseThinDelta(live.stdout).ranges).toEqual(parseThinDelta(fixture('thin-delta.xml')).ranges);
        expect(live.stdout.trim()).toBe(fixture('thin-delta-restored.xml').trim());
      } finally {
        await rm(dir, { recursive: true, force: true });
      }
    });
});

describe('mount table, losetup and sysfs', () => {
  it('finds a thin device mounted in /proc/self/mounts', () => {
    const entries = parseProcMounts(fixture('proc-mounts.txt'));
    expect(mountAt(entries, '/tmp/capture/mnt')).toMatchObject({ source: '/dev/mapper/thin0', fstype: 'ext4' });
    expect(mountAt(entries, '/nowhere')).toBeUndefined();
    expect(parseProcMounts('/dev/sda1 /mnt/with\\040space ext4 rw 0 0')[0]!.target).toBe('/mnt/with space');
  });

  it('parses losetup JSON, including deleted backing files and no devices at all', () => {
    expect(parseLosetupJson(fixture('losetup-list.json'))).toEqual([
      { name: '/dev/loop1', backingFile: '/tmp/capture/data.img', deleted: false },
      { name: '/dev/loop0', backingFile: '/tmp/capture/meta.img', deleted: false },
    ]);
    expect(parseLosetupJson('{"loopdevices":[{"name":"/dev/loop0","back-file":"/x y.img (deleted)"}]}'))
      .toEqual([{ name: '/dev/loop0', backingFile: '/x y.img', deleted: true }]);
    expect(parseLosetupJson('')).toEqual([]);
    expect(() => parseLosetupJson('not json')).toThrow(DmParseError);
  });

  it('reports losetup JSON of another shape as a parse error, and skips devices it cannot name', () => {
    expect(() => parseLosetupJson('null')).toThrow(DmParseError);
    expect(() => parseLosetupJson('{"loopdevices":{}}')).toThrow(DmParseError);
    expect(parseLosetupJson('{"loopdevices":[null,7,{"back-file":"/a.img"},{"name":"/dev/loop3","back-file":null}]}'))
      .toEqual([{ name: '/dev/loop3', backingFile: '', deleted: false }]);
  });

  it('reads DEVNAME from a sysfs uevent', () => {
    expect(parseUeventDevname('MAJOR=7\nMINOR=0\nDEVNAME=loop0\nDEVTYPE=disk\n')).toBe('loop0');
    expect(parseUeventDevname('MAJOR=7\n')).toBeUndefined();
  });
});

describe('pool health', () => {
  const health = (file: string) => evaluatePoolHealth('pool', parsePoolStatus(fixture(file)), 128);
  it('is healthy with room, and reports usage for people', () => {
    expect(health('pool-status-used.txt')).toMatchObject({
      condition: 'healthy', canCreate: true,
      facts: { poolHealth: 'healthy', poolDataUsed: '4.7MiB of 64MiB (7.3%)', poolMetadataUsed: '419 of 4096 blocks (10.2%)' },
    });
  });
  it('refuses creation when full, out of space, read-only, flagged needs_check or failed', () => {
    expect(health('pool-status-full.txt')).toMatchObject({ condition: 'out-of-data-space', canCreate: false });
    expect(health('pool-status-ro-needs-check.txt')).toMatchObject({ condition: 'needs-check', canCreate: false });
    expect(health('pool-status-fail.txt')).toMatchObject({ condition: 'failed', canCreate: false });
    const ro = { ...parsePoolStatus(fixture('pool-status-used.txt')), mode: 'ro' as const };
    expect(evaluatePoolHealth('pool', ro, 128)).toMatchObject({ condition: 'read-only', canCreate: false });
  });
  it('calls a pool with less than 10% free data or metadata nearly full', () => {
    const base = parsePoolStatus(fixture('pool-status-used.txt'));
    if (base.failed) throw new Error('fixture');
    expect(evaluatePoolHealth('pool', { ...base, usedDataBlocks: 922 }, 128)).toMatchObject({ condition: 'nearly-full', canCreate: false });
    expect(evaluatePoolHealth('pool', { ...base, usedDataBlocks: 921 }, 128)).toMatchObject({ condition: 'healthy' });
    expect(evaluatePoolHealth('pool', { ...base, usedMetadataBlocks: 3700 }, 128).problem).toMatch(/nearly full.*10%/);
  });
});
