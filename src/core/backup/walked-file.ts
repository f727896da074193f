/**
 * Opening, for a backup, a file the walk found: the name may have changed since (a container
 * writes its volume while it is read), so what is opened is checked before it is read.
 */
import { closeSync, constants, fstatSync, openSync, type BigIntStats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { VANISHED } from './walk.js';

/** O_NONBLOCK: a FIFO swapped in for a file between lstat and open must not hang the backup. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;

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
  const kind = stat.isDirectory() ? 'a directory' : stat.isFIFO() ? 'a FIFO' : stat.isSocket() ? 'a socket' : 'a device';
  warn(`${path}: was replaced by ${kind} while the backup read the tree; not in this backup`);
  return true;
}

/**
 * Opens a file the walk found (through its directory's descriptor, never following a symlink)
 * and checks with fstat that it is still a regular file: a device swapped in since the walk
 * must not be read (/dev/zero never ends), a FIFO must not pass for an empty file. Returns the
 * descriptor and that fstat, which describes what is read; undefined when the file is gone.
 */
export function openWalkedSync(abs: string | Buffer, path: string, warn: (message: string) => void): { fd: number; stat: BigIntStats } | undefined {
  let fd: number;
  try {
    fd = openSync(abs, READ_FLAGS);
  } catch (err) {
    if (changedWhileRead(err, path, warn)) return undefined;
    throw err;
  }
  const stat = fstatSync(fd, { bigint: true });
  if (!notRegularAnyMore(stat, path, warn)) return { fd, stat };
  closeSync(fd);
  return undefined;
}

/** openWalkedSync through the thread pool. */
export async function openWalked(abs: string | Buffer, path: string, warn: (message: string) => void): Promise<{ handle: FileHandle; stat: BigIntStats } | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(abs, READ_FLAGS);
  } catch (err) {
    if (changedWhileRead(err, path, warn)) return undefined;
    throw err;
  }
  const stat = await handle.stat({ bigint: true }).catch(async (err: unknown) => {
    await handle.close();
    throw err;
  });
  if (!notRegularAnyMore(stat, path, warn)) return { handle, stat };
  await handle.close();
  return undefined;
}
