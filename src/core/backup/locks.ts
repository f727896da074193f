import { hostname } from 'node:os';
import { z } from 'zod';
import { ErrorCodes, StowageError, describeCause } from '../errors.js';
import { randomHex } from '../random-hex.js';
import { deleteAll, listAll, type BlobStore } from './blob-store.js';
import { FORMAT_VERSION, shownText } from './format.js';
import { holderIsGone, LockHolderSchema, thisHolder } from './lock-holder.js';
import type { CommonOptions } from './options.js';
import { parseObject } from './objects.js';

/**
 * Repository locks for several nodes on a store without atomic rename or conditional writes
 * between different keys. Each holder writes its own lock object (never overwritten), then
 * lists all locks: if a live lock of another holder conflicts (exclusive against anything),
 * it deletes its own and gives up. Two holders racing both see each other and both give up,
 * so the protocol never lets two conflicting holders proceed (it may make both retry). A lock
 * lives until its expiry; the holder refreshes it by writing a new object (sequence + 1) and
 * deleting the old one. An expired lock is stale: it is ignored and deleted by whoever finds
 * it. Holders check their own expiry before any step that relies on the lock (a GC deletion, a
 * backup record) and stop if it passed. Expiry compares clocks of different nodes: they must
 * agree to well within the TTL (NTP does).
 *
 * Shared: backup, restore, verify (they add or read, never remove). Exclusive: delete and GC.
 */
export type LockKind = 'shared' | 'exclusive';

export const LockObjectSchema = z.object({
  format: z.literal(FORMAT_VERSION),
  lockId: z.string().regex(/^[0-9a-f]{16}$/),
  seq: z.number().int().nonnegative(),
  kind: z.enum(['shared', 'exclusive']),
  owner: shownText(255),
  purpose: shownText(255),
  /** Milliseconds since the epoch, within what a Date can show. */
  createdAt: z.number().int().min(0).max(8.64e15),
  expiresAt: z.number().int().min(0).max(8.64e15),
  /** Which process holds it (see lock-holder.ts); absent in locks of earlier versions. */
  holder: LockHolderSchema.optional(),
});
export type LockObject = z.infer<typeof LockObjectSchema>;

export const DEFAULT_LOCK_TTL_MS = 5 * 60_000;
/**
 * How long a backup, restore, verify or snapshot waits for a garbage collection to end before
 * it fails with E_BACKUP_LOCKED: a collection deletes what it found unreferenced and ends, in
 * seconds even on a large repository; a refusal at once made a snapshot taken right after a
 * delete fail for nothing.
 */
export const GC_WAIT_MS = 60_000;

/**
 * The lock options of an operation that waits for a garbage collection: `report` runs before
 * each try, so a job cancelled while it waits (its progress report throws) stops waiting.
 */
export function waitingForGc(report: (() => void) | undefined): Pick<LockOptions, 'waitForExclusiveMs' | 'onWait'> {
  return { waitForExclusiveMs: GC_WAIT_MS, onWait: report };
}
/** A lock object is a few hundred bytes: a larger one is not read (a repository is hostile input). */
const MAX_LOCK_OBJECT_BYTES = 4096;
/**
 * How far past this node's clock a lock may expire: a TTL plus any clock skew between nodes.
 * Farther, it would block the repository for good (a clock years ahead, a forged object).
 */
const MAX_LOCK_AHEAD_MS = 24 * 3600_000;

export interface LockOptions {
  kind: LockKind;
  purpose: string;
  owner?: string;
  ttlMs?: number;
  now?: () => number;
  /**
   * The operation writes nothing but its lock (a delete, gc, verify, restore): its lock objects
   * may take space a store holds back for a full disk (see PutOptions.reserved).
   */
  writesOnlyLocks?: boolean;
  /** For a shared lock: how long to keep trying while an exclusive lock refuses it (default 0). */
  waitForExclusiveMs?: number;
  /** Called before each try after the first; what it throws ends the wait (a cancelled job's progress report). */
  onWait?: () => void;
  /** Refresh in the background every ttl/3 (default true; tests drive refresh by hand). */
  autoRefresh?: boolean;
  /**
   * The operation only reads (a restore, verify, check, a copy's source): on a store that refuses
   * it writes (a read-only mount, read-only credentials) it runs without a lock object of its
   * own, once no exclusive lock is live, and `onUnlocked` is told why.
   */
  readsOnly?: { onUnlocked?: (message: string) => void };
}

/**
 * The lock options of an operation that only reads the repository (see LockOptions.readsOnly),
 * with its `purpose`; warnings go to `options.onWarning`.
 */
export function readerLock(purpose: string, options: CommonOptions): LockOptions {
  return {
    kind: 'shared', purpose, writesOnlyLocks: true, readsOnly: { onUnlocked: options.onWarning },
    ...waitingForGc(() => options.onProgress?.({ entries: 0, files: 0, bytes: 0 })), owner: options.owner, ttlMs: options.lockTtlMs, now: options.now,
  };
}

const lockKey = (lockId: string, seq: number): string => `locks/${lockId}-${String(seq).padStart(10, '0')}`;

