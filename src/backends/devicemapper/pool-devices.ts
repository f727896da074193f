import { basename } from 'node:path';
import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, errnoCode, messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { parseProcMounts } from '../../core/proc-mounts.js';
import { parseLosetupJson, parseUeventDevname } from './system-parsers.js';
import { parseThinDump, type ThinDump } from './thin-dump-parser.js';

/** What thin_check made of a metadata device. */
export interface MetadataCheck {
  valid: boolean;
  /** The device is open exclusively elsewhere (a pool, a mount): thin_check could not look. */
  busy: boolean;
  /** thin_check's own words, for people. */
  detail: string;
}

/** Linux dev_t as the kernel encodes it for user space (glibc's major()/minor()). */
function majorMinorOf(rdev: number): string {
  const high = Math.floor(rdev / 2 ** 32);
  const low = rdev % 2 ** 32;
  const major = ((low >>> 8) & 0xfff) | ((high & 0xfffff000) >>> 0);
  const minor = (low & 0xff) | ((low >>> 12) & 0xfff00);
  return `${major}:${minor}`;
}

function unavailable(message: string, cause?: unknown): StowageError {
  return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, message, cause === undefined ? {} : { cause });
}

/** The block devices under a pool: loop attachment of plain files, sizes, metadata checks. */
export class PoolDevices {
  constructor(private readonly runner: CommandRunner, private readonly fs: FsPort, private readonly log: Logger) {}

  /**
   * A block device path for `path`: the device itself, or the loop device of a plain file
   * (an existing attachment of that file is reused, so a file is never attached twice).
   */
  async blockDeviceFor(path: string, option: string): Promise<string> {
    const stat = await this.fs.stat(path).catch((err: unknown) => {
      throw unavailable(`${option}=${path} cannot be used: ${errnoCode(err) === 'ENOENT' ? 'it does not exist' : messageOf(err)}; ` +
        'give a block device, or a file (for example made with truncate -s 100G FILE) that stowage attaches as a loop device', err);
    });
    if (stat.isBlockDevice()) return path;
    if (!stat.isFile()) throw unavailable(`${option}=${path} is neither a block device nor a regular file`);
    const listing = await this.runner.run('losetup', ['--list', '--json', '--output', 'NAME,BACK-FILE'], { timeoutMs: 30_000 });
    const existing = parseLosetupJson(listing.stdout).find((loop) => loop.backingFile === path && !loop.deleted);
    if (existing) return existing.name;
    const attached = await this.runner.run('losetup', ['--find', '--show', path], { timeoutMs: 30_000 });
    const device = attached.stdout.trim();
    if (!device.startsWith('/dev/')) throw unavailable(`losetup did not name a loop device for ${path}`);
    this.log.info(`attached ${path} as ${device}`);
    return device;
  }

  async sizeSectors(device: string): Promise<number> {
    const result = await this.runner.run('blockdev', ['--getsz', device], { timeoutMs: 30_000 });
    const sectors = Number(result.stdout.trim());
    if (!Number.isSafeInteger(sectors)) throw unavailable(`blockdev --getsz ${device} printed ${JSON.stringify(result.stdout)}`);
    return sectors;
  }

  /**
   * What holds a block device open as a stacked device (a pool on its metadata device): the
   * device-mapper names found in sysfs, empty when nothing does.
   */
  async holdersOf(device: string): Promise<string[]> {
    const dirs = [`/sys/class/block/${basename(device)}/holders`];
    const stat = await this.fs.stat(device).catch(() => undefined);
    if (stat && stat.rdev > 0) dirs.push(`/sys/dev/block/${majorMinorOf(stat.rdev)}/holders`);
    for (const dir of dirs) {
      const entries = await this.fs.readdir(dir).catch(() => undefined);
      if (entries === undefined) continue;
      const names: string[] = [];
      for (const entry of entries) {
        const dmName = await this.fs.readFile(`/sys/class/block/${entry}/dm/name`, 'utf8').catch(() => undefined);
        names.push(dmName?.trim() || entry);
      }
      return names;
    }
    return [];
  }

  /**
   * True when the first 4 KiB (where pool metadata keeps its superblock) are all zero: the only
   * state in which the kernel formats fresh metadata, and the only one stowage lets it.
   */
  async superblockIsBlank(device: string): Promise<boolean> {
    const handle = await this.fs.open(device, 'r');
    try {
      const buffer = Buffer.alloc(4096);
      const { bytesRead } = await handle.read(buffer, 0, 4096, 0);
      return buffer.subarray(0, bytesRead).every((byte) => byte === 0);
    } finally {
      await handle.close();
    }
  }

  /** thin_check without the mapping trees: the superblock, device details and space maps. */
  async checkMetadata(device: string): Promise<MetadataCheck> {
    const result = await this.runner.run('thin_check', ['--skip-mappings', device], { allowFailure: true, timeoutMs: 600_000 });
    const text = `${result.stderr}\n${result.stdout}`;
    const detail = text.split('\n').map((l) => l.trim()).filter((l) => l !== '' && !/^examining|^checking/.test(l)).slice(0, 3).join('; ');
    const busy = result.exitCode !== 0 && /Device or resource busy/.test(text);
    if (!busy) return { valid: result.exitCode === 0, busy, detail };
    // A mounted filesystem holds its device exclusively without showing in sysfs holders.
    const mounts = parseProcMounts(await this.fs.readFile('/proc/self/mounts', 'utf8').catch(() => ''));
    const where = mounts.filter((m) => m.source === device).map((m) => m.target);
    return { valid: false, busy, detail: where.length > 0 ? `mounted at ${where.join(', ')}` : detail };
  }

  /**
   * The pool's list of thin devices (thin_dump without mappings). `metadataSnap`: read the
   * metadata snapshot of a live pool (reserved by the caller) instead of the device itself.
   */
  async dumpMetadata(device: string, metadataSnap: boolean): Promise<ThinDump> {
    const args = ['--skip-mappings', ...(metadataSnap ? ['-m'] : []), device];
    const result = await this.runner.run('thin_dump', args, { allowFailure: true, timeoutMs: 600_000 });
    if (result.exitCode !== 0) {
      const why = (result.stderr || result.stdout).split('\n').map((l) => l.trim()).find(Boolean) ?? `exit code ${result.exitCode}`;
      throw unavailable(`thin_dump ${args.join(' ')} failed: ${why}`);
    }
    try {
      return parseThinDump(result.stdout);
    } catch (err) {
      throw unavailable(`thin_dump of ${device} printed what stowage cannot read: ${messageOf(err)}`, err);
    }
  }

  /** `/dev/NAME` of a `MAJOR:MINOR` device, found through sysfs (no udev symlinks needed). */
  async pathOf(majorMinor: string): Promise<string> {
    if (!/^\d+:\d+$/.test(majorMinor)) return majorMinor;
    const uevent = await this.fs.readFile(`/sys/dev/block/${majorMinor}/uevent`, 'utf8').catch(() => '');
    const name = parseUeventDevname(uevent);
    if (!name) throw unavailable(`cannot find the device node of block device ${majorMinor} in /sys/dev/block`);
    return `/dev/${name}`;
  }
}
