/**
 * The directories a restore has open. Every name is made through its directory's descriptor
 * (`/proc/self/fd/N/name`), never through `target/a/b/...`: a manifest may hold any path a
 * backup records (4096 characters, up to four bytes each), and written after the target's own
 * path that is longer than the kernel takes in one call (PATH_MAX, 4096 bytes), so a backup
 * that read such a tree could not have been restored.
 */
import { close, closeSync, fchmod, fchmodSync, fchown, fchownSync, futimes, futimesSync, lstatSync, mkdirSync, open, openSync } from 'node:fs';
import { lstat, mkdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { DIR_FLAGS, assertProcFd, nameInDir } from './dir-fd.js';
import type { Entry } from './format.js';

const openAsync = promisify(open);
const closeAsync = promisify(close);
const fchownAsync = promisify(fchown);
const fchmodAsync = promisify(fchmod);
const futimesAsync = promisify(futimes);

/**
 * Seconds for utimes. libuv sets times to whole microseconds, truncating the double it is given,
 * and a double near today's epoch holds a time only to about 0.2 us: aiming at the middle of the
 * microsecond makes the truncation land on it, where `x.324` would come back as `x.323999`.
 */
export function nsToSeconds(ns: string): number | string {
  const value = BigInt(ns);
  if (value < 0n) {
    // Before 1970. Node takes a negative number for "now", but passes a numeric string on.
    // libuv truncates toward zero, then borrows a second: aiming half a microsecond below the
    // floor's microsecond lands on it.
    const micros = value / 1000n - (value % 1000n === 0n ? 0n : 1n);
    return String((Number(micros) - 0.5) / 1e6);
  }
  const micros = value / 1000n;
  return Number(micros / 1_000_000n) + (Number(micros % 1_000_000n) + 0.5) / 1e6;
}

function lastSegment(path: string): string {
  return path.slice(path.lastIndexOf('/') + 1);
}

interface OpenDir {
  entry: Entry;
  fd: number;
}

/**
 * The chain of directories from the target down to the one being filled, each open. `local`:
 * synchronous calls (a local file system), else through the thread pool.
 */
export class RestoreDirs {
  private readonly stack: OpenDir[] = [];

  private constructor(private readonly local: boolean, private readonly asRoot: boolean) {}

  /** Opens `target` (never through a symlink) for the manifest's root entry. */
  static async open(target: string, root: Entry, local: boolean, asRoot: boolean): Promise<RestoreDirs> {
    assertProcFd('restoring a backup', 'each name is made through its directory\'s descriptor, so paths of any depth restore and none leads out of the target');
    const dirs = new RestoreDirs(local, asRoot);
    dirs.stack.push({ entry: root, fd: local ? openSync(target, DIR_FLAGS) : await openAsync(target, DIR_FLAGS) });
    return dirs;
  }

  get depth(): number {
    return this.stack.length;
  }

  /** The path of the innermost open directory, in manifest form. */
  get innermost(): string | undefined {
    return this.stack.at(-1)?.entry.path;
  }

  /** Where `path`, a name in the innermost directory, is made: through that directory's descriptor. */
  place(path: string): string | Buffer {
    return nameInDir(this.stack.at(-1)!.fd, lastSegment(path));
  }

  /** Makes directory `entry` in the innermost one and opens it: names after it go inside. */
  async enter(entry: Entry): Promise<void> {
    const path = this.place(entry.path);
    if (this.local) {
      mkdirSync(path, { mode: 0o700 });
      this.stack.push({ entry, fd: openSync(path, DIR_FLAGS) });
    } else {
      await mkdir(path, { mode: 0o700 });
      this.stack.push({ entry, fd: await openAsync(path, DIR_FLAGS) });
    }
  }

  /** Gives the innermost directory its owner, mode and times (everything in it is written) and closes it. */
  async leave(): Promise<void> {
    const { entry, fd } = this.stack.pop()!;
    try {
      if (this.local) {
        if (this.asRoot) fchownSync(fd, entry.uid, entry.gid);
        fchmodSync(fd, entry.mode);
        futimesSync(fd, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
      } else {
        if (this.asRoot) await fchownAsync(fd, entry.uid, entry.gid);
        await fchmodAsync(fd, entry.mode);
        await futimesAsync(fd, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
      }
    } finally {
      if (this.local) closeSync(fd);
      else await closeAsync(fd);
    }
  }

  /** Closes what is still open, leaving metadata as it is: the restore failed. */
  closeAll(): void {
    for (const { fd } of this.stack.splice(0)) closeSync(fd);
  }

  /**
   * Where the restored entry at `path` (in manifest form) is, through a descriptor, for a
   * hardlink to it; undefined when a part of the path is not a directory restored here (a
   * symlink the manifest made earlier must not lead the link out of the target) or the name is
   * a directory or missing. Whatever else is there this restore made (target was empty): a
   * file, or a symlink, FIFO or device, which link(2) links as itself, never following it.
   * `release` closes what was opened to reach it.
   */
  async restoredEntry(path: string): Promise<{ at: string | Buffer; release: () => void } | undefined> {
    const segments = path.split('/');
    const parent = segments.slice(0, -1).join('/');
    // The deepest open directory on the way: the target (the root entry, '.') at least.
    let from = 0;
    for (let i = this.stack.length - 1; i > 0; i -= 1) {
      const open = this.stack[i]!.entry.path;
      if (parent === open || parent.startsWith(`${open}/`)) {
        from = i;
        break;
      }
    }
    const base = this.stack[from]!;
    const rest = from === 0 ? segments : segments.slice(base.entry.path.split('/').length);
    const opened: number[] = [];
    const release = () => { for (const fd of opened.splice(0)) closeSync(fd); };
    try {
      let fd = base.fd;
      for (const segment of rest.slice(0, -1)) {
        // O_NOFOLLOW | O_DIRECTORY: a symlink or a file on the way fails here.
        fd = this.local ? openSync(nameInDir(fd, segment), DIR_FLAGS) : await openAsync(nameInDir(fd, segment), DIR_FLAGS);
        opened.push(fd);
      }
      const at = nameInDir(fd, rest.at(-1)!);
      const stat = this.local ? lstatSync(at, { throwIfNoEntry: false }) : await lstat(at).catch((err: unknown) => {
        if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
        throw err;
      });
      if (!stat || stat.isDirectory()) {
        release();
        return undefined;
      }
      return { at, release };
    } catch (err) {
      release();
      if (['ENOENT', 'ENOTDIR', 'ELOOP'].includes((err as NodeJS.ErrnoException).code ?? '')) return undefined;
      throw err;
    }
  }
}
