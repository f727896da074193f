import { closeSync, lstatSync, open, openSync, readdirSync, type BigIntStats } from 'node:fs';
import { lstat, readdir } from 'node:fs/promises';
import { promisify } from 'node:util';
import { ErrorCodes, StowageError, isStowageError } from '../errors.js';
import { MAX_PATH, comparePaths, type Entry } from './format.js';
import type { Turns } from './options.js';
import { DIR_FLAGS, assertProcFd, nameInDir } from './dir-fd.js';
import { nameFromBytes } from './raw-names.js';

const openAsync = promisify(open);

/**
 * A directory the walk holds open. Names under it are reached through its descriptor
 * (`/proc/self/fd/N/name`: the kernel resolves the name in that directory), never through a
 * path: a container that swaps a directory for a symlink to /etc while the backup runs would
 * otherwise have /etc read into the backup under the volume's names. Counted: a file queued
 * for reading holds its directory until it is open.
 */
export class OpenDir {
  private refs = 1;

  constructor(readonly fd: number) {}

  /** The name in this directory, for node:fs. */
  child(name: string): string | Buffer {
    return nameInDir(this.fd, name);
  }

  get listPath(): string {
    return `/proc/self/fd/${this.fd}`;
  }

  hold(): this {
    this.refs += 1;
    return this;
  }

  release(): void {
    this.refs -= 1;
    if (this.refs === 0) closeSync(this.fd);
  }
}

export interface Walked {
  /** Relative, with bytes that are not UTF-8 escaped (raw-names.ts). */
  path: string;
  /** For node:fs: the root's path, or the name through its directory's descriptor (OpenDir). */
  abs: string | Buffer;
  stat: BigIntStats;
  /** On the local filesystem the walk started on: synchronous calls are fine here. */
  local: boolean;
  /** The directory holding it (all but the root): open until the next step of the walk. */
  parent?: OpenDir;
}

const errnoOf = (err: unknown) => (err as NodeJS.ErrnoException).code;

/** What a name the walk listed and then did not find gets as its warning. */
export const VANISHED = 'was removed or renamed while the backup read the tree; not in this backup';

/**
 * Depth-first, names sorted: the order manifests are written and checked in (see comparePaths).
 * `local`: the root is on a local filesystem; entries on the root's device are then listed and
 * stat'ed synchronously, a mount of another device inside the tree through the thread pool.
 * Each directory is opened without following a symlink, through its parent's descriptor, and
 * listed and read through its own, so nothing outside the root is ever reached. A name removed,
 * renamed or replaced by something else since its directory was listed is reported through
 * `onChanged` and left out (a directory with its contents): a file renamed back and forth by
 * a container while the walk passed is then a warning, not a silent gap.
 */
export async function* walk(root: string, local: boolean, turns: Turns, onChanged: (path: string, why: string) => void): AsyncGenerator<Walked> {
  assertProcFd('reading a volume for a backup', 'each name is opened through its directory\'s descriptor, so no symlink swapped into the tree can lead the backup out of it');
  const rootStat = await lstat(root, { bigint: true });
  if (!rootStat.isDirectory()) throw new StowageError(ErrorCodes.INVALID_REQUEST, `${root} is not a directory`);
  yield { path: '.', abs: root, stat: rootStat, local };
  const openDir = async (path: string | Buffer, rel: string, dirLocal: boolean): Promise<OpenDir | undefined> => {
    try {
      return new OpenDir(dirLocal ? openSync(path, DIR_FLAGS) : await openAsync(path, DIR_FLAGS));
    } catch (err) {
      const code = errnoOf(err);
      if (code === 'ENOENT') {
        onChanged(rel, VANISHED);
        return undefined;
      }
      if (code === 'ELOOP' || code === 'ENOTDIR') {
        // O_DIRECTORY | O_NOFOLLOW on a symlink gives ENOTDIR here, as on a file.
        onChanged(rel, 'was replaced by something other than a directory (a symlink, a file) while the backup read the tree; its contents are not in this backup');
        return undefined;
      }
      throw err;
    }
  };
  async function* below(rel: string, dir: OpenDir, dirLocal: boolean): AsyncGenerator<Walked> {
    try {
      // Names only, sorted: memory holds one directory's names per level, not the tree. As
      // bytes: a name that is not UTF-8 would come back as a string that names no file.
      const listed = dirLocal ? readdirSync(dir.listPath, { encoding: 'buffer' }) : await readdir(dir.listPath, { encoding: 'buffer' });
      const names = listed.map(nameFromBytes).sort();
      for (const name of names) {
        const childRel = rel === '.' ? name : `${rel}/${name}`;
        if (childRel.length > MAX_PATH) {
          // A container can nest directories deeper than any path a manifest records: that part
          // is left out, said, instead of the whole backup failing.
          onChanged(`${childRel.slice(0, 256)}...`, `is a path of ${childRel.length} characters, more than a backup records (${MAX_PATH}); not in this backup, nor anything under it`);
          continue;
        }
        const childFs = dir.child(name);
        let stat: BigIntStats | undefined;
        if (dirLocal) {
          stat = lstatSync(childFs, { bigint: true, throwIfNoEntry: false });
          await turns.pause();
        } else {
          stat = await lstat(childFs, { bigint: true }).catch((err: unknown) => {
            if (errnoOf(err) === 'ENOENT') return undefined;
            throw err;
          });
        }
        if (!stat) {
          onChanged(childRel, VANISHED);
          continue;
        }
        const childLocal = local && stat.dev === rootStat.dev;
        yield { path: childRel, abs: childFs, stat, local: childLocal, parent: dir };
        if (stat.isDirectory()) {
          const child = await openDir(childFs, childRel, childLocal);
          if (child) yield* below(childRel, child, childLocal);
        }
      }
    } finally {
      dir.release();
    }
  }
  const top = await openDir(root, '.', local);
  if (!top) throw new StowageError(ErrorCodes.INVALID_REQUEST, `${root} is not a directory`);
  yield* below('.', top, local);
}

/** Reads the parent's manifest in step with the walk: both are in comparePaths order. */
export class ParentCursor {
  private current: Entry | undefined;
  private done = false;

  /**
   * `onLost`: the parent's manifest cannot be read further (a chunk of it missing or corrupt):
   * told once, and the parent then has no more entries, so every later file is read, not failed.
   */
  constructor(private readonly iterator: AsyncIterator<Entry> | undefined, private readonly onLost?: (err: StowageError) => void) {
    if (!iterator) this.done = true;
  }

  async find(path: string): Promise<Entry | undefined> {
    while (!this.done) {
      if (!this.current) {
        let next: IteratorResult<Entry>;
        try {
          next = await this.iterator!.next();
        } catch (err) {
          if (!this.onLost || !(isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING) || isStowageError(err, ErrorCodes.BACKUP_CORRUPT))) throw err;
          this.done = true;
          this.onLost(err);
          return undefined;
        }
        if (next.done) { this.done = true; return undefined; }
        this.current = next.value;
      }
      const order = comparePaths(this.current.path, path);
      if (order === 0) return this.current;
      if (order > 0) return undefined;
      this.current = undefined;
    }
    return undefined;
  }
}
