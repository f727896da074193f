import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, errnoCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { parseLosetupJson, parseUeventDevname } from './system-parsers.js';

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
      throw unavailable(`${option}=${path} cannot be used: ${errnoCode(err) === 'ENOENT' ? 'it does not exist' : (err as Error).message}; ` +
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

  /** True when the device holds a valid thin-pool metadata superblock. */
  async holdsThinMetadata(device: string): Promise<boolean> {
    const result = await this.runner.run('thin_check', ['--super-block-only', device], { allowFailure: true, timeoutMs: 60_000 });
    return result.exitCode === 0;
  }

  /** Zeroes the first 4 KiB, which makes the kernel format fresh pool metadata. */
  async wipeMetadataSuperblock(device: string): Promise<void> {
    const handle = await this.fs.open(device, 'r+');
    try {
      await handle.write(Buffer.alloc(4096), 0, 4096, 0);
      await handle.sync();
    } finally {
      await handle.close();
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
