/**
 * Opening only what is a regular file, without ever opening anything else: a device's open runs
 * its driver (a watchdog device arms the host's watchdog, a tape rewinds, a tty can become the
 * process's terminal). The name is pinned with O_PATH (a descriptor that names an inode without
 * opening it, never following a symlink), checked with fstat, and only a regular file is opened,
 * through /proc/self/fd, which reopens that very inode.
 */
import { closeSync, constants, fstatSync, openSync, type BigIntStats } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { ErrorCodes, StowageError } from './errors.js';

/** Linux's O_PATH (x86-64 and arm64; Node does not export it). */
const O_PATH = 0o10000000;
const PIN_FLAGS = O_PATH | constants.O_NOFOLLOW;
/** O_NONBLOCK: nothing opened waits (a FIFO is never opened, but a file with mandatory locks could). O_NOCTTY: nothing becomes the process's terminal. */
const READ_REGULAR_FLAGS = constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY;
const reopenPath = (fd: number) => `/proc/self/fd/${fd}`;

/**
 * The flags the pinned inode is reopened with: the caller's access mode and modifiers, without
 * what only makes sense for a name (/proc/self/fd/N is a magic link, which O_NOFOLLOW refuses;
 * creating and truncating are for files that do not exist yet), and always O_NOCTTY.
 */
function reopenFlags(flags: number): number {
  return (flags & ~(constants.O_NOFOLLOW | constants.O_CREAT | constants.O_EXCL | constants.O_TRUNC)) | constants.O_NOCTTY;
}

/**
 * The reopen through /proc/self/fd/N found nothing: the pinned inode is there (held by the pin,
 * even if unlinked meanwhile), so /proc is not mounted. Said as that, never as ENOENT, which
 * every caller reads as "no such file" (a registry entry, a repository's config).
 */
function withoutProc(path: string | Buffer, err: unknown): unknown {
  if ((err as NodeJS.ErrnoException).code !== 'ENOENT') return err;
  return new StowageError(ErrorCodes.NOT_SUPPORTED, `opening ${String(path)} needs /proc mounted: a file is pinned first and reopened ` +
    'through /proc/self/fd, so that nothing but a regular file is ever opened', { cause: err });
}

/** What is at the name when it is not a regular file (a symlink, a device, ...): never opened. */
export interface NotRegular {
  other: BigIntStats;
}

/** Opens `path` if it is a regular file; errors of the lookup itself (ENOENT, ...) are thrown as they are. */
export function openRegularFileSync(path: string | Buffer, flags = READ_REGULAR_FLAGS): { fd: number; stat: BigIntStats } | NotRegular {
  const pin = openSync(path, PIN_FLAGS);
  try {
    const stat = fstatSync(pin, { bigint: true });
    if (!stat.isFile()) return { other: stat };
    try {
      return { fd: openSync(reopenPath(pin), reopenFlags(flags)), stat };
    } catch (err) {
      throw withoutProc(path, err);
    }
  } finally {
    closeSync(pin);
  }
}

/** openRegularFileSync through the thread pool. */
export async function openRegularFile(path: string | Buffer, flags = READ_REGULAR_FLAGS): Promise<{ handle: FileHandle; stat: BigIntStats } | NotRegular> {
  const pin = await open(path, PIN_FLAGS);
  try {
    const stat = await pin.stat({ bigint: true });
    if (!stat.isFile()) return { other: stat };
    try {
      return { handle: await open(reopenPath(pin.fd), reopenFlags(flags)), stat };
    } catch (err) {
      throw withoutProc(path, err);
    }
  } finally {
    await pin.close();
  }
}
