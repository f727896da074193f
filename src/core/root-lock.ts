import { join } from 'node:path';
import { ErrorCodes, StowageError, errnoCode } from './errors.js';
import type { FsPort } from './fs-port.js';

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return errnoCode(err) === 'EPERM';
  }
}

/**
 * One daemon per state root: two would each rewrite the mount records from their own memory
 * and lose each other's mounts. The lock is a pid file; a dead holder's lock is taken over.
 */
export class RootLock {
  private readonly path: string;
  private held = false;

  constructor(private readonly fs: FsPort, root: string) {
    this.path = join(root, 'daemon.lock');
  }

  async acquire(): Promise<void> {
    await this.fs.mkdir(join(this.path, '..'), { recursive: true });
    for (let attempt = 0; attempt < 3; attempt += 1) {
      try {
        await this.fs.writeFile(this.path, `${process.pid}\n`, { flag: 'wx' });
        this.held = true;
        return;
      } catch (err) {
        if (errnoCode(err) !== 'EEXIST') throw err;
      }
      const holder = Number.parseInt(await this.fs.readFile(this.path, 'utf8').catch(() => ''), 10);
      if (Number.isInteger(holder) && holder > 0 && alive(holder)) {
        throw new StowageError(ErrorCodes.INVALID_OPTION,
          `another stowage daemon (pid ${holder}) uses the state root ${join(this.path, '..')}; ` +
          `stop it or give this one its own --root`);
      }
      // The holder died without releasing the lock (crash, SIGKILL): take it over.
      await this.fs.unlink(this.path).catch(() => undefined);
    }
    throw new StowageError(ErrorCodes.INTERNAL, `could not take the lock ${this.path}; remove it if no daemon runs`);
  }

  async release(): Promise<void> {
    if (!this.held) return;
    this.held = false;
    await this.fs.unlink(this.path).catch(() => undefined);
  }
}
