/**
 * systemd socket activation (sd_listen_fds(3)): systemd, or `systemd-socket-activate`, binds the
 * socket itself, passes it as fd 3 and says so in LISTEN_PID and LISTEN_FDS.
 */
import { readFile, readlink } from 'node:fs/promises';
import { resolve } from 'node:path';
import { ErrorCodes, StowageError } from '../core/errors.js';

/** The first passed descriptor, SD_LISTEN_FDS_START. */
export const LISTEN_FDS_START = 3;

export interface InheritedSocket {
  fd: number;
  /** The path it is bound to, when the kernel tells (undefined for an abstract or unbound socket). */
  path: string | undefined;
  /** How many descriptors were passed; only the first is served. */
  count: number;
}

/**
 * The descriptor systemd passed to this process, or undefined when none was. The variables are
 * removed either way, as sd_listen_fds(1) does, so that no program the daemon runs mistakes them
 * for its own; a LISTEN_PID naming another process (a wrapper that did not exec) means the
 * descriptors were not meant for this one.
 */
export function takeListenFds(env: NodeJS.ProcessEnv, pid: number): { fd: number; count: number } | undefined {
  const listenPid = env.LISTEN_PID;
  const listenFds = env.LISTEN_FDS;
  delete env.LISTEN_PID;
  delete env.LISTEN_FDS;
  delete env.LISTEN_FDNAMES;
  if (listenPid === undefined || listenFds === undefined || Number(listenPid) !== pid) return undefined;
  const count = Number(listenFds);
  if (!Number.isInteger(count) || count < 1) return undefined;
  return { fd: LISTEN_FDS_START, count };
}

/** One line of /proc/net/unix: `Num RefCount Protocol Flags Type St Inode [Path]`. */
interface UnixSocketLine {
  flags: number;
  type: number;
  inode: string;
  path: string | undefined;
}

const SOCK_STREAM = 1;
/** __SO_ACCEPTCON: the socket listens. */
const ACCEPTCON = 0x10000;

export function parseProcNetUnix(text: string): UnixSocketLine[] {
  return text.split('\n').slice(1).flatMap((line) => {
    const fields = line.trim().split(/\s+/);
    if (fields.length < 7) return [];
    const path = fields.slice(7).join(' ');
    return [{ flags: parseInt(fields[3]!, 16), type: parseInt(fields[4]!, 16), inode: fields[6]!, path: path === '' ? undefined : path }];
  });
}

const refuse = (message: string) => new StowageError(ErrorCodes.INVALID_OPTION, message);

/**
 * Checks that `fd` is a listening unix stream socket and learns the path it is bound to from
 * /proc/net/unix, which lists this network namespace's unix sockets by inode.
 */
export async function describeInheritedSocket(fd: number, count: number): Promise<InheritedSocket> {
  const target = await readlink(`/proc/self/fd/${fd}`).catch(() => undefined);
  const inode = target?.match(/^socket:\[(\d+)\]$/)?.[1];
  if (inode === undefined) {
    throw refuse(`LISTEN_FDS says systemd passed a socket as fd ${fd}, but fd ${fd} is ${target ?? 'not open'}; ` +
      'check the ListenStream= of the .socket unit');
  }
  const sockets = parseProcNetUnix(await readFile('/proc/net/unix', 'utf8'));
  const own = sockets.find((s) => s.inode === inode);
  if (!own) {
    throw refuse(`the socket systemd passed as fd ${fd} is not a unix socket; ` +
      'the .socket unit must say ListenStream=/path/to/NAME.sock (Docker finds legacy plugins by a socket file)');
  }
  if (own.type !== SOCK_STREAM) {
    throw refuse(`the unix socket systemd passed as fd ${fd} is not a stream socket; use ListenStream=, not ListenDatagram= or ListenSequentialPacket=`);
  }
  if ((own.flags & ACCEPTCON) === 0) {
    throw refuse(`the unix socket systemd passed as fd ${fd} does not listen; with Accept=yes systemd passes connections, use Accept=no`);
  }
  // Paths here are as bound, in whatever mount namespace: another namespace's socket of the same
  // path is not a rival, so only this socket's own line is read.
  const path = own.path === undefined || own.path.startsWith('@') ? undefined : own.path;
  return { fd, path, count };
}

/** Refuses a socket bound elsewhere than --socket says: the CLI and the plugin name would disagree. */
export function checkInheritedPath(inherited: InheritedSocket, socket: string): void {
  if (inherited.path !== undefined && resolve(inherited.path) !== resolve(socket)) {
    throw refuse(`systemd passed a socket bound to ${inherited.path}, but this daemon's socket is ${socket}; ` +
      'make --socket (STOWAGE_SOCKET) and the ListenStream= of the .socket unit name the same path');
  }
}
