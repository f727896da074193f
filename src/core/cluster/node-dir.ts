import { closeSync, constants, lstatSync, openSync, readlinkSync, realpathSync, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { DIR_FLAGS } from '../backup/dir-fd.js';
import { ErrorCodes, StowageError, errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { LocalFirstFs } from '../local-fs.js';

/**
 * Calls on the names in one node's marker directory (`mounts/<node>/`), opened once. Another
 * machine may have put anything there: a symlink in place of the directory would lead a listing
 * to another directory's files, and the unlinks of a heartbeat or a forget to delete them.
 */
export interface NodeDirCalls {
  names(): Promise<string[]>;
  /** Creates an empty marker; EEXIST when anything (a symlink, a directory) holds the name, which is never followed. */
  create(name: string): Promise<void>;
  /**
   * Removes a name. unlink(2) never follows the last component, so a symlink goes as itself and
   * its target stays; a directory is refused (EISDIR), never emptied.
   */
  unlink(name: string): Promise<void>;
  /**
   * A path to `name` through the open directory, for calls the others do not cover (an atomic
   * write: its temp file and rename stay in the directory that was checked). Valid only inside the task.
   */
  at(name: string): string;
}

/** What was found at a node directory's path instead of a directory; nothing was done through it. */
export class NotNodeDir extends StowageError {
  constructor(readonly path: string, readonly found: string, expected = 'a directory of mount markers') {
    super(ErrorCodes.STATE_CORRUPT, `${path} is ${found}, not ${expected}; stowage neither follows nor deletes through it`);
  }
}

/** What `members/` is, for NotNodeDir. */
export const MEMBERS_DIR = 'the directory of node records';
/** What a store's registry (`.stowage/volumes/`) is, for NotNodeDir. */
export const VOLUMES_DIR = 'the directory of volume records';

const CREATE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;

/** The store's own directory, where `.stowage/` is: its path may hold symlinks (it is the administrator's), nothing below it may. */
const STATE_DIR = '/.stowage/';
const realStores = new Map<string, string>();

/**
 * Where `path` (inside a store's `.stowage/`) is when nothing on the way below the store is a
 * symlink; undefined for a path outside any store. O_NOFOLLOW guards the last name only: a
 * directory above swapped for a symlink while the daemon runs (`cluster/mounts`, say) would lead
 * the open elsewhere, which the descriptor's own path then shows.
 */
function unfollowedPath(path: string): string | undefined {
  const cut = path.lastIndexOf(STATE_DIR);
  if (cut <= 0) return undefined;
  const store = path.slice(0, cut);
  let real = realStores.get(store);
  if (real === undefined) {
    real = realpathSync(store);
    realStores.set(store, real);
  }
  return real + path.slice(cut);
}

/** A directory on the way to a node directory is a symlink now: nothing is done there, and nothing may be unlinked by that path either. */
export class ThroughSymlink extends StowageError {
  constructor(path: string, reached: string) {
    super(ErrorCodes.STATE_CORRUPT, `${path} leads to ${reached}: a directory on the way was replaced by a symbolic link; ` +
      'stowage neither follows nor deletes through it. Put the store\'s .stowage directory right by hand');
  }
}

/** Throws ThroughSymlink unless `reached`, what a descriptor opened by `path` refers to, is `path` with no symlink followed below the store. */
function assertReachedUnfollowed(path: string, reached: string): void {
  const expected = unfollowedPath(path);
  if (expected !== undefined && reached !== expected) throw new ThroughSymlink(path, reached);
}

/** For a port without descriptors (memfs in unit tests): no directory between the store and `path` (from `first` up) may be a symlink. */
async function assertNoSymlinkOnTheWay(fs: FsPort, path: string, first = dirname(path)): Promise<void> {
  const cut = path.lastIndexOf(STATE_DIR);
  if (cut <= 0) return;
  for (let dir = first; dir.length > cut; dir = dirname(dir)) {
    if ((await fs.lstat(dir)).isSymbolicLink()) throw new ThroughSymlink(path, `a path through ${dir}`);
  }
}

function describeKind(st: Pick<Stats, 'isSymbolicLink' | 'isFile' | 'isFIFO' | 'isSocket' | 'isDirectory'>): string {
  if (st.isSymbolicLink()) return 'a symbolic link';
  if (st.isFile()) return 'a regular file';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  return st.isDirectory() ? 'a directory' : 'a device';
}

/** POSIX lets unlink(2) of a directory answer EPERM (memfs does); said as Linux says it, EISDIR, so callers test one code. */
function asIsDir(err: unknown, look: (() => Stats) | Stats | undefined): unknown {
  if (errnoCode(err) !== 'EPERM') return err;
  let st: Stats | undefined;
  try {
    st = typeof look === 'function' ? look() : look;
  } catch {
    return err;
  }
  return st?.isDirectory() ? Object.assign(new Error(`EISDIR: ${(err as Error).message}`), { code: 'EISDIR', cause: err }) : err;
}

/** ENOTDIR or ELOOP from an open with O_DIRECTORY | O_NOFOLLOW: said as what is there. */
function refusal(path: string, err: unknown, look: () => Stats | Promise<Stats>, expected?: string): Promise<never> {
  // A store's own directory that vanished: never read as "the file in it is gone", which callers may take for done.
  if (errnoCode(err) === 'ENOENT' && expected !== undefined) {
    return Promise.reject(new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `${path}, ${expected}, is missing: is the store's filesystem still mounted?`, { cause: err }));
  }
  if (errnoCode(err) !== 'ENOTDIR' && errnoCode(err) !== 'ELOOP') return Promise.reject(err as Error);
  return Promise.resolve().then(look).then(
    (st) => { throw new NotNodeDir(path, describeKind(st), expected); },
    () => { throw new NotNodeDir(path, 'something other than a directory', expected); });
}

/**
 * Runs `task` on the node directory `dir` with every name reached through a descriptor of it
 * (`/proc/self/fd/N/name`), opened by openCheckedDir: a symlink, file or FIFO at `dir` is
 * refused (NotNodeDir) before anything is read or written, and one swapped in after the open is
 * never reached. ENOENT when there is no directory, unless `expected` (what `dir` should be:
 * the node records' directory, `members/`) says it is one of the store's own. On a local
 * filesystem the calls are synchronous, as LocalFirstFs makes them there: a mount makes its
 * marker on this path.
 */
export async function inNodeDir<T>(fs: FsPort, dir: string, task: (calls: NodeDirCalls) => Promise<T>, expected?: string): Promise<T> {
  const opened = await openCheckedDir(fs, dir, expected);
  try {
    return await task(portCalls(fs, opened.base));
  } finally {
    await opened.close();
  }
}

function portCalls(fs: FsPort, base: string): NodeDirCalls {
  return {
    names: () => fs.readdir(base),
    at: (name) => join(base, name),
    create: async (name) => (await fs.open(join(base, name), CREATE_FLAGS, 0o600)).close(),
    unlink: (name) => fs.unlink(join(base, name)).catch(async (err: unknown) => {
      throw asIsDir(err, await fs.lstat(join(base, name)).catch(() => undefined));
    }),
  };
}

/** A directory opened once, its entries reached through the descriptor for as long as it is open. */
export interface CheckedDir {
  /** `/proc/self/fd/N` (or, on a port without descriptors, the directory's path): join names to it. */
  readonly base: string;
  close(): Promise<void>;
}

/**
 * Opens `dir` with O_DIRECTORY | O_NOFOLLOW, and checks that the descriptor's own path is `dir`
 * with no symlink followed below the store, for calls that go on through the port (joined to
 * `base`) until the close: on a local filesystem they stay synchronous. A symlink swapped in for
 * `dir`, or a directory above it, after the open is never reached. A port that is not the real
 * file system (memfs in unit tests) has no descriptors: there the directory is checked with
 * lstat, which leaves a window only tests have. `expected` says what `dir` should be, and makes
 * a missing one "is the store's filesystem still mounted?" rather than ENOENT.
 */
export async function openCheckedDir(fs: FsPort, dir: string, expected?: string): Promise<CheckedDir> {
  if (fs instanceof LocalFirstFs && fs.isLocal(dir)) {
    let fd: number;
    try {
      fd = openSync(dir, DIR_FLAGS);
    } catch (err) {
      return refusal(dir, err, () => lstatSync(dir), expected);
    }
    const base = `/proc/self/fd/${fd}`;
    try {
      assertReachedUnfollowed(dir, readlinkSync(base));
    } catch (err) {
      closeSync(fd);
      throw err;
    }
    fs.aliasOf(base, dir);
    return { base, close: async () => { fs.dropAlias(base); closeSync(fd); } };
  }
  if (fs instanceof LocalFirstFs || fs.open === fsp.open) {
    const handle = await fsp.open(dir, DIR_FLAGS).catch((err: unknown) => refusal(dir, err, () => fs.lstat(dir), expected));
    const base = `/proc/self/fd/${handle.fd}`;
    try {
      assertReachedUnfollowed(dir, await fsp.readlink(base));
    } catch (err) {
      await handle.close();
      throw err;
    }
    if (fs instanceof LocalFirstFs) fs.aliasOf(base, dir);
    return {
      base,
      close: async () => {
        if (fs instanceof LocalFirstFs) fs.dropAlias(base);
        await handle.close();
      },
    };
  }
  await assertNoSymlinkOnTheWay(fs, dir);
  const st = await fs.lstat(dir);
  if (!st.isDirectory()) throw new NotNodeDir(dir, describeKind(st), expected);
  return { base: dir, close: async () => {} };
}

/** Runs `task` with `dir` opened by openCheckedDir, closing it after; `task` gets the base to join names to. */
export async function withCheckedDir<T>(fs: FsPort, dir: string, expected: string, task: (base: string) => Promise<T>): Promise<T> {
  const opened = await openCheckedDir(fs, dir, expected);
  try {
    return await task(opened.base);
  } finally {
    await opened.close();
  }
}

/** Throws ThroughSymlink when `fd`, opened by `path` (inside a store's `.stowage/`), was reached through a symlink below the store. */
export async function assertOpenedUnfollowed(path: string, fd: number): Promise<void> {
  assertReachedUnfollowed(path, await fsp.readlink(`/proc/self/fd/${fd}`));
}