function lockedBy(other: LockObject, kind: LockKind, now: number, waitedMs = 0): StowageError {
  return new StowageError(
    ErrorCodes.BACKUP_LOCKED,
    // The holder refreshes its lock while it works: the expiry is when a dead holder's lock
    // lapses, not when a live one's work ends.
    `the backup repository is locked ${other.kind === 'exclusive' ? 'exclusively' : 'shared'} by ${other.owner} (${other.purpose}) until that ends` +
      ` (or, if ${other.owner} died, until its lock lapses at ${new Date(other.expiresAt).toISOString()}, in ${Math.ceil((other.expiresAt - now) / 1000)} s); ${kind === 'exclusive' ? 'an exclusive' : 'a shared'} lock cannot be taken now` +
      (waitedMs >= 1000 ? ` (waited ${Math.round(waitedMs / 1000)} s for it)` : ''),
  );
}

/** A lock this process holds. */
export class RepoLock {
  private seq = 0;
  private expiresAt: number;
  private timer: NodeJS.Timeout | undefined;
  private released = false;
  private refreshing: Promise<void> | undefined;

  constructor(
    private readonly store: BlobStore,
    private readonly object: LockObject,
    private readonly ttlMs: number,
    private readonly now: () => number,
    private readonly writesOnlyLocks = false,
  ) {
    this.expiresAt = object.expiresAt;
  }

  get kind(): LockKind { return this.object.kind; }
  get id(): string { return this.object.lockId; }

  startAutoRefresh(): void {
    this.timer = setInterval(() => { void this.refresh().catch(() => undefined); }, Math.max(1000, Math.floor(this.ttlMs / 3)));
    this.timer.unref();
  }

  /** Extends the lock: a new object with a later expiry, then the old one removed. */
  async refresh(): Promise<void> {
    if (this.released) return;
    this.refreshing ??= (async () => {
      try {
        this.assertHeld();
        const next: LockObject = { ...this.object, seq: this.seq + 1, expiresAt: this.now() + this.ttlMs };
        await this.store.put(lockKey(next.lockId, next.seq), Buffer.from(JSON.stringify(next)), { reserved: this.writesOnlyLocks });
        const old = this.seq;
        this.seq = next.seq;
        this.expiresAt = next.expiresAt;
        await this.store.delete([lockKey(next.lockId, old)]);
      } finally {
        this.refreshing = undefined;
      }
    })();
    return this.refreshing;
  }

  /**
   * Throws unless the lock is still ours: not released and not within a tenth of the TTL of
   * expiring (past expiry another node may have broken it).
   */
  assertHeld(): void {
    if (this.released) throw new StowageError(ErrorCodes.BACKUP_LOCKED, 'the repository lock was released');
    if (this.now() > this.expiresAt - this.ttlMs / 10) {
      throw new StowageError(ErrorCodes.BACKUP_LOCKED, `the repository lock expired at ${new Date(this.expiresAt).toISOString()} before the operation ended; stopped so as not to race another node`);
    }
  }

  async release(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    await this.refreshing?.catch(() => undefined);
    this.released = true;
    await this.store.delete([lockKey(this.object.lockId, this.seq), lockKey(this.object.lockId, this.seq + 1)]);
  }
}

/** The live locks in the store, one per holder (the latest object of each); stale ones are deleted. */
export async function liveLocks(store: BlobStore, now: number): Promise<LockObject[]> {
  const byHolder = new Map<string, LockObject>();
  const stale: string[] = [];
  const byHand = (key: string) => `once no stowage holds it, delete it by hand (${store.location}: ${key})`;
  for await (const { key, size } of listAll(store, 'locks/')) {
    if (size > MAX_LOCK_OBJECT_BYTES) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `lock object ${key} is ${size} bytes, far more than any lock stowage writes: it was not written by stowage; ${byHand(key)}`);
    }
    let lock: LockObject;
    try {
      lock = parseObject(LockObjectSchema, await store.get(key), `lock object ${key}`);
    } catch (err) {
      // Gone between list and get: released or refreshed.
      if (err instanceof StowageError && err.code === ErrorCodes.BACKUP_OBJECT_MISSING) continue;
      // Not a lock stowage wrote (a lock is written whole, once): no holder can be told from it.
      if (err instanceof StowageError && err.code === ErrorCodes.BACKUP_CORRUPT) {
        throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `${err.message}: it is no lock stowage wrote; ${byHand(key)}`, { cause: err });
      }
      throw err;
    }
    // A holder that has ended on this very machine (a daemon killed and restarted) holds
    // nothing: its lock is stale now, not only once it expires.
    if (lock.expiresAt < now || holderIsGone(lock.holder)) {
      stale.push(key);
      continue;
    }
    if (lock.expiresAt > now + MAX_LOCK_AHEAD_MS) {
      throw new StowageError(ErrorCodes.BACKUP_LOCKED, `lock object ${key} (${lock.owner}, ${lock.purpose}) expires at ${new Date(lock.expiresAt).toISOString()}, ` +
        `more than a day past this node's clock: a node's clock is far ahead, or the object was not written by stowage, and it would block the repository until then; ${byHand(key)}`);
    }
    const seen = byHolder.get(lock.lockId);
    if (!seen || seen.expiresAt < lock.expiresAt) byHolder.set(lock.lockId, lock);
  }
  // A store that refuses writes keeps them; they are stale all the same.
  await deleteAll(store, stale).catch((err: unknown) => { if (!store.refusesWrites?.(err)) throw err; });
  return [...byHolder.values()];
}

