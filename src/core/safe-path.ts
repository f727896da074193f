import { constants, type Stats } from 'node:fs';
import * as fsp from 'node:fs/promises';
import { ErrorCodes, StowageError, errnoCode } from './errors.js';
import type { FsPort } from './fs-port.js';
import { LocalFirstFs, openRegularOn } from './local-fs.js';
import { MountPointsBelow } from './mount-points.js';
import { childPath, removeTreeByDescriptors } from './remove-tree-fd.js';

/**
 * Paths inside a store are written by other machines: a symlink planted there must never make
 * this node read, write or delete outside the store. Files are opened only once pinned and found
 * regular (openRegularOn), never through a symlink at the last component, and a device planted
 * there is never opened; directories are checked with lstat against the store's device and
 * remembered by identity, so one swapped for a symlink or a mount between the check and a delete
 * is noticed.
 */

const MAX_RECORD_BYTES = 16 * 1024 * 1024;
/** O_NONBLOCK: nothing opened waits (a FIFO or device is never opened: see openRegularOn). */
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK;
const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

function refused(path: string, why: string, volume?: string, hint = ''): StowageError {
  return new StowageError(ErrorCodes.STATE_CORRUPT, `${path} ${why}; stowage does not follow or touch it${hint}`, { volume });
}

/** Where a volume's directory should be: what is there instead came from outside stowage, and only a person can say whose it is. */
const MOVE_IT_AWAY = ': it was put there outside stowage; move it away by hand, then try again';
/** Where a record should be: no stowage writes one such, and the name stays blocked until a person moves it. */
const RECORD_HINT = ': stowage never writes a record like it; move it away by hand (keep it if you need to know who put it there), then try again';

/**
 * Reads a regular file without following a symlink at `path`; undefined when it does not exist.
 * A symlink, directory or device there is an E_STATE_CORRUPT error naming the path.
 */
export async function readFileNoFollow(fs: FsPort, path: string, volume?: string, shown = path): Promise<string | undefined> {
  let opened;
  try {
    opened = await openRegularOn(fs, path, READ_FLAGS);
  } catch (err) {
    const code = errnoCode(err);
    if (code === 'ENOENT') return undefined;
    if (code === 'ELOOP' || code === 'EMLINK') throw refused(shown, 'is a symbolic link', volume, RECORD_HINT);
    throw err;
  }
  if ('notRegular' in opened) throw refused(shown, `is not a regular file (${opened.notRegular})`, volume, RECORD_HINT);
  const handle = opened;
  try {
    const stat = await handle.stat();
    // Records are small; a huge file planted under a record's name must not exhaust memory.
    if (stat.size > MAX_RECORD_BYTES) throw refused(shown, `is ${stat.size} bytes, more than any record`, volume, RECORD_HINT);
    return await handle.readFile('utf8');
  } finally {
    await handle.close();
  }
}

/** Identity of a directory as lstat saw it. */
export interface DirIdentity {
  dev: number;
  ino: number;
}

/** A directory's identity with its owner and mode, as lstat saw them. */
export interface DirStat extends DirIdentity {
  mode: number;
  uid: number;
  gid: number;
}

/** Throws unless `path` is a real directory (not a symlink) on device `dev`; returns its identity. */
export async function realDirOn(fs: FsPort, path: string, dev: number, volume?: string): Promise<DirStat> {
  return assertRealDir(await fs.lstat(path), path, dev, volume);
}

/** realDirOn for a caller that already holds the lstat of `path`. */
export function assertRealDir(stat: Stats, path: string, dev: number, volume?: string): DirStat {
  const hint = volume !== undefined ? MOVE_IT_AWAY : '';
  if (stat.isSymbolicLink()) throw refused(path, 'is a symbolic link, not a directory', volume, hint);
  if (!stat.isDirectory()) throw refused(path, 'is not a directory', volume, hint);
  if (stat.dev !== dev) throw refused(path, 'is on another filesystem than the store (a mount point)', volume);
  return { dev: stat.dev, ino: stat.ino, mode: stat.mode, uid: stat.uid, gid: stat.gid };
}

/** Applies mode (and owner) through a handle on the directory itself, so a swapped-in symlink is never followed. */
export async function setDirAttributes(fs: FsPort, path: string, mode: number, owner?: { uid: number; gid: number }): Promise<void> {
  const handle = await fs.open(path, DIR_FLAGS).catch((err: unknown) => {
    if (errnoCode(err) === 'ELOOP' || errnoCode(err) === 'ENOTDIR') throw refused(path, 'is not a real directory');
    throw err;
  });
  try {
    if (owner) await handle.chown(owner.uid, owner.gid);
    // After chown: chown clears set-id bits the caller may have asked for.
    await handle.chmod(mode);
  } finally {
    await handle.close();
  }
}

