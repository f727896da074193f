/**
 * Deleting a tree through directory descriptors. A walk by path resolves every path afresh, so a
 * bind mount made inside the tree after the walk looked (by a process whose working directory is
 * in it) is walked into, and the files of wherever it came from are deleted. A descriptor keeps
 * the directory it was opened on: each entry is reached as `/proc/self/fd/N/name`, which the
 * kernel looks up in that very directory, under whatever was mounted over its path since, and
 * a directory reached that way lies on another mount exactly when its mount id differs.
 */
import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { DIR_FLAGS } from './backup/dir-fd.js';
import { assertOpenedUnfollowed } from './cluster/node-dir.js';
import { errnoCode } from './errors.js';
import type { FsPort } from './fs-port.js';
import type { MountPointsBelow } from './mount-points.js';
import type { LeftMount } from './safe-path.js';

/** The parent of the tree's top is reached as the caller names it, symlinks on the way resolved as a path walk did. */
const PARENT_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY;

/** `dir/name`, as a string when both are UTF-8 that round-trips, else as bytes. */
export function childPath(dir: string | Buffer, name: Buffer): string | Buffer {
  const text = name.toString('utf8');
  if (typeof dir === 'string' && Buffer.from(text, 'utf8').equals(name)) return join(dir, text);
  return Buffer.concat([Buffer.isBuffer(dir) ? dir : Buffer.from(dir, 'utf8'), Buffer.from('/'), name]);
}

/** `name` in the directory open as `handle`; bytes, so a name that is not UTF-8 still names its file. */
function inDir(handle: FileHandle, name: Buffer): Buffer {
  return Buffer.concat([Buffer.from(`/proc/self/fd/${handle.fd}/`), name]);
}

/** The mount id the kernel reports for an open file; undefined where /proc does not say (no /proc, or a kernel before 3.15). */
async function mountIdOf(fs: FsPort, handle: FileHandle): Promise<number | undefined> {
  const text = await fs.readFile(`/proc/self/fdinfo/${handle.fd}`, 'utf8').catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  const id = text?.match(/^mnt_id:\s*(\d+)\s*$/m)?.[1];
  return id === undefined ? undefined : Number(id);
}

const ignoreMissing = (err: unknown) => {
  if (errnoCode(err) !== 'ENOENT') throw err;
  return undefined;
};

/**
 * Deletes the tree at `path` through descriptors, leaving every mount point in it (and all
 * beneath it) and returning those; undefined, having deleted nothing, where /proc gives no
 * mount ids, so the caller walks by path instead. `fs` must be the real filesystem (node's, or
 * LocalFirstFs): the names it is given are in /proc.
 */
export async function removeTreeByDescriptors(fs: FsPort, path: string, dev: number, mounts: MountPointsBelow): Promise<LeftMount[] | undefined> {
  const parent = await fs.open(dirname(path), PARENT_FLAGS).catch(ignoreMissing);
  if (!parent) return [];
  try {
    // A store's own directory (`deleting/`) swapped for a symlink after the caller's checks: nothing is deleted where it leads.
    await assertOpenedUnfollowed(dirname(path), parent.fd);
    const rootMount = await mountIdOf(fs, parent);
    if (rootMount === undefined) return undefined;
    const left: LeftMount[] = [];
    await new DescriptorWalk(fs, dev, rootMount, mounts, left).remove(parent, Buffer.from(basename(path), 'utf8'), path);
    return left;
  } finally {
    await parent.close();
  }
}

class DescriptorWalk {
  constructor(private readonly fs: FsPort, private readonly dev: number, private readonly rootMount: number, private readonly mounts: MountPointsBelow,
    private readonly left: LeftMount[]) {}

  /** Removes `name` in the directory `dir`; false when something was left in place. `shown` is its path, for the report only. */
  async remove(dir: FileHandle, name: Buffer, shown: string | Buffer, isDir = true): Promise<boolean> {
    const at = inDir(dir, name);
    if (!isDir) {
      const gone = await this.fs.unlink(at).then(() => true, (err: unknown) => {
        // Turned into a directory since it was listed: remove it as one.
        if (errnoCode(err) === 'EISDIR' || errnoCode(err) === 'EPERM') return undefined;
        return this.leave(shown, err);
      });
      if (gone !== undefined) return gone;
    }
    const handle = await this.fs.open(at, DIR_FLAGS).catch((err: unknown) => {
      // Not a directory (any more): a symlink is removed as a link, and nothing else is ever opened.
      if (errnoCode(err) === 'ELOOP' || errnoCode(err) === 'ENOTDIR') return null;
      return ignoreMissing(err);
    });
    if (handle === undefined) return true;
    if (handle === null) return this.fs.unlink(at).then(() => true, (err: unknown) => this.leave(shown, err));
    let complete: boolean;
    try {
      complete = await this.enter(handle, shown);
    } finally {
      await handle.close();
    }
    return complete && this.fs.rmdir(at).then(() => true, (err: unknown) => this.leave(shown, err));
  }

  /** Empties the directory open as `handle`, unless it lies on another mount than the tree. */
  private async enter(handle: FileHandle, shown: string | Buffer): Promise<boolean> {
    const stat = await handle.stat();
    if (stat.dev !== this.dev) return this.mountAt(shown, 'filesystem');
    // The table as a second source: it costs a lookup, and names a mount point even if mount ids ever missed one.
    if (await mountIdOf(this.fs, handle) !== this.rootMount || this.mounts.at(shown)) return this.mountAt(shown, 'bind');
    let complete = true;
    const entries = await this.fs.readdir(Buffer.from(`/proc/self/fd/${handle.fd}`), { encoding: 'buffer', withFileTypes: true })
      .catch(ignoreMissing) ?? [];
    for (const entry of entries) {
      if (!(await this.remove(handle, entry.name, childPath(shown, entry.name), entry.isDirectory()))) complete = false;
    }
    return complete;
  }

  private mountAt(shown: string | Buffer, kind: LeftMount['kind']): false {
    this.left.push({ path: shown.toString(), kind });
    return false;
  }

  /** EBUSY: something is mounted over the name (a file's bind mount, or a mount made after the directory was emptied); its name stays. */
  private leave(shown: string | Buffer, err: unknown): boolean {
    if (errnoCode(err) === 'ENOENT') return true;
    if (errnoCode(err) !== 'EBUSY') throw err;
    return this.mountAt(shown, 'bind');
  }
}
