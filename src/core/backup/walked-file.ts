/**
 * Opening, for a backup, a file the walk found: the name may have changed since (a container
 * writes its volume while it is read), so what is opened is checked before it is read.
 */
import { closeSync, constants, fstatSync, openSync, type BigIntStats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { VANISHED } from './walk.js';

/**
 * Linux's O_PATH (x86-64 and arm64; Node does not export it): a descriptor that names an inode
 * without opening it. Opening a device runs its driver (a watchdog device arms the host's
 * watchdog, a tape rewinds, a tty can become the daemon's terminal), and a container allowed
 * mknod (Docker's default) can swap a device node in for a file between the walk's lstat and
 * the open: so the name is pinned with O_PATH, checked with fstat, and only a regular file is
 * opened, through /proc/self/fd, which reopens that very inode.
 */
const O_PATH = 0o10000000;
const PIN_FLAGS = O_PATH | constants.O_NOFOLLOW;
/** O_NONBLOCK: a FIFO must never hang the backup; O_NOCTTY: nothing opened becomes the daemon's terminal. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;
const reopenPath = (fd: number) => `/proc/self/fd/${fd}`;

/**
 * Whether `err`, from opening or reading a name the walk found, says the name changed since:
 * removed or renamed, or replaced by a symlink or by something that is not what it was. It is
 * then left out, with a warning. Anything else is the caller's to throw.
 */
export function changedWhileRead(err: unknown, path: string, warn: (message: string) => void): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') {
    warn(`${path}: ${VANISHED}`);
    return true;
  }
  if (code === 'ELOOP' || code === 'EINVAL') {
    warn(`${path}: was replaced by ${code === 'ELOOP' ? 'a symlink' : 'something other than a symlink'} while the backup read the tree; not in this backup`);
    return true;
  }
  return false;
}

function notRegularAnyMore(stat: BigIntStats, path: string, warn: (message: string) => void): boolean {
  if (stat.isFile()) return false;
  const kind = stat.isDirectory() ? 'a directory' : stat.isFIFO() ? 'a FIFO' : stat.isSocket() ? 'a socket'
    : stat.isSymbolicLink() ? 'a symlink' : 'a device';
  warn(`${path}: was replaced by ${kind} while the backup read the tree; not in this backup`);
  return true;
}

/**
 * Opens a file the walk found (through its directory's descriptor, never following a symlink)
 * once fstat says it is still a regular file: a device swapped in since the walk must be
 * neither opened (see O_PATH) nor read (/dev/zero never ends), a FIFO must not pass for an
 * empty file. Returns the descriptor and that fstat, which describes what is read; undefined
 * when the file is gone or is something else now.
 */
export function openWalkedSync(abs: string | Buffer, path: string, warn: (message: string) => void): { fd: number; stat: BigIntStats } | undefined {
  let pin: number;
  try {
    pin = openSync(abs, PIN_FLAGS);
  } catch (err) {
    if (changedWhileRead(err, path, warn)) return undefined;
    throw err;
  }
  try {
    const stat = fstatSync(pin, { bigint: true });
    if (notRegularAnyMore(stat, path, warn)) return undefined;
    return { fd: openSync(reopenPath(pin), READ_FLAGS), stat };
  } finally {
    closeSync(pin);
  }
}

/** openWalkedSync through the thread pool. */
export async function openWalked(abs: string | Buffer, path: string, warn: (message: string) => void): Promise<{ handle: FileHandle; stat: BigIntStats } | undefined> {
  let pin: FileHandle;
  try {
    pin = await open(abs, PIN_FLAGS);
  } catch (err) {
    if (changedWhileRead(err, path, warn)) return undefined;
    throw err;
  }
  try {
    const stat = await pin.stat({ bigint: true });
    if (notRegularAnyMore(stat, path, warn)) return undefined;
    return { handle: await open(reopenPath(pin.fd), READ_FLAGS), stat };
  } finally {
    await pin.close();
  }
}