/** A mount point a tree's delete left alone, with all beneath it and the directories above it. */
export interface LeftMount {
  path: string;
  /** Another filesystem (a device of its own), or a bind mount of a directory or file of the same one. */
  kind: 'filesystem' | 'bind';
}

/** What was left and why, for a log line: `PATH in place: another filesystem is mounted there; ...`. */
export function describeLeftMounts(left: readonly LeftMount[]): string {
  return left.map(({ path, kind }) => `${path} in place: ${kind === 'filesystem'
    ? 'another filesystem is mounted there'
    : 'it is a bind mount (a directory or file of this filesystem from elsewhere is mounted there)'}`).join('; ');
}

/**
 * Deletes a tree that stowage itself moved aside. Symlinks inside are removed as links, never
 * followed; a mount point (another filesystem, or a bind mount of this one) is left alone with
 * everything beneath it, and reported. On the real filesystem the walk goes through directory
 * descriptors (see removeTreeByDescriptors), so a mount made inside the tree while it runs is
 * never walked into either.
 */
export async function removeTreeOnDevice(fs: FsPort, path: string, dev: number): Promise<LeftMount[]> {
  const mounts = await MountPointsBelow.read(fs, path);
  if (fs instanceof LocalFirstFs || fs.open === fsp.open) {
    const left = await removeTreeByDescriptors(fs, path, dev, mounts);
    if (left) return left;
    // No mount ids in /proc: walk by path, which tells a mount made after the table was read
    // only when it cannot be removed (EBUSY), possibly after what it showed was deleted.
  }
  return removeTreeByPath(fs, path, dev, mounts);
}

async function removeTreeByPath(fs: FsPort, path: string, dev: number, mounts: MountPointsBelow): Promise<LeftMount[]> {
  const left: LeftMount[] = [];
  // EBUSY: a mount point the table did not list (made after it was read); its name stays.
  const leave = (current: string | Buffer) => (err: unknown): boolean => {
    if (errnoCode(err) === 'ENOENT') return true;
    if (errnoCode(err) !== 'EBUSY') throw err;
    left.push({ path: current.toString(), kind: 'bind' });
    return false;
  };
  const walk = async (current: string | Buffer): Promise<boolean> => {
    const stat = await fs.lstat(current).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (!stat) return true;
    const other = stat.dev !== dev;
    if ((other && stat.isDirectory()) || mounts.at(current)) {
      left.push({ path: current.toString(), kind: other ? 'filesystem' : 'bind' });
      return false;
    }
    if (!stat.isDirectory()) return fs.unlink(current).then(() => true, leave(current));
    let complete = true;
    // Names as bytes: one that is not UTF-8 (a file from another system) read as a string names
    // no file, and the directory could never be removed.
    for (const entry of await fs.readdir(current, { encoding: 'buffer' })) {
      if (!(await walk(childPath(current, entry)))) complete = false;
    }
    return complete ? fs.rmdir(current).then(() => true, leave(current)) : false;
  };
  await walk(path);
  return left;
}

/**
 * The internal directories of one store, each checked at start and re-checked by identity right
 * before anything in it is moved or deleted.
 */
export class CheckedDirs {
  private readonly known = new Map<string, DirIdentity>();

  constructor(private readonly fs: FsPort, private dev = -1) {}

  get device(): number {
    return this.dev;
  }

  setDevice(dev: number): void {
    this.dev = dev;
  }

  /** Creates `path` (mode 0700) if missing, then checks and remembers it. */
  async ensure(path: string, mode = 0o700): Promise<DirIdentity> {
    await this.fs.mkdir(path, { mode }).catch((err: unknown) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
    const { dev, ino } = await realDirOn(this.fs, path, this.dev);
    this.known.set(path, { dev, ino });
    return { dev, ino };
  }

  /** Throws unless `path` is still the directory that `ensure` checked. */
  async recheck(path: string, volume?: string): Promise<void> {
    const remembered = this.known.get(path);
    if (!remembered) throw refused(path, 'was never checked', volume);
    const now = await realDirOn(this.fs, path, this.dev, volume);
    if (now.ino !== remembered.ino) throw refused(path, 'was replaced since stowage started', volume);
  }
}
