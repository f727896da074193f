/**
 * A simulated kernel for the devicemapper backend's host tests: a CommandRunner that answers
 * dmsetup (thin-pool and thin targets, messages, status and table in the exact format and error
 * lines of the captured fixtures), losetup, blockdev, thin_check, thin_delta, mkfs, mount and
 * umount, with all file data in a memfs volume. Pool metadata (thin ids, transaction id) is
 * kept per metadata file, so it survives `reboot()` like the real thing.
 */
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { CommandOptions, CommandResult, CommandRunner } from '../../src/core/command-runner.js';
import { ErrorCodes, StowageError } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { runTool } from './fake-dm-tools.js';

export interface FakeCall {
  program: string;
  args: string[];
  env?: Record<string, string>;
}

/** Pool metadata, kept on the metadata "device": survives deactivation and reboots. */
export interface FakeMetadata {
  key: string;
  tx: number;
  ids: Set<number>;
  /** Thin id -> the transaction id it was created under (ids added by hand default to 0). */
  createdIn: Map<number, number>;
  held: boolean;
}

export interface FakePool {
  name: string;
  meta: FakeMetadata;
  lengthSectors: number;
  blockSectors: number;
  features: string[];
  usedData: number;
  mode: 'rw' | 'ro' | 'out_of_data_space';
  needsCheck: boolean;
  failed: boolean;
}

export interface FakeDevice {
  name: string;
  minor: number;
  /** The table with device paths, as given to `dmsetup create`. */
  table: string[];
  pool?: FakePool;
  thinId?: number;
  /** Sectors a thin device has mapped, as its status reports them (writes are not simulated: set it). */
  mappedSectors?: number;
}

export interface Injection {
  program: string;
  match: RegExp;
  stdout?: string;
  stderr?: string;
  exitCode: number;
  times: number;
}

const FIXTURE_DELTA = readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', 'fixtures', 'dm', 'thin-delta.xml'), 'utf8');

export const ok = (stdout = ''): CommandResult => ({ stdout, stderr: '', exitCode: 0 });
export const fail = (stderr: string, exitCode = 1): CommandResult => ({ stdout: '', stderr, exitCode });
const dmFail = (ioctl: string, dev: string, reason: string) => fail(`device-mapper: ${ioctl} ioctl on ${dev}  failed: ${reason}\nCommand failed.`);
const noDevice = () => fail('Device does not exist.\nCommand failed.');

export class FakeDmKernel implements CommandRunner {
  readonly calls: FakeCall[] = [];
  readonly metadata = new Map<string, FakeMetadata>();
  readonly devices = new Map<string, FakeDevice>();
  /** /dev/loopN -> backing file */
  readonly loops = new Map<string, string>();
  /** mount path -> device path */
  readonly mounts = new Map<string, string>();
  readonly injections: Injection[] = [];
  /** dm device name -> how many more `remove` calls fail with EBUSY (an opener that goes away). */
  readonly busyRemoves = new Map<string, number>();
  /** mount paths whose umount fails with "target is busy". */
  readonly busyUmounts = new Set<string>();
  /** Size in sectors of backing files (default 1 GiB). */
  readonly sizes = new Map<string, number>();
  thinDeltaXml = FIXTURE_DELTA;
  private nextMinor = 0;

  constructor(readonly fs: FsPort) {}

  /** The command lines run so far, e.g. "dmsetup message pool 0 create_thin 0" (without --noudevsync). */
  lines(program?: string): string[] {
    return this.calls.filter((c) => !program || c.program === program)
      .map((c) => [c.program, ...c.args.filter((a) => a !== '--noudevsync')].join(' '));
  }

  inject(program: string, match: RegExp, result: { stdout?: string; stderr?: string; exitCode?: number }, times = 1): void {
    this.injections.push({ program, match, ...result, exitCode: result.exitCode ?? 1, times });
  }