/**
 * Takes a lock on the repository in `store`, or fails with E_BACKUP_LOCKED naming the holder
 * that conflicts (and leaves no lock object of its own behind). With `waitForExclusiveMs`, a
 * shared lock refused by an exclusive one (a garbage collection, which takes seconds) is tried
 * again until that time has passed.
 */
export async function acquireLock(store: BlobStore, options: LockOptions): Promise<RepoLock> {
  const startedAt = Date.now();
  const deadline = startedAt + (options.kind === 'shared' ? options.waitForExclusiveMs ?? 0 : 0);
  for (let pause = 100; ; pause = Math.min(pause * 2, 1_000)) {
    const taken = await tryAcquire(store, options);
    if (taken instanceof RepoLock) return taken;
    const left = deadline - Date.now();
    if (taken.kind !== 'exclusive' || left <= 0) throw lockedBy(taken, options.kind, (options.now ?? Date.now)(), Date.now() - startedAt);
    // The last pause ends at the deadline, for one more try then.
    await new Promise((resolve) => setTimeout(resolve, Math.min(pause, left)));
    options.onWait?.();
  }
}

/** The lock, or the live lock that conflicts with it (then no object of its own is left). */
async function tryAcquire(store: BlobStore, options: LockOptions): Promise<RepoLock | LockObject> {
  const now = options.now ?? Date.now;
  const ttlMs = options.ttlMs ?? DEFAULT_LOCK_TTL_MS;
  const start = now();
  const object: LockObject = {
    format: FORMAT_VERSION,
    lockId: randomHex(8),
    seq: 0,
    kind: options.kind,
    owner: options.owner ?? `${hostname()}:${process.pid}`,
    purpose: options.purpose,
    createdAt: start,
    expiresAt: start + ttlMs,
    holder: thisHolder(),
  };
  const writesOnlyLocks = options.writesOnlyLocks ?? false;
  try {
    await store.put(lockKey(object.lockId, 0), Buffer.from(JSON.stringify(object)), { reserved: writesOnlyLocks });
  } catch (err) {
    if (options.kind !== 'shared' || !options.readsOnly || !store.refusesWrites?.(err)) throw err;
    return readWithoutLock(store, options, object, now, err);
  }
  let conflict: LockObject | undefined;
  try {
    const others = (await liveLocks(store, now())).filter((l) => l.lockId !== object.lockId);
    conflict = others.find((l) => options.kind === 'exclusive' || l.kind === 'exclusive');
  } catch (err) {
    await store.delete([lockKey(object.lockId, 0)]).catch(() => undefined);
    throw err;
  }
  if (conflict) {
    await store.delete([lockKey(object.lockId, 0)]);
    return conflict;
  }
  const lock = new RepoLock(store, object, ttlMs, now, writesOnlyLocks);
  if (options.autoRefresh ?? true) lock.startAutoRefresh();
  return lock;
}

/**
 * A reader on a store that refuses its lock object: it goes on unless a live exclusive lock (a
 * garbage collection, a delete) is there now. Nothing then stops one starting later; a chunk it
 * removes fails the read, naming it (every chunk is checked), so nothing is restored wrong.
 */
async function readWithoutLock(store: BlobStore, options: LockOptions, object: LockObject, now: () => number, refused: unknown): Promise<RepoLock | LockObject> {
  const exclusive = (await liveLocks(store, now())).find((l) => l.kind === 'exclusive');
  if (exclusive) return exclusive;
  const why = refused instanceof Error && refused.cause !== undefined ? refused.cause : refused;
  options.readsOnly?.onUnlocked?.(`${store.location} refuses writes (${describeCause(why)}): the ${options.purpose} runs without a repository ` +
    'lock, so a backup delete started elsewhere meanwhile could remove chunks it needs, and it would then fail naming them');
  return new UnheldLock(store, object, options.ttlMs ?? DEFAULT_LOCK_TTL_MS, now);
}

/** The lock of a reader that could not write one (see readWithoutLock): nothing to refresh or release. */
class UnheldLock extends RepoLock {
  override startAutoRefresh(): void {}
  override async refresh(): Promise<void> {}
  override assertHeld(): void {}
  override async release(): Promise<void> {}
}

/** Runs `work` under a lock, releasing it after, also on failure. */
export async function withLock<T>(store: BlobStore, options: LockOptions, work: (lock: RepoLock) => Promise<T>): Promise<T> {
  const lock = await acquireLock(store, options);
  try {
    return await work(lock);
  } finally {
    await lock.release().catch(() => undefined);
    await store.closeIdle?.().catch(() => undefined);
  }
}
