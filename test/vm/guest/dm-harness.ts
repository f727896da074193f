/**
 * Guest-side helpers (inside the test VM, real device-mapper): thin pools on sparse files in the
 * guest's tmpfs, backends over them, and a "reboot" that tears every device down.
 */
import { randomBytes } from 'node:crypto';
import * as realFs from 'node:fs/promises';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { ExecaCommandRunner, type CommandRunner } from '../../../src/core/command-runner.js';
import type { Logger } from '../../../src/core/logger.js';
import { DevicemapperBackend } from '../../../src/backends/devicemapper/devicemapper-backend.js';
import { parseDevicemapperOptions } from '../../../src/backends/devicemapper/dm-options.js';
import { parseLosetupJson } from '../../../src/backends/devicemapper/system-parsers.js';
import { parseProcMounts } from '../../../src/core/proc-mounts.js';
import { memoryLogger } from '../../helpers/memory-logger.js';
import { parseLs } from '../../../src/backends/devicemapper/table-parser.js';

export const MiB = 2 ** 20;

export interface PoolFixture {
  dir: string;
  root: string;
  data: string;
  meta: string;
  poolName: string;
  /** Backend options (`--opt`) for this pool. */
  options: Record<string, string>;
}

export interface PoolFileSizes {
  dataMiB?: number;
  metaMiB?: number;
  /** Default volume size option. */
  volumeSize?: string;
}

/** Sparse data and metadata files in a fresh temp dir, plus a state root next to them. */
export async function makePoolFiles(sizes: PoolFileSizes = {}): Promise<PoolFixture> {
  const dir = await mkdtemp(join(tmpdir(), 'dmpool-'));
  const fx: PoolFixture = {
    dir,
    root: join(dir, 'root'),
    data: join(dir, 'data.img'),
    meta: join(dir, 'meta.img'),
    poolName: `stw-${randomBytes(3).toString('hex')}`,
    options: {},
  };
  await execa('truncate', ['-s', `${sizes.dataMiB ?? 512}M`, fx.data]);
  await execa('truncate', ['-s', `${sizes.metaMiB ?? 16}M`, fx.meta]);
  fx.options = {
    'dm.datadev': fx.data,
    'dm.metadatadev': fx.meta,
    'dm.thinpoolname': fx.poolName,
    'dm.thinpoolblocksize': '128',
    'dm.defaultvolumesize': sizes.volumeSize ?? '16M',
  };
  return fx;
}

export function makeBackend(fx: PoolFixture, extra: Record<string, string> = {}, log: Logger = memoryLogger(),
  runner: CommandRunner = new ExecaCommandRunner()): DevicemapperBackend {
  return new DevicemapperBackend(
    { nodeId: 'vm-node', root: fx.root, fs: realFs, runner, log },
    parseDevicemapperOptions({ ...fx.options, ...extra }),
    { removeDelayMs: 50 },
  );
}

export async function sh(program: string, args: readonly string[]): Promise<string> {
  const result = await execa(program, [...args], { env: { DM_DISABLE_UDEV: '1' } });
  return String(result.stdout);
}

/**
 * What a reboot does to the pool: every mount under the fixture unmounted, the pool's thin
 * devices and the pool removed, the loop devices detached. Files (and the state root) stay.
 */
export async function teardownPool(fx: PoolFixture): Promise<void> {
  const mounts = parseProcMounts(await realFs.readFile('/proc/self/mounts', 'utf8'))
    .filter((m) => m.target.startsWith(fx.dir + '/')).reverse();
  for (const m of mounts) await execa('umount', [m.target], { reject: false });
  const devices = parseLs(await sh('dmsetup', ['ls'])).map((d) => d.name);
  for (const name of devices.filter((n) => n.startsWith(`${fx.poolName}-`))) await sh('dmsetup', ['remove', '--noudevsync', name]);
  if (devices.includes(fx.poolName)) await sh('dmsetup', ['remove', '--noudevsync', fx.poolName]);
  const loops = parseLosetupJson(await sh('losetup', ['--list', '--json', '--output', 'NAME,BACK-FILE']));
  for (const loop of loops.filter((l) => l.backingFile.startsWith(fx.dir + '/'))) await sh('losetup', ['-d', loop.name]);
}

export async function destroyPool(fx: PoolFixture): Promise<void> {
  await teardownPool(fx);
  await rm(fx.dir, { recursive: true, force: true });
}

/** The pool's own list of thin devices (id -> creation transaction), read on a metadata snapshot. */
export async function poolDevices(fx: PoolFixture): Promise<Map<number, number>> {
  const table = (await sh('dmsetup', ['table', fx.poolName])).trim().split(/\s+/);
  const meta = await readDevname(table[3]!);
  await sh('dmsetup', ['message', fx.poolName, '0', 'reserve_metadata_snap']);
  try {
    const xml = await sh('thin_dump', ['--skip-mappings', '-m', meta]);
    return new Map([...xml.matchAll(/<device dev_id="(\d+)"[^>]* transaction="(\d+)"/g)].map((m) => [Number(m[1]), Number(m[2])]));
  } finally {
    await sh('dmsetup', ['message', fx.poolName, '0', 'release_metadata_snap']);
  }
}

async function readDevname(majorMinor: string): Promise<string> {
  const uevent = await realFs.readFile(`/sys/dev/block/${majorMinor}/uevent`, 'utf8');
  return `/dev/${/^DEVNAME=(.+)$/m.exec(uevent)![1]!.trim()}`;
}

/** The first 4 KiB of a file or device (a thin-pool metadata superblock lives there). */
export async function firstBlock(path: string): Promise<Buffer> {
  const handle = await realFs.open(path, 'r');
  try {
    const buffer = Buffer.alloc(4096);
    await handle.read(buffer, 0, 4096, 0);
    return buffer;
  } finally {
    await handle.close();
  }
}
