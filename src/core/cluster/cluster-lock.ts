import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { createFileExclusive, readFileNoFollow } from '../atomic-file.js';
import type { Clock } from '../clock.js';
import { ErrorCodes, StowageError, asStorageFull, describeCause, errnoCode, isStowageError, messageOf } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { openRegularOn } from '../local-fs.js';
import { isValidNodeId } from '../names.js';
import { parseRecordText } from '../schema/parse-record.js';
import { LockLease, type Lease } from './lease.js';
import { openCheckedDir } from './node-dir.js';
import { randomHex } from '../random-hex.js';

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
type LockState =
  | { kind: 'valid'; lock: LockFile; mtimeMs: number; file?: JudgedFile }
  | { kind: 'invalid'; mtimeMs: number; problem: string; empty?: boolean; file?: JudgedFile }
  | { kind: 'absent' };

/**
 * The lock file a judgement was made on. Its inode number alone does not name it: a filesystem
 * may give the number of a lock just broken to the next one made; its time of change does.
 */
interface JudgedFile {
  dev: number;
  ino: number;
  mtimeMs: number;
}

export interface LockSettings {
  ttlMs: number;
  waitMs: number;
}

/** A lock this process holds: the inode it created (renewals write only there) and its lease. */
interface Held {
  /** Through the descriptor of the locks directory opened for this hold. */
  path: string;
  /** The path people read in messages. */
  shown: string;
  body: LockFile;
  dev: number;
  ino: number;
  lease: LockLease;
  released: boolean;
}

/**
 * Lock files need no fsync: a lock that survived a power loss would only block others. A torn
 * one (seen while being written) reads as invalid, which blocks like a lock.
 */
const QUICK = { durable: false, tornIsHarmless: true } as const;
/**
 * Lock files are padded to one length (JSON allows trailing blanks), so a renewal rewrites the
 * same bytes in place and the file never shrinks or grows under a reader.
 */
const LOCK_BYTES = 256;
/**
 * A lock file created in place (O_EXCL on a local filesystem) is empty until its writer fills it,
 * microseconds later; one still empty after this long was left by a writer killed in between.
 */
const EMPTY_GRACE_MS = 2_000;
const OPEN_OWN = constants.O_RDWR | constants.O_NOFOLLOW;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function encode(lock: LockFile): string {
  return JSON.stringify(lock).padEnd(LOCK_BYTES, ' ');
}

function sameFile(stat: { dev: number; ino: number }, held: { dev: number; ino: number }): boolean {
  return stat.dev === held.dev && stat.ino === held.ino;
}

/**
 * Cluster-wide locks by name on shared storage: exclusive hard links (atomic on NFS, GlusterFS
 * and local filesystems alike; no flock, which NFS without lockd refuses), an owner, and an
 * expiry on the shared clock so a dead holder cannot block everyone forever.
 *
 * A live holder renews its lock while it works, and the task gets a lease that says whether it
 * still holds it. A renewal never replaces a file: it rewrites the expiry inside the very inode
 * the holder created (opened without following symlinks, checked by device and inode number
 * before writing, and the path checked again after), so a holder that lapsed cannot overwrite a
 * successor's lock, and it writes only while its lease holds, so no one can be breaking it then.
 */
