/**
 * Opening, for a backup, a file the walk found: the name may have changed since (a container
 * writes its volume while it is read), so what is opened is checked before it is read.
 */
import type { BigIntStats } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import { openRegularFile, openRegularFileSync } from '../open-regular.js';
import { VANISHED } from './walk.js';

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

/** Says what a walked file was replaced by; undefined, for the caller to return. */
function notRegularAnyMore(stat: BigIntStats, path: string, warn: (message: string) => void): undefined {
  const kind = stat.isDirectory() ? 'a directory' : stat.isFIFO() ? 'a FIFO' : stat.isSocket() ? 'a socket'
    : stat.isSymbolicLink() ? 'a symlink' : 'a device';
  warn(`${path}: was replaced by ${kind} while the backup read the tree; not in this backup`);
  return undefined;
}

/**
 * Opens a file the walk found (through its directory's descriptor, never following a symlink)
 * once fstat says it is still a regular file: a device swapped in since the walk must be
 * neither opened (see open-regular.ts) nor read (/dev/zero never ends), a FIFO must not pass for an
 * empty file. Returns the descriptor and that fstat, which describes what is read; undefined
 * when the file is gone or is something else now.
 */
export function openWalkedSync(abs: string | Buffer, path: string, warn: (message: string) => void): { fd: number; stat: BigIntStats } | undefined {
  let opened;
  try {
    opened = openRegularFileSync(abs);
  } catch (err) {
    if (changedWhileRead(err, path, warn)) return undefined;
    throw err;
  }
  if ('other' in opened) return notRegularAnyMore(opened.other, path, warn);
  return opened;
}

/** openWalkedSync through the thread pool. */
export async function openWalked(abs: string | Buffer, path: string, warn: (message: string) => void): Promise<{ handle: FileHandle; stat: BigIntStats } | undefined> {
  let opened;
  try {
    opened = await openRegularFile(abs);
  } catch (err) {
    if (changedWhileRead(err, path, warn)) return undefined;
    throw err;
  }
  if ('other' in opened) return notRegularAnyMore(opened.other, path, warn);
  return opened;
}
