import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { createFileExclusive, readJsonFile, writeFileAtomic } from '../atomic-file.js';
import type { Clock } from '../clock.js';
import { ErrorCodes, StowageError, errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';

interface LockFile {
  owner: string;
  token: string;
  /** Cluster-clock ms after which anyone may break the lock (its holder died). */
  expiresAt: number;
}

export interface LockSettings {
  ttlMs: number;
  waitMs: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Cluster-wide locks by name on shared storage: exclusive hard links (atomic on NFS, GlusterFS
 * and local filesystems alike; no flock, which NFS without lockd refuses), an owner, and an
 * expiry on the shared clock so a dead holder cannot block everyone forever. A live holder
 * renews its lock while it works.
 */
export class ClusterLocks {
  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly settings: LockSettings,
  ) {}

  private pathOf(name: string): string {
    return join(this.dir, `${name}.lock`);
  }

  async withLock<T>(name: string, task: () => Promise<T>): Promise<T> {
    const path = this.pathOf(name);
    const token = await this.acquire(name, path);
    const renew = setInterval(() => {
      void this.renew(path, token).catch(() => undefined);
    }, Math.max(50, Math.floor(this.settings.ttlMs / 3)));
    try {
      return await task();
    } finally {
      clearInterval(renew);
      await this.release(path, token);
    }
  }

  private async acquire(name: string, path: string): Promise<string> {
    const deadline = Date.now() + this.settings.waitMs;
    let holder: LockFile | undefined;
    for (;;) {
      const token = randomBytes(8).toString('hex');
      const body: LockFile = { owner: this.nodeId, token, expiresAt: this.clock.now() + this.settings.ttlMs };
      if (await createFileExclusive(this.fs, path, JSON.stringify(body))) return token;
      holder = await this.read(path);
      if (holder && holder.expiresAt < this.clock.now()) {
        await this.breakExpired(path, holder);
        continue;
      }
      if (Date.now() > deadline) {
        throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
          `volume ${name} is locked by node ${holder?.owner ?? 'unknown'} (a create or remove of that name is running there); try again shortly`,
          { volume: name, node: holder?.owner });
      }
      await sleep(20 + Math.floor(Math.random() * 60));
    }
  }

  /** Moves an expired lock aside, making sure it is the one we judged expired and not a successor. */
  private async breakExpired(path: string, expired: LockFile): Promise<void> {
    const aside = `${path}.broken-${randomBytes(6).toString('hex')}`;
    try {
      await this.fs.rename(path, aside);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    const moved = await this.read(aside);
    if (moved && moved.token !== expired.token) {
      // Someone else broke it first and took a fresh lock, which we just moved: put it back.
      await this.fs.link(aside, path).catch(() => undefined);
    }
    await this.fs.unlink(aside).catch(() => undefined);
  }

  private async renew(path: string, token: string): Promise<void> {
    const current = await this.read(path);
    if (current?.token !== token) return;
    await writeFileAtomic(this.fs, path, JSON.stringify({ ...current, expiresAt: this.clock.now() + this.settings.ttlMs }));
  }

  private async release(path: string, token: string): Promise<void> {
    const current = await this.read(path);
    if (current?.token === token) await this.fs.unlink(path).catch(() => undefined);
  }

  private async read(path: string): Promise<LockFile | undefined> {
    try {
      return (await readJsonFile(this.fs, path)) as LockFile | undefined;
    } catch {
      // A torn or foreign file: treat it as held until it expires by mtime is not possible, so as absent.
      return undefined;
    }
  }
}
