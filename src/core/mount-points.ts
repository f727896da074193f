import { realpathSync } from 'node:fs';
import { realpath } from 'node:fs/promises';
import { errnoCode } from './errors.js';
import type { FsPort } from './fs-port.js';
import { isLocalPath } from './local-fs.js';
import { mountPointsWithin, parseMountinfo } from './proc-mounts.js';

/** Read through the FsPort, so a test on memfs can lay down the mounts it needs. */
export const MOUNTINFO_PATH = '/proc/self/mountinfo';

/**
 * A path as its bytes, one character per byte. The kernel escapes only space, tab, newline and
 * backslash in mountinfo: a name that is not UTF-8 must be compared byte for byte, not decoded.
 */
function bytes(path: string | Buffer): string {
  return (typeof path === 'string' ? Buffer.from(path, 'utf8') : path).toString('latin1');
}

/** realpath(3), synchronous where the port makes `dir`'s calls so (a thread-pool round trip is most of its cost). */
async function realpathOf(fs: FsPort, dir: string): Promise<Buffer> {
  return isLocalPath(fs, dir) ? realpathSync.native(dir, { encoding: 'buffer' }) : realpath(dir, { encoding: 'buffer' });
}

/**
 * The mount points at or below one directory. A device number only tells another filesystem: a
 * bind mount of a directory (or file) of the same filesystem shows the same device, and deleting
 * through it deletes the files of wherever it came from. Only the mount table tells those apart.
 *
 * The table is this process's mount namespace's, which is right for what it guards: the paths a
 * delete here resolves are resolved in this namespace. A mount made in another namespace that did
 * not propagate here (a managed plugin runs in its own, receiving the host's mounts only where its
 * mounts propagate) covers nothing here, so a delete here reaches the store's own files beneath it.
 * Without /proc (memfs in tests, another OS) the table is unknown and only devices are compared.
 */
export class MountPointsBelow {
  private constructor(private readonly dir: string, private readonly below: ReadonlySet<string> | undefined) {}

  /** Reads the table once; a delete of a large tree does not read it per directory. */
  static async read(fs: FsPort, dir: string): Promise<MountPointsBelow> {
    const text = await fs.readFile(MOUNTINFO_PATH).catch((err: unknown) => {
      // /proc is there but unreadable now: the caller fails and retries later, rather than guess.
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (text === undefined) return new MountPointsBelow(bytes(dir), undefined);
    // Mount points are real paths: a store reached through a symlink is looked up where it leads.
    const real = await realpathOf(fs, dir).catch(() => Buffer.from(dir, 'utf8'));
    return new MountPointsBelow(bytes(dir), mountPointsWithin(parseMountinfo(bytes(Buffer.from(text))), bytes(real)));
  }

  /** Whether `path` (the directory itself, or a path joined below it without following a symlink) is a mount point. */
  at(path: string | Buffer): boolean {
    if (!this.below?.size) return false;
    const own = bytes(path);
    if (own !== this.dir && !own.startsWith(this.dir === '/' ? '/' : `${this.dir}/`)) return false;
    return this.below.has(this.dir === '/' ? own.replace(/^\/$/, '') : own.slice(this.dir.length));
  }
}
