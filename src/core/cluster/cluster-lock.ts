import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { z } from 'zod';
import { createFileExclusive, readFileNoFollow, writeFileAtomic } from '../atomic-file.js';
import type { Clock } from '../clock.js';
import { ErrorCodes, StowageError, errnoCode, isStowageError } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { isValidNodeId } from '../names.js';
import { parseRecordText } from '../schema/parse-record.js';

const lockSchema = z.object({
  owner: z.string().refine(isValidNodeId, 'not a valid node id'),
  token: z.string().regex(/^[0-9a-f]{1,64}$/),
  /** Cluster-clock ms after which anyone may break the lock (its holder died). */
  expiresAt: z.number().finite(),
  /** The holder's daemon run; absent in locks of older versions. */
  run: z.string().regex(/^[0-9a-f]{1,64}$/).optional(),
});

type LockFile = z.infer<typeof lockSchema>;

/** What a lock file holds: a valid lock, a file that is not one (torn, foreign), or nothing. */
type LockState = { kind: 'valid'; lock: LockFile } | { kind: 'invalid'; mtimeMs: number; problem: string } | { kind: 'absent' };

export interface LockSettings {
  ttlMs: number;
  waitMs: number;
}

/** Lock files need no fsync: a lock that survived a power loss would only block others. */
const QUICK = { durable: false } as const;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * Cluster-wide locks by name on shared storage: exclusive hard links (atomic on NFS, GlusterFS
 * and local filesystems alike; no flock, which NFS without lockd refuses), an owner, and an
 * expiry on the shared clock so a dead holder cannot block everyone forever. A live holder
 * renews its lock while it works.
 */
export class ClusterLocks {
  /** Tells this daemon run's locks from those a crashed earlier run of the same node left. */
  private readonly run = randomBytes(8).toString('hex');

  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly settings: LockSettings,
    private readonly log?: (message: string) => void,
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
      const body: LockFile = { owner: this.nodeId, token, expiresAt: this.clock.now() + this.settings.ttlMs, run: this.run };
      if (await createFileExclusive(this.fs, path, JSON.stringify(body), QUICK)) return token;
      const state = await this.inspect(path);
      holder = state.kind === 'valid' ? state.lock : undefined;
      if (state.kind === 'valid' && (state.lock.expiresAt < this.clock.now() || this.leftByEarlierRun(state.lock))) {
        await this.breakExpired(path, state.lock.token);
        continue;
      }
      // Not a lock we can read: it blocks like one until it is as old as a lock's lifetime.
      if (state.kind === 'invalid' && state.mtimeMs + this.settings.ttlMs < this.clock.now()) {
        this.log?.(`breaking the unreadable lock file ${path} (${state.problem})`);
        await this.breakExpired(path, undefined);
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

  /**
   * One daemon runs per node id, so a lock of this node from another run was left by a run that
   * died (kill -9 mid-create): waiting out its expiry would only stall the restarted daemon.
   */
  private leftByEarlierRun(lock: LockFile): boolean {
    return lock.owner === this.nodeId && lock.run !== undefined && lock.run !== this.run;
  }

  /** Moves an expired lock aside, making sure it is the one we judged expired and not a successor. */
  private async breakExpired(path: string, expiredToken: string | undefined): Promise<void> {
    const aside = `${path}.broken-${randomBytes(6).toString('hex')}`;
    try {
      await this.fs.rename(path, aside);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    const moved = await this.read(aside);
    if (moved && moved.token !== expiredToken) {
      // Someone else broke it first and took a fresh lock, which we just moved: put it back.
      await this.fs.link(aside, path).catch(() => undefined);
    }
    await this.fs.unlink(aside).catch(() => undefined);
  }

  private async renew(path: string, token: string): Promise<void> {
    const current = await this.read(path);
    if (current?.token !== token) return;
    await writeFileAtomic(this.fs, path, JSON.stringify({ ...current, expiresAt: this.clock.now() + this.settings.ttlMs }), QUICK);
  }

  private async release(path: string, token: string): Promise<void> {
    const current = await this.read(path);
    if (current?.token === token) await this.fs.unlink(path).catch(() => undefined);
  }

  private async read(path: string): Promise<LockFile | undefined> {
    const state = await this.inspect(path);
    return state.kind === 'valid' ? state.lock : undefined;
  }

  private async inspect(path: string): Promise<LockState> {
    let text: string;
    let mtimeMs: number;
    try {
      const [content, stat] = await Promise.all([readFileNoFollow(this.fs, path), this.fs.lstat(path)]);
      if (content === undefined) return { kind: 'absent' };
      [text, mtimeMs] = [content, stat.mtimeMs];
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return { kind: 'absent' };
      if (isStowageError(err, ErrorCodes.STATE_CORRUPT)) return { kind: 'invalid', mtimeMs: 0, problem: err.message };
      throw err;
    }
    try {
      return { kind: 'valid', lock: parseRecordText(lockSchema, text, `lock file ${path}`) };
    } catch (err) {
      return { kind: 'invalid', mtimeMs, problem: (err as Error).message };
    }
  }
}