  async run(program: string, args: readonly string[], options: CommandOptions = {}): Promise<CommandResult> {
    this.calls.push({ program, args: [...args], ...(options.env ? { env: options.env } : {}) });
    const line = [program, ...args].join(' ');
    const injected = this.injections.find((i) => i.times > 0 && i.program === program && i.match.test(line));
    let result: CommandResult;
    if (injected) {
      injected.times -= 1;
      result = { stdout: injected.stdout ?? '', stderr: injected.stderr ?? '', exitCode: injected.exitCode };
    } else {
      result = program === 'dmsetup' ? await this.dmsetup(args.filter((a) => a !== '--noudevsync')) : await runTool(this, program, [...args]);
    }
    if (result.exitCode !== 0 && !options.allowFailure) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND, `${program} ${args[0] ?? ''} failed: ${result.stderr.split('\n')[0]}`);
    }
    return result;
  }

  pool(name: string): FakePool {
    const pool = this.devices.get(name)?.pool;
    if (!pool || this.devices.get(name)?.thinId !== undefined) throw new Error(`fake: no pool ${name}`);
    return pool;
  }

  /** The pool metadata on a metadata loop device, and whether an active pool holds that device. */
  metadataOn(loop: string): { meta?: FakeMetadata; active: boolean } {
    const file = this.loops.get(loop);
    const meta = file === undefined ? undefined : this.metadata.get(file);
    const active = [...this.devices.values()].some((d) => d.thinId === undefined && d.table[3] === loop);
    return { ...(meta ? { meta } : {}), active };
  }

  /** Where the data of a thin id lives while it is not mounted. */
  store(meta: FakeMetadata, id: number): string {
    return `/.fake-thin/${meta.key.replace(/\//g, '_')}/${id}`;
  }

  majorMinor(path: string): string {
    if (path.startsWith('/dev/loop')) return `7:${path.slice('/dev/loop'.length)}`;
    const device = this.devices.get(path.replace('/dev/mapper/', ''));
    return device ? `254:${device.minor}` : path;
  }

  /** What a reboot does: mounts, dm devices and loop devices gone; metadata and data kept. */
  async reboot(): Promise<void> {
    for (const path of [...this.mounts.keys()]) await runTool(this, 'umount', [path]);
    for (const name of this.devices.keys()) await this.fs.rm(`/dev/mapper/${name}`, { force: true });
    this.devices.clear();
    await this.fs.rm('/sys/class/block', { recursive: true, force: true });
    for (const loop of this.loops.keys()) await this.fs.rm(loop, { force: true });
    this.loops.clear();
  }

  private async dmsetup(args: string[]): Promise<CommandResult> {
    const [command, name = ''] = args;
    const device = this.devices.get(name);
    switch (command) {
      case 'ls':
        return ok(this.devices.size === 0 ? 'No devices found'
          : [...this.devices.values()].map((d) => `${d.name}\t(254:${d.minor})`).join('\n'));
      case 'status':
        return device ? ok(this.statusLine(device)) : noDevice();
      case 'table':
        return device ? ok(device.table.map((t) => this.majorMinor(t)).join(' ') + ' ') : noDevice();
      case 'create':
        return this.create(name, args[3] ?? '');
      case 'remove':
        return this.remove(name);
      case 'info':
        // info -c --noheadings -o major,minor NAME
        return device || this.devices.has(args[args.length - 1]!) ? ok(`254:${this.devices.get(args[args.length - 1]!)!.minor}`) : noDevice();
      case 'suspend': case 'resume': case 'mknodes':
        if (!device) return noDevice();
        if (command === 'mknodes') await this.fs.writeFile(`/dev/mapper/${name}`, '');
        return ok();
      case 'message':
        if (!device?.pool || device.thinId !== undefined) return dmFail('message', name, 'Invalid argument');
        return this.message(device.pool, args.slice(3).join(' '));
      default:
        return fail(`fake dmsetup: unsupported ${command}`);
    }
  }

  private statusLine(device: FakeDevice): string {
    const pool = device.pool!;
    if (device.thinId === undefined) {
      if (pool.failed) return `0 ${pool.lengthSectors} thin-pool Fail `;
      const total = pool.lengthSectors / pool.blockSectors;
      return `0 ${pool.lengthSectors} thin-pool ${pool.meta.tx} ${418 + pool.meta.ids.size}/4096 ${pool.usedData}/${total} ` +
        `${pool.meta.held ? '64' : '-'} ${pool.mode} discard_passdown ` +
        `${pool.features.includes('error_if_no_space') ? 'error' : 'queue'}_if_no_space ${pool.needsCheck ? 'needs_check' : '-'} 1024 `;
    }
    const mapped = device.mappedSectors ?? 0;
    return `0 ${device.table[1]} thin ${mapped} ${mapped > 0 ? mapped - 1 : '-'}`;
  }

  private async create(name: string, table: string): Promise<CommandResult> {
    if (this.devices.has(name)) return dmFail('create', name, 'Device or resource busy');
    const t = table.split(' ');
    const minor = this.nextMinor++;
    if (t[2] === 'thin-pool') {
      const metaFile = this.loops.get(t[3]!);
      if (!metaFile) return dmFail('reload', `${name} (254:${minor})`, 'Invalid argument');
      const content = await this.fs.readFile(t[3]!).catch(() => Buffer.alloc(0));
      let meta = this.metadata.get(metaFile);
      if (!meta || !content.subarray(0, 8).equals(Buffer.from('THINMETA'))) {
        meta = { key: metaFile, tx: 0, ids: new Set(), createdIn: new Map(), held: false };
        this.metadata.set(metaFile, meta);
        await this.fs.writeFile(t[3]!, 'THINMETA');
      }
      const features = t.slice(8, 8 + Number(t[7] ?? 0));
      const pool: FakePool = { name, meta, lengthSectors: Number(t[1]), blockSectors: Number(t[5]), features,
        usedData: 0, mode: 'rw', needsCheck: false, failed: false };
      this.devices.set(name, { name, minor, table: t, pool });
      const loop = t[3]!.replace('/dev/', '');
      await this.fs.mkdir(`/sys/class/block/${loop}/holders/dm-${minor}`, { recursive: true });
      await this.fs.mkdir(`/sys/class/block/dm-${minor}/dm`, { recursive: true });
      await this.fs.writeFile(`/sys/class/block/dm-${minor}/dm/name`, `${name}\n`);
    } else if (t[2] === 'thin') {
      const pool = this.devices.get(t[3]!.replace('/dev/mapper/', ''))?.pool;
      const id = Number(t[4]);
      if (!pool?.meta.ids.has(id)) return dmFail('reload', `${name} (254:${minor})`, 'No data available');
      this.devices.set(name, { name, minor, table: t, pool, thinId: id });
    } else {
      return fail(`fake dmsetup: unsupported target ${t[2]}`);
    }
    await this.fs.mkdir('/dev/mapper', { recursive: true });
    await this.fs.writeFile(`/dev/mapper/${name}`, '');
    return ok();
  }

  private async remove(name: string): Promise<CommandResult> {
    const device = this.devices.get(name);
    if (!device) return dmFail('remove', name, 'No such device or address');
    const busy = this.busyRemoves.get(name) ?? 0;
    const inUse = [...this.mounts.values()].includes(`/dev/mapper/${name}`)
      || [...this.devices.values()].some((d) => d !== device && d.pool === device.pool && device.thinId === undefined);
    if (busy > 0 || inUse) {
      if (busy > 0) this.busyRemoves.set(name, busy - 1);
      return dmFail('remove', name, 'Device or resource busy');
    }
    this.devices.delete(name);
    await this.fs.rm(`/dev/mapper/${name}`, { force: true });
    if (device.thinId === undefined) {
      await this.fs.rm(`/sys/class/block/${device.table[3]!.replace('/dev/', '')}/holders/dm-${device.minor}`, { recursive: true, force: true });
    }
    return ok();
  }

  private async message(pool: FakePool, text: string): Promise<CommandResult> {
    const [op, a, b] = text.split(' ');
    const meta = pool.meta;
    if (pool.failed || pool.mode === 'ro') return dmFail('message', pool.name, 'Operation not supported');
    const id = Number(a);
    const active = (thinId: number) => [...this.devices.values()].some((d) => d.pool === pool && d.thinId === thinId);
    switch (op) {
      case 'create_thin':
      case 'create_snap': {
        if (meta.ids.has(id)) return dmFail('message', pool.name, 'File exists');
        if (op === 'create_snap' && !meta.ids.has(Number(b))) return dmFail('message', pool.name, 'No data available');
        meta.ids.add(id);
        meta.createdIn.set(id, meta.tx);
        await this.fs.rm(this.store(meta, id), { recursive: true, force: true });
        await this.fs.mkdir(this.store(meta, id), { recursive: true });
        if (op === 'create_snap') await copyTree(this.fs, this.dataOf(pool, Number(b)), this.store(meta, id));
        return ok();
      }
      case 'delete':
        if (!meta.ids.has(id)) return dmFail('message', pool.name, 'No data available');
        if (active(id)) return dmFail('message', pool.name, 'Device or resource busy');
        meta.ids.delete(id);
        meta.createdIn.delete(id);
        await this.fs.rm(this.store(meta, id), { recursive: true, force: true });
        return ok();
      case 'set_transaction_id':
        if (id !== meta.tx) return dmFail('message', pool.name, 'Invalid argument');
        meta.tx = Number(b);
        return ok();
      case 'reserve_metadata_snap':
        if (meta.held) return dmFail('message', pool.name, 'Device or resource busy');
        meta.held = true;
        return ok();
      case 'release_metadata_snap':
        if (!meta.held) return dmFail('message', pool.name, 'Invalid argument');
        meta.held = false;
        return ok();
      default:
        return dmFail('message', pool.name, 'Invalid argument');
    }
  }

  /** The directory holding a thin id's files right now: its mount path, or its store. */
  dataOf(pool: FakePool, id: number): string {
    const device = [...this.devices.values()].find((d) => d.pool === pool && d.thinId === id);
    const mountedAt = device && [...this.mounts].find(([, dev]) => dev === `/dev/mapper/${device.name}`)?.[0];
    return mountedAt ?? this.store(pool.meta, id);
  }
}

async function copyTree(fs: FsPort, from: string, to: string): Promise<void> {
  for (const entry of await fs.readdir(from)) {
    const source = join(from, entry);
    const target = join(to, entry);
    if ((await fs.stat(source)).isDirectory()) {
      await fs.mkdir(target, { recursive: true });
      await copyTree(fs, source, target);
    } else {
      await fs.writeFile(target, await fs.readFile(source));
    }
  }
}
