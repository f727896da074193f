/**
 * Names reached through a directory's descriptor (`/proc/self/fd/N/name`: the kernel resolves
 * the name in that directory), as the backup walk reads a tree and a restore writes one: no
 * symlink swapped into the tree can lead either out of it, and no path grows past what the
 * kernel takes in one call.
 */
import { constants, existsSync } from 'node:fs';
import { ErrorCodes, StowageError } from '../errors.js';
import { fsPath } from './raw-names.js';

/** A directory opened for its names: never through a symlink. */
export const DIR_FLAGS = constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW;

/** `name` in the directory open as `fd`, for node:fs (bytes where the name is not UTF-8). */
export function nameInDir(fd: number, name: string): string | Buffer {
  return fsPath(`/proc/self/fd/${fd}/${name}`);
}

/** Refuses, saying why, where /proc is not mounted: `doing` needs it (e.g. "reading a volume for a backup"). */
export function assertProcFd(doing: string, why: string): void {
  if (!existsSync('/proc/self/fd')) throw new StowageError(ErrorCodes.NOT_SUPPORTED, `${doing} needs /proc: ${why}`);
}