export class ClusterLocks {
  /** Tells this daemon run's locks from those a crashed earlier run of the same node left. */
  private readonly run = randomBytes(8).toString('hex');
  /** The lease ends this long before the lock file's expiry: room for clock offsets and the step after a check. */
  private readonly marginMs: number;

  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly nodeId: string,
    private readonly clock: Clock,
    private readonly settings: LockSettings,
    private readonly log?: (message: string) => void,
  ) {
    this.marginMs = Math.floor(settings.ttlMs / 5);
  }

  private pathOf(name: string): string {
    return join(this.dir, `${name}.lock`);
  }

  /**
   * Whether a mount of `name` that has already made its node's marker must take the name's lock
   * before it answers: true while anyone holds the lock (or is making it). A remove holds it from
   * before it reads the markers until it has removed the volume, so with no lock there, a remove
   * elsewhere either ended before this check (the mount then finds no volume) or takes the lock
   * after it, reads the marker after that, and is refused.
   */
  async mountNeedsLock(name: string): Promise<boolean> {
    return this.fs.lstat(this.pathOf(name)).then(() => true, (err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return false;
      throw err;
    });
  }

  /**
   * Runs `task` holding the lock of `name`. The task's lease is lost when the lock file is no
   * longer the one this call created, or when no renewal landed for `ttl - margin` by this
   * process's clocks; failed renewals are retried until then.
   */
  async withLock<T>(name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    // Every call on the lock file goes through one descriptor of the directory: a symlink swapped
    // in for it (or for a directory above) while the lock is made, renewed or broken is never
    // followed, so nothing named like a lock outside the store is written, moved or unlinked.
    const dir = await openCheckedDir(this.fs, this.dir, 'the directory of cluster locks');
    let held: Held;
    try {
      held = await this.acquire(name, join(dir.base, `${name}.lock`), this.pathOf(name));
    } catch (err) {
      await dir.close();
      throw err;
    }
    let renewing = false;
    const tick = () => {
      // held() also notices a lapse by time, aborting the lease's signal while the task waits.
      if (renewing || !held.lease.held()) return;
      renewing = true;
      void this.renew(held).finally(() => { renewing = false; });
    };
    const timer = setInterval(tick, Math.max(20, Math.floor(this.settings.ttlMs / 3)));
    try {
      return await task(held.lease);
    } finally {
      clearInterval(timer);
      // A renewal still in flight uses the descriptor too.
      while (renewing) await sleep(5);
      await this.release(held).finally(() => dir.close());
    }
  }

  private async acquire(name: string, path: string, shown: string): Promise<Held> {
    const deadline = Date.now() + this.settings.waitMs;
    let holder: LockFile | undefined;
    for (;;) {
      const started = LockLease.stamp();
      const body: LockFile = { owner: this.nodeId, token: randomHex(8), expiresAt: this.clock.now() + this.settings.ttlMs, run: this.run };
      // The identity is the inode just linked (or created) at `path`: ours until released or broken.
      const created = await createFileExclusive(this.fs, path, encode(body), QUICK).catch((err: unknown) => {
        throw asStorageFull(err, `the storage holding the cluster lock ${shown}`, 'free space there and try again: nothing was changed');
      });
      // Still ours once complete: a created file stays empty for a moment, and an empty lock
      // file old enough may be broken (see EMPTY_GRACE_MS); then we try again.
      const now = created ? await this.fs.lstat(path).catch(() => undefined) : undefined;
      if (created && now && sameFile(now, created)) {
        const lease = new LockLease(name, this.settings.ttlMs, this.marginMs, started, (m) => this.log?.(m));
        return { path, shown, body, dev: created.dev, ino: created.ino, lease, released: false };
      }
      if (created) continue;
      const state = await this.inspect(path, shown);
      holder = state.kind === 'valid' ? state.lock : undefined;
      if (state.kind === 'valid' && (this.expired(state) || this.leftByEarlierRun(state.lock))) {
        await this.breakExpired(path, state.lock.token, state.file);
        continue;
      }
      // Not a lock we can read: it blocks like one until it is as old as a lock's lifetime, or,
      // empty, as old as no writer takes between creating a lock file and filling it.
      const unreadableFor = state.kind === 'invalid' && state.empty ? EMPTY_GRACE_MS : this.settings.ttlMs;
      if (state.kind === 'invalid' && state.mtimeMs + unreadableFor < this.clock.now()) {
        this.log?.(`breaking the unreadable lock file ${shown} (${state.problem})`);
        await this.breakExpired(path, undefined, state.file);
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
   * Past its expiry, and not rewritten for a whole ttl either: a torn read of a renewal in
   * progress cannot make a live lock look expired, since the renewal itself touched the mtime.
   */
  private expired(state: { lock: LockFile; mtimeMs: number }): boolean {
    const now = this.clock.now();
    return state.lock.expiresAt < now && state.mtimeMs + this.settings.ttlMs < now;
  }

  /**
   * One daemon runs per node id, so a lock of this node from another run was left by a run that
   * died (kill -9 mid-create): waiting out its expiry would only stall the restarted daemon.
   */
  private leftByEarlierRun(lock: LockFile): boolean {
    return lock.owner === this.nodeId && lock.run !== undefined && lock.run !== this.run;
  }

  /**
   * Moves an expired lock aside, making sure it is the one we judged expired and still expired,
   * not a successor's nor one renewed meanwhile: such a lock goes back. `judged`: the file that
   * was judged. Another node may have broken it and taken the name since (this process paused
   * after its look): that successor's lock is left where it is, since even moved aside and back
   * it would leave the name without a lock for a moment, and a mount looking then would skip it.
   */
  private async breakExpired(path: string, expiredToken: string | undefined, judged: JudgedFile | undefined): Promise<void> {
    const there = await this.fs.lstat(path).catch(() => undefined);
    if (!there || (judged && !(sameFile(there, judged) && there.mtimeMs === judged.mtimeMs))) return;
    const aside = `${path}.broken-${randomBytes(6).toString('hex')}`;
    try {
      await this.fs.rename(path, aside);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return;
      throw err;
    }
    const moved = await this.inspect(aside, aside);
    if (moved.kind === 'valid' && (moved.lock.token !== expiredToken || !(this.expired(moved) || this.leftByEarlierRun(moved.lock)))) {
      await this.fs.link(aside, path).catch(() => undefined);
    }
    await this.fs.unlink(aside).catch(() => undefined);
  }

  private async renew(held: Held): Promise<void> {
    const started = LockLease.stamp();
    const text = encode({ ...held.body, expiresAt: this.clock.now() + this.settings.ttlMs });
    try {
      const opened = await openRegularOn(this.fs, held.path, OPEN_OWN);
      if ('notRegular' in opened) return this.lost(held, `${opened.notRegular} took the place of ${held.shown}`);
      const handle = opened;
      try {
        if (!sameFile(await handle.stat(), held)) return this.lost(held, `another holder's lock file took the place of ${held.shown}`);
        // Never past the lease: by then another node may be judging the old expiry to break it.
        if (!held.lease.held()) return;
        await handle.write(text, 0, 'utf8');
        if (Buffer.byteLength(text) !== LOCK_BYTES) await handle.truncate(Buffer.byteLength(text));
      } finally {
        await handle.close();
      }
      const after = await this.fs.lstat(held.path);
      if (!sameFile(after, held)) return this.lost(held, `another holder's lock file took the place of ${held.shown}`);
      held.lease.renewed(started);
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT') return this.lost(held, `its lock file ${held.shown} was removed (another node judged it expired)`);
      if (code === 'ELOOP') return this.lost(held, `a symbolic link took the place of ${held.shown}`);
      // Retried at the next tick; the lease runs out by time if none lands.
      held.lease.lastFailure = `renewing failed: ${describeCause(err)}`;
    }
  }

  private lost(held: Held, reason: string): void {
    if (!held.released) held.lease.lose(reason);
  }

  /**
   * Unlinks the lock only while the lease holds and the path still names our inode. A lapsed
   * lock stays: it has expired (or soon will), and unlinking it could race a node breaking it
   * and remove that node's fresh lock instead.
   */
  private async release(held: Held): Promise<void> {
    held.released = true;
    if (!held.lease.held()) return;
    const stat = await this.fs.lstat(held.path).catch(() => undefined);
    if (stat && sameFile(stat, held)) await this.fs.unlink(held.path).catch(() => undefined);
  }

  /**
   * What the lock file holds, and which file that is. The file is looked at before it is read: one
   * replaced in between is judged by the older file's identity, which the file there no longer
   * has when breakExpired checks it, so nothing is broken on a mixed judgement.
   */
  private async inspect(path: string, shown: string): Promise<LockState> {
    let file: JudgedFile | undefined;
    let text: string | undefined;
    try {
      const stat = await this.fs.lstat(path);
      file = { dev: stat.dev, ino: stat.ino, mtimeMs: stat.mtimeMs };
      text = await readFileNoFollow(this.fs, path);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return { kind: 'absent' };
      // A symlink, a FIFO or a device planted there: broken at once, but only if still the one seen.
      if (isStowageError(err, ErrorCodes.STATE_CORRUPT) && file) return { kind: 'invalid', mtimeMs: 0, problem: err.message, file };
      throw err;
    }
    if (text === undefined || !file) return { kind: 'absent' };
    const { mtimeMs } = file;
    if (text === '') return { kind: 'invalid', mtimeMs, problem: 'it is empty', empty: true, file };
    try {
      const lock = parseRecordText(lockSchema, text, `lock file ${shown}`);
      // No holder sets an expiry further ahead than one lifetime: one beyond two would block the name for good.
      const ahead = lock.expiresAt - this.clock.now();
      if (ahead > 2 * this.settings.ttlMs) {
        return { kind: 'invalid', mtimeMs, problem: `it expires ${Math.round(ahead / 1000)} s from now, further ahead than any holder sets`, file };
      }
      return { kind: 'valid', lock, mtimeMs, file };
    } catch (err) {
      return { kind: 'invalid', mtimeMs, problem: messageOf(err), file };
    }
  }
}
