import { randomBytes } from 'node:crypto';
import * as fsp from 'node:fs/promises';
import { createConnection, createServer, type Server } from 'node:net';
import { join } from 'node:path';
import { ErrorCodes, StowageError, describeCause, errnoCode } from './errors.js';
import type { Logger } from './logger.js';
import { processExists } from './process-exists.js';
import { prepareStateRoot } from './state-root.js';

/** One daemon per state root: two would each rewrite the mount records from their own memory. */
export interface RootLock {
  acquire(): Promise<void>;
  release(): Promise<void>;
}

/** Longest unix socket path Linux accepts (sun_path is 108 bytes with the terminating NUL). */
const MAX_SOCKET_PATH = 107;

/** Whether something accepts connections on `path`, and the pid a stowage holder says it has. */
function probe(path: string): Promise<{ live: boolean; pid?: number }> {
  return new Promise((resolve) => {
    const conn = createConnection(path);
    let text = '';
    let live = false;
    const done = () => {
      conn.destroy();
      const pid = Number.parseInt(text, 10);
      resolve({ live, pid: Number.isInteger(pid) && pid > 0 ? pid : undefined });
    };
    conn.setTimeout(1_000, done);
    conn.once('connect', () => { live = true; });
    conn.on('data', (d: Buffer) => { text += d.toString('utf8').slice(0, 20); });
    conn.once('end', done);
    conn.once('error', done);
  });
}

async function accepts(path: string): Promise<boolean> {
  return (await probe(path)).live;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Serialises lock takeovers among starters on this machine: an abstract unix socket (no file;
 * the kernel frees it when its holder dies) named after the root directory's identity.
 */
async function withTakeoverGuard<T>(root: string, task: () => Promise<T>): Promise<T> {
  const { dev, ino } = await fsp.stat(root);
  const name = `\0stowage-root-lock-${dev}-${ino}`;
  const deadline = Date.now() + 10_000;
  for (;;) {
    const guard = createServer((conn) => conn.destroy());
    const bound = await new Promise<boolean>((resolve, reject) => {
      guard.once('error', (err) => (errnoCode(err) === 'EADDRINUSE' ? resolve(false) : reject(err)));
      guard.listen(name, () => resolve(true));
    });
    if (bound) {
      try {
        return await task();
      } finally {
        guard.close();
      }
    }
    if (Date.now() > deadline) throw new StowageError(ErrorCodes.INTERNAL, `another daemon keeps starting on ${root}; try again`);
    await sleep(5 + Math.floor(Math.random() * 20));
  }
}

function listen(path: string): Promise<Server> {
  // Private from the moment it exists: nobody else needs to connect.
  const previous = process.umask(0o177);
  try {
    return new Promise<Server>((resolve, reject) => {
      // Tells a starting daemon who holds the lock (the pid as seen in the holder's namespace).
      const server = createServer((conn) => conn.end(`${process.pid}\n`));
      server.once('error', reject);
      server.listen(path, () => resolve(server));
    });
  } finally {
    process.umask(previous);
  }
}

/**
 * The lock is a unix socket at `<root>/daemon.lock` that the daemon listens on. The kernel
 * closes it when the daemon dies, however it dies, so a starting daemon asks the socket rather
 * than trusting a PID (in a container the successor often gets the very same PID): a
 * connection accepted means a live holder; refused means the holder died.
 *
 * Taking the lock is a hard link of our own listening socket into place (exclusive). Starters
 * on one machine take turns (an abstract socket guards the takeover), and a dead holder's
 * socket is moved aside and checked again before it is dropped, so of daemons starting at
 * once only one wins: a socket moved aside that turns out live is put back.
 */
export class SocketRootLock implements RootLock {
  private readonly path: string;
  private server?: Server;
  private ino?: number;

  constructor(private readonly root: string, private readonly log?: Logger) {
    this.path = join(root, 'daemon.lock');
  }

  private refuse(pid?: number): never {
    throw new StowageError(ErrorCodes.INVALID_OPTION,
      pid === process.pid
        ? `another stowage instance in this process uses the state root ${this.root}; close it first`
        : `another stowage daemon${pid ? ` (pid ${pid})` : ''} uses the state root ${this.root}; stop it`,
      { remedies: [{ action: 'separate-root' }] });
  }

  async acquire(): Promise<void> {
    await prepareStateRoot(this.root, this.log);
    const temp = join(this.root, `.daemon.lock.${randomBytes(6).toString('hex')}`);
    if (Buffer.byteLength(temp) > MAX_SOCKET_PATH) {
      throw new StowageError(ErrorCodes.INVALID_OPTION,
        `the state root ${this.root} is too long: the daemon's lock socket needs a path of at most ${MAX_SOCKET_PATH - 22} bytes`);
    }
    const server = await listen(temp).catch((err: unknown) => {
      throw new StowageError(ErrorCodes.INTERNAL, `cannot create the lock ${temp}: ${describeCause(err)}`, { cause: err });
    });
    server.unref();
    try {
      await withTakeoverGuard(this.root, async () => {
        for (let attempt = 0; attempt < 5; attempt += 1) {
          try {
            await fsp.link(temp, this.path);
            this.ino = (await fsp.stat(this.path)).ino;
            this.server = server;
            return;
          } catch (err) {
            if (errnoCode(err) !== 'EEXIST') throw err;
          }
          const holder = await probe(this.path);
          if (holder.live) this.refuse(holder.pid);
          await this.moveAsideIfDead();
        }
        throw new StowageError(ErrorCodes.INTERNAL, `could not take the lock ${this.path}; remove it if no daemon runs`);
      });
    } catch (err) {
      await new Promise<void>((resolve) => server.close(() => resolve()));
      throw err;
    } finally {
      // Our lock lives on under its real name (a hard link to the same socket).
      await fsp.unlink(temp).catch(() => undefined);
    }
  }

  private async moveAsideIfDead(): Promise<void> {
    const stat = await fsp.lstat(this.path).catch(() => undefined);
    if (stat && !stat.isSocket()) {
      // The pid file of an older version: it may still run (an upgrade in place).
      const pid = Number.parseInt(await fsp.readFile(this.path, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(pid) && pid > 0 && pid !== process.pid && processExists(pid)) this.refuse(pid);
    }
    const aside = join(this.root, `.daemon.lock.dead-${randomBytes(6).toString('hex')}`);
    try {
      await fsp.rename(this.path, aside);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    if (stat?.isSocket() !== false && await accepts(aside)) {
      // A live daemon took the lock between our check and the move: give it back.
      await fsp.link(aside, this.path).catch(() => undefined);
    }
    await fsp.unlink(aside).catch(() => undefined);
  }

  async release(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    const current = await fsp.stat(this.path).catch(() => undefined);
    if (current && current.ino === this.ino) await fsp.unlink(this.path).catch(() => undefined);
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}


/** For in-memory stacks (unit tests on memfs), where no other daemon can share the root. */
export class NoRootLock implements RootLock {
  async acquire(): Promise<void> {}
  async release(): Promise<void> {}
}
