import type { CommandRunner } from '../../core/command-runner.js';
import { ErrorCodes, StowageError, firstLine } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { DmFilesystem } from './dm-options.js';
import { mountAt, parseProcMounts, type MountEntry } from '../../core/proc-mounts.js';

const MOUNTS_FILE = '/proc/self/mounts';

/**
 * mkfs and mount of thin devices. Thin devices read zeros where nothing was written (the pool
 * zeroes new blocks; pools with skip_block_zeroing are refused), so ext4 is made without zeroing
 * its inode tables and journal, and mounted with noinit_itable: nothing provisions pool blocks
 * the filesystem does not use.
 */
export class VolumeFilesystems {
  constructor(private readonly runner: CommandRunner, private readonly fs: FsPort) {}

  async mkfs(device: string, type: DmFilesystem, volume: string): Promise<void> {
    const args = type === 'ext4'
      ? ['-q', '-E', 'lazy_itable_init=1,lazy_journal_init=1,nodiscard', device]
      : ['-q', '-K', device];
    const result = await this.runner.run(`mkfs.${type}`, args, { allowFailure: true, timeoutMs: 600_000 });
    if (result.exitCode !== 0) {
      const why = (result.stderr || result.stdout).split('\n').map((l) => l.trim()).filter(Boolean).slice(-1)[0] ?? '';
      throw new StowageError(ErrorCodes.BACKEND_COMMAND,
        `making the ${type} filesystem of volume ${volume} on ${device} failed: ${why}`, { volume, cause: result });
    }
  }

  async mounts(): Promise<MountEntry[]> {
    return parseProcMounts(await this.fs.readFile(MOUNTS_FILE, 'utf8'));
  }

  async mountedAt(path: string): Promise<MountEntry | undefined> {
    return mountAt(await this.mounts(), path);
  }

  async mount(device: string, path: string, type: DmFilesystem, volume: string, readOnly = false): Promise<void> {
    await this.mountWith(device, path, type, `volume ${volume}`, volume, [readOnly ? 'ro' : 'rw', ...(type === 'ext4' && !readOnly ? ['noinit_itable'] : [])]);
  }

  /**
   * Mounts a snapshot for reading without writing a byte to it: no journal replay (ext4
   * `noload`, xfs `norecovery`; a snapshot taken by stowage has a clean journal, the origin's
   * filesystem was frozen around it), and for xfs `nouuid`, as the origin, mounted, has the same UUID.
   */
  async mountSnapshot(device: string, path: string, type: DmFilesystem, volume: string, snapshot: string): Promise<void> {
    await this.mountWith(device, path, type, `snapshot ${snapshot} of volume ${volume}`, volume, type === 'ext4' ? ['ro', 'noload'] : ['ro', 'norecovery', 'nouuid']);
  }

  private async mountWith(device: string, path: string, type: DmFilesystem, what: string, volume: string, options: string[]): Promise<void> {
    const result = await this.runner.run('mount', ['-t', type, '-o', options.join(','), device, path],
      { allowFailure: true, timeoutMs: 120_000 });
    if (result.exitCode !== 0) {
      throw new StowageError(ErrorCodes.BACKEND_COMMAND,
        `mounting ${what} (${device}) at ${path} failed: ${firstLine(result.stderr) || 'unknown error'}; ` +
        `check the kernel log (dmesg) and the filesystem with fsck`, { volume, cause: result });
    }
  }

  /** Unmounts `path` if it is mounted; a busy mount is E_VOLUME_IN_USE. */
  async unmount(path: string, volume: string, what = `volume ${volume}`): Promise<void> {
    if (!(await this.mountedAt(path))) return;
    const result = await this.runner.run('umount', [path], { allowFailure: true, timeoutMs: 120_000 });
    if (result.exitCode === 0 || /not mounted/.test(result.stderr)) return;
    if (/busy/i.test(result.stderr)) {
      throw new StowageError(ErrorCodes.VOLUME_IN_USE,
        `${what} cannot be unmounted from ${path}: a process still uses it (see fuser -vm ${path}); ` +
        `stop it and try again`, { volume });
    }
    throw new StowageError(ErrorCodes.BACKEND_COMMAND, `unmounting ${what} from ${path} failed: ${firstLine(result.stderr) || 'unknown error'}`,
      { volume, cause: result });
  }
}
