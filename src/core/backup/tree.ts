import {
  closeSync, constants, fchmodSync, fchownSync, futimesSync, lchownSync, linkSync, lstatSync, lutimesSync, mkdirSync,
  openSync, readdirSync, readlinkSync, readSync, symlinkSync, writeSync, type BigIntStats,
} from 'node:fs';
import { lchown, link, lstat, lutimes, mkdir, open, readdir, readlink, rm, symlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { ErrorCodes, StowageError } from '../errors.js';
import { randomHex } from '../random-hex.js';
import { deleteAll, listAll } from './blob-store.js';
import { onLocalFilesystem } from '../local-fs.js';
import { Chunker, chunkStream } from './chunker.js';
import { backupKey, comparePaths, newBackupId, packKey, type BackupRecord, type Entry } from './format.js';
import { withLock, type RepoLock } from './locks.js';
import { assertVolumeName, ManifestWriter, Repository } from './repository.js';

/** O_NONBLOCK: a FIFO swapped in for a file between lstat and open must not hang the backup. */
const READ_FLAGS = constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK;
const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
const MAX_WARNINGS = 100;
/** Files read (backup) or written (restore) at once. */
const FILES_AHEAD = 8;
/** Read size for large files on a local filesystem: most chunks then lie inside one read, uncopied. */
const LOCAL_READ_SIZE = 8 * 1024 * 1024;
/** Longest run of synchronous file system calls before the event loop gets a turn. */
const TURN_MS = 4;

/**
 * Lets the event loop in every TURN_MS while synchronous calls run back to back: timers, lock
 * renewals and finished compressions are not held up by a long tree.
 */
class Turns {
  private since = performance.now();

  async pause(): Promise<void> {
    if (performance.now() - this.since < TURN_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    this.since = performance.now();
  }
}

export interface Progress {
  entries: number;
  files: number;
  /** File bytes covered so far (read, or taken from the files cache). */
  bytes: number;
}

export interface CommonOptions {
  /** Who holds the repository lock, for other nodes' messages (default host:pid). */
  owner?: string;
  lockTtlMs?: number;
  /** The clock lock expiry is judged by (default Date.now). */
  now?: () => number;
  onProgress?: (progress: Progress) => void;
  /**
   * Whether a tree on a local filesystem (statfs: ext4, xfs, btrfs, tmpfs...) is read or written
   * with synchronous calls (default true). A call through libuv's thread pool costs tens of
   * microseconds, the system call itself a few: for a tree of small files that is most of the
   * time. Network filesystems, and directories of another device inside the tree, always take
   * the thread pool, so a hung server stalls only its own calls.
   */
  localFastPath?: boolean;
}

export interface BackupOptions extends CommonOptions {
  volume: string;
  /**
   * The backup whose files cache to use: a backup id of the same volume, undefined for the
   * volume's latest backup, or false to read every file.
   */
  parent?: string | false;
  /** Devices, FIFOs and sockets are skipped; each is reported here and in the record. */
  onWarning?: (message: string) => void;
  /** Recorded in the backup record as given: the snapshot read and the volume's backend. */
  origin?: Pick<BackupRecord, 'snapshot' | 'backend'>;
}

interface Walked {
  path: string;
  abs: string;
  stat: BigIntStats;
  /** On the local filesystem the walk started on: synchronous calls are fine here. */
  local: boolean;
}

/**
 * Depth-first, names sorted: the order manifests are written and checked in (see comparePaths).
 * `local`: the root is on a local filesystem; entries on the root's device are then listed and
 * stat'ed synchronously, a mount of another device inside the tree through the thread pool.
 */
async function* walk(root: string, local: boolean, turns: Turns): AsyncGenerator<Walked> {
  const rootStat = await lstat(root, { bigint: true });
  if (!rootStat.isDirectory()) throw new StowageError(ErrorCodes.INVALID_REQUEST, `${root} is not a directory`);
  yield { path: '.', abs: root, stat: rootStat, local };
  async function* below(rel: string, abs: string, dirLocal: boolean): AsyncGenerator<Walked> {
    // Names only, sorted: memory holds one directory's names per level, not the tree.
    const names = (dirLocal ? readdirSync(abs) : await readdir(abs)).sort();
    for (const name of names) {
      const childAbs = join(abs, name);
      const childRel = rel === '.' ? name : `${rel}/${name}`;
      let stat: BigIntStats | undefined;
      if (dirLocal) {
        stat = lstatSync(childAbs, { bigint: true, throwIfNoEntry: false });
        await turns.pause();
      } else {
        stat = await lstat(childAbs, { bigint: true }).catch((err: unknown) => {
          if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
          throw err;
        });
      }
      if (!stat) continue; // removed while we walked
      const childLocal = local && stat.dev === rootStat.dev;
      yield { path: childRel, abs: childAbs, stat, local: childLocal };
      if (stat.isDirectory()) yield* below(childRel, childAbs, childLocal);
    }
  }
  yield* below('.', root, local);
}

/** Reads the parent's manifest in step with the walk: both are in comparePaths order. */
class ParentCursor {
  private current: Entry | undefined;
  private done = false;

  constructor(private readonly iterator: AsyncIterator<Entry> | undefined) {
    if (!iterator) this.done = true;
  }

  async find(path: string): Promise<Entry | undefined> {
    while (!this.done) {
      if (!this.current) {
        const next = await this.iterator!.next();
        if (next.done) { this.done = true; return undefined; }
        this.current = next.value;
      }
      const order = comparePaths(this.current.path, path);
      if (order === 0) return this.current;
      if (order > 0) return undefined;
      this.current = undefined;
    }
    return undefined;
  }
}

function metadata(stat: BigIntStats): Pick<Entry, 'mode' | 'uid' | 'gid' | 'mtimeNs' | 'atimeNs'> {
  return {
    mode: Number(stat.mode & 0o7777n),
    uid: Number(stat.uid),
    gid: Number(stat.gid),
    mtimeNs: stat.mtimeNs.toString(),
    atimeNs: stat.atimeNs.toString(),
  };
}

/**
 * Backs up the tree at `dir` as a new backup of `volume`: every file is chunked by content and
 * its chunks added to the repository unless already there; files whose inode, size, mtime and
 * ctime match the parent backup's entry are not read again. Symlinks are stored, never
 * followed; hardlinks are stored once with the other names pointing at the first; devices,
 * FIFOs and sockets are skipped with a warning. Memory stays bounded: one chunk, one pack, one
 * manifest blob and one directory listing per level. The record is written last, so a backup
 * that fails or is killed leaves only unreferenced packs, which GC removes.
 */
export async function backupTree(dir: string, repo: Repository, options: BackupOptions): Promise<BackupRecord> {
  assertVolumeName(options.volume);
  const now = options.now ?? Date.now;
  return withLock(repo.store, { kind: 'shared', purpose: `backup of ${options.volume}`, owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    const startedAt = new Date(now()).toISOString();
    await repo.reloadIndex();
    let parent: BackupRecord | undefined;
    if (typeof options.parent === 'string') parent = await repo.readBackupRecord(options.volume, options.parent);
    else if (options.parent === undefined) parent = (await repo.listBackups(options.volume)).at(-1);
    const cursor = new ParentCursor(parent ? repo.entries(parent)[Symbol.asyncIterator]() : undefined);
    const writer = repo.newWriter();
    const manifest = new ManifestWriter(writer);
    const stats = { entries: 0, files: 0, bytes: 0, filesRead: 0, bytesRead: 0, skipped: 0 };
    const warnings: string[] = [];
    const warn = (message: string) => {
      stats.skipped += 1;
      if (warnings.length < MAX_WARNINGS) warnings.push(message);
      options.onWarning?.(message);
    };
    const firstNames = new Map<string, string>();
    // Entries in walk order; files are read a few at a time ahead of the manifest, which takes
    // them in order (file system calls wait on the thread pool: overlapping them hides that).
    const queue: Array<Promise<Entry>> = [];
    const drain = async (limit: number) => {
      while (queue.length > limit) {
        await manifest.add(await queue.shift()!);
        stats.entries += 1;
        options.onProgress?.({ entries: stats.entries, files: stats.files, bytes: stats.bytes });
      }
    };
    try {
      const turns = new Turns();
      const local = options.localFastPath !== false && onLocalFilesystem(dir) === true;
      for await (const { path, abs, stat, local: entryLocal } of walk(dir, local, turns)) {
        if (stat.isDirectory()) {
          queue.push(Promise.resolve({ path, type: 'dir', ...metadata(stat), size: 0 }));
        } else if (stat.isSymbolicLink()) {
          queue.push(Promise.resolve({ path, type: 'symlink', ...metadata(stat), size: 0, target: entryLocal ? readlinkSync(abs) : await readlink(abs) }));
        } else if (stat.isFile()) {
          const inode = `${stat.dev}:${stat.ino}`;
          const first = stat.nlink > 1n ? firstNames.get(inode) : undefined;
          if (first !== undefined) {
            queue.push(Promise.resolve({ path, type: 'hardlink', ...metadata(stat), size: Number(stat.size), target: first }));
          } else {
            if (stat.nlink > 1n) firstNames.set(inode, path);
            const previous = await cursor.find(path);
            queue.push(fileEntry(path, abs, stat, entryLocal ? turns : undefined, previous, repo, writer, stats, options).then((entry) => {
              stats.files += 1;
              return entry;
            }));
          }
        } else {
          warn(`${path}: ${stat.isFIFO() ? 'FIFO' : stat.isSocket() ? 'socket' : 'device'} skipped`);
          continue;
        }
        await drain(FILES_AHEAD);
      }
      await drain(0);
    } finally {
      // A failure leaves other reads running: let them end before the lock is released.
      await Promise.allSettled(queue);
    }
    const manifestIds = await manifest.finish();
    await writer.flush();
    const record: BackupRecord = {
      format: 1,
      id: newBackupId(now(), randomHex(4)),
      volume: options.volume,
      ...(parent ? { parent: parent.id } : {}),
      host: hostname(),
      startedAt,
      finishedAt: new Date(now()).toISOString(),
      manifest: manifestIds,
      stats: { ...stats, newBlobs: writer.stats.newBlobs, newRawBytes: writer.stats.newRawBytes, newStoredBytes: writer.stats.newStoredBytes },
      warnings,
      ...options.origin,
    };
    // Past our lock's expiry a GC may have run: a record must not name chunks it removed.
    lock.assertHeld();
    await repo.putBackupRecord(record);
    return record;
  });
}

/**
 * An inode number as the manifest stores it: a number where it is exact, else its decimal string.
 * GlusterFS gives 64-bit inode numbers derived from its file ids, beyond 2^53 and often beyond
 * 2^63, which node's bigint stats (signed 64-bit) show as negative.
 */
function inodeNumber(ino: bigint): number | string {
  const unsigned = BigInt.asUintN(64, ino);
  return unsigned <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(unsigned) : unsigned.toString();
}

async function fileEntry(
  path: string, abs: string, stat: BigIntStats, localTurns: Turns | undefined, previous: Entry | undefined, repo: Repository,
  writer: ReturnType<Repository['newWriter']>, stats: { entries: number; files: number; filesRead: number; bytesRead: number; bytes: number }, options: BackupOptions,
): Promise<Entry> {
  const base = { path, type: 'file' as const, ...metadata(stat), ino: inodeNumber(stat.ino), ctimeNs: stat.ctimeNs.toString() };
  if (previous?.type === 'file' && previous.ino === base.ino && previous.size === Number(stat.size)
    && previous.mtimeNs === stat.mtimeNs.toString() && previous.ctimeNs === stat.ctimeNs.toString()
    && previous.chunks!.every((id) => repo.has(id))) {
    stats.bytes += previous.size;
    return { ...base, size: previous.size, chunks: previous.chunks! };
  }
  const chunks: string[] = [];
  let size = 0;
  const addChunk = async (chunk: Buffer) => {
    chunks.push((await writer.add('data', chunk)).id);
    size += chunk.length;
    stats.bytesRead += chunk.length;
    stats.bytes += chunk.length;
    options.onProgress?.({ entries: stats.entries, files: stats.files, bytes: stats.bytes });
  };
  if (localTurns) {
    // open, read (a small file in one), close: the walk's lstat already gave the metadata.
    const fd = openSync(abs, READ_FLAGS);
    try {
      const chunker = new Chunker(repo.config.chunker);
      // One byte more than the size: a file that grew since lstat shows it and is read on.
      let want = stat.size < BigInt(LOCAL_READ_SIZE) ? Number(stat.size) + 1 : LOCAL_READ_SIZE;
      for (;;) {
        // Fresh buffers, handed to the chunker as owned: chunks are views of them, not copies.
        const buffer = Buffer.allocUnsafe(want);
        const got = readSync(fd, buffer, 0, want, null);
        if (got > 0) for (const chunk of chunker.push(buffer.subarray(0, got), true)) await addChunk(chunk);
        // A local filesystem reads short only at the end of a regular file.
        if (got < want) break;
        want = LOCAL_READ_SIZE;
        await localTurns.pause();
      }
      const last = chunker.finish();
      if (last) await addChunk(last);
    } finally {
      closeSync(fd);
    }
    stats.filesRead += 1;
    return { ...base, size, chunks };
  }
  const handle = await open(abs, READ_FLAGS);
  try {
    // A file below the minimum chunk size is one chunk: one read, no stream, and the buffer is ours.
    const small = stat.size < BigInt(repo.config.chunker.minSize);
    const input = small ? [await handle.readFile()] : handle.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false });
    for await (const chunk of chunkStream(input, repo.config.chunker, small)) await addChunk(chunk);
    stats.filesRead += 1;
    // A file that changed while read keeps what was read; its changed ctime makes the next
    // backup read it again.
    return { ...base, size, chunks };
  } finally {
    await handle.close();
  }
}

export interface RestoreOptions extends CommonOptions {}

/**
 * Seconds for utimes. libuv sets times to whole microseconds, truncating the double it is given,
 * and a double near today's epoch holds a time only to about 0.2 us: aiming at the middle of the
 * microsecond makes the truncation land on it, where `x.324` would come back as `x.323999`.
 */
function nsToSeconds(ns: string): number {
  const value = BigInt(ns);
  if (value < 0n) return Number(value / 1_000_000_000n) + Number(value % 1_000_000_000n) / 1e9;
  const micros = value / 1000n;
  return Number(micros / 1_000_000n) + (Number(micros % 1_000_000n) + 0.5) / 1e6;
}

function parentOf(path: string): string {
  const cut = path.lastIndexOf('/');
  return cut < 0 ? '.' : path.slice(0, cut);
}

function refusedEntry(record: BackupRecord, path: string, why: string): StowageError {
  return new StowageError(ErrorCodes.BACKUP_CORRUPT, `backup ${record.volume}/${record.id}: manifest entry ${JSON.stringify(path.slice(0, 300))} is refused: ${why}`);
}

/**
 * Restores a backup into `target`, an existing empty directory. Every chunk is checked against
 * its hash; ownership (when running as root), modes, times, symlinks and hardlinks come back.
 * Manifests are hostile input: paths are validated, must come in walk order (so no duplicates)
 * and each must sit in a directory the manifest restored before it, so nothing is written
 * outside `target`. On any failure everything written is removed and `target` is empty again.
 */
export async function restoreTree(repo: Repository, volume: string, backupId: string, target: string, options: RestoreOptions = {}): Promise<{ entries: number; files: number; bytes: number }> {
  assertVolumeName(volume);
  const targetStat = await lstat(target);
  if (!targetStat.isDirectory()) throw new StowageError(ErrorCodes.INVALID_REQUEST, `restore target ${target} is not a directory`);
  if ((await readdir(target)).length > 0) throw new StowageError(ErrorCodes.INVALID_REQUEST, `restore target ${target} is not empty; a restore only writes into an empty directory`);
  return withLock(repo.store, { kind: 'shared', purpose: `restore of ${volume}/${backupId}`, owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async () => {
    await repo.reloadIndex();
    const record = await repo.readBackupRecord(volume, backupId);
    try {
      return await restoreEntries(repo, record, target, options);
    } catch (err) {
      repo.releasePackCache();
      // Everything under target is ours: it was empty. rm never follows symlinks.
      for (const name of await readdir(target)) await rm(join(target, name), { recursive: true, force: true });
      throw err;
    }
  });
}

async function restoreEntries(repo: Repository, record: BackupRecord, target: string, options: RestoreOptions): Promise<{ entries: number; files: number; bytes: number }> {
  const asRoot = process.getuid?.() === 0;
  // Everything is created inside target, an empty directory: all of it is on target's filesystem.
  const local = options.localFastPath !== false && onLocalFilesystem(target) === true;
  const turns = new Turns();
  const progress = { entries: 0, files: 0, bytes: 0 };
  // Directories still open (their metadata is applied once everything inside is written).
  const stack: Entry[] = [];
  let previous: string | undefined;
  const abs = (path: string) => (path === '.' ? target : join(target, ...path.split('/')));
  // Files are written a few at a time; what depends on them (a directory's times, a hardlink)
  // waits for all of them first.
  const jobs = new Set<Promise<void>>();
  let failure: { error: unknown } | undefined;
  const barrier = async () => {
    await Promise.all(jobs);
    if (failure) throw failure.error;
  };
  const closeDir = async (entry: Entry) => {
    await barrier();
    const path = abs(entry.path);
    if (local) {
      const fd = openSync(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
      try {
        if (asRoot) fchownSync(fd, entry.uid, entry.gid);
        fchmodSync(fd, entry.mode);
        futimesSync(fd, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
      } finally {
        closeSync(fd);
      }
      return;
    }
    if (asRoot) await lchown(path, entry.uid, entry.gid);
    const handle = await open(path, constants.O_RDONLY | constants.O_DIRECTORY | constants.O_NOFOLLOW);
    try {
      await handle.chmod(entry.mode);
      await handle.utimes(nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
    } finally {
      await handle.close();
    }
  };
  try {
    for await (const entry of repo.entries(record)) {
      if (previous === undefined) {
        if (entry.path !== '.') throw refusedEntry(record, entry.path, 'the first entry must be the root directory');
      } else {
        if (comparePaths(previous, entry.path) >= 0) throw refusedEntry(record, entry.path, `out of order or duplicate (after ${JSON.stringify(previous)})`);
        const parent = parentOf(entry.path);
        while (stack.length > 0 && stack[stack.length - 1]!.path !== parent) await closeDir(stack.pop()!);
        if (stack.length === 0) throw refusedEntry(record, entry.path, 'its parent is not a directory of this backup');
      }
      previous = entry.path;
      const path = abs(entry.path);
      switch (entry.type) {
        case 'dir':
          if (entry.path !== '.') {
            if (local) mkdirSync(path, { mode: 0o700 });
            else await mkdir(path, { mode: 0o700 });
          }
          stack.push(entry);
          break;
        case 'symlink':
          if (local) {
            symlinkSync(entry.target!, path);
            if (asRoot) lchownSync(path, entry.uid, entry.gid);
            lutimesSync(path, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
          } else {
            await symlink(entry.target!, path);
            if (asRoot) await lchown(path, entry.uid, entry.gid);
            await lutimes(path, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
          }
          break;
        case 'hardlink': {
          const first = entry.target!;
          if (comparePaths(first, entry.path) >= 0) throw refusedEntry(record, entry.path, 'a hardlink must point to an earlier file');
          await barrier();
          if (!(await isRestoredFile(target, first))) throw refusedEntry(record, entry.path, `its hardlink target ${JSON.stringify(first)} is not a restored file`);
          if (local) linkSync(abs(first), path);
          else await link(abs(first), path);
          break;
        }
        case 'file': {
          const job: Promise<void> = (local ? writeLocalFileEntry : writeFileEntry)(repo, record, entry, path, asRoot, progress, options)
            .catch((error: unknown) => { failure ??= { error }; })
            .finally(() => { jobs.delete(job); });
          jobs.add(job);
          while (jobs.size >= FILES_AHEAD) await Promise.race(jobs);
          if (failure) throw failure.error;
          break;
        }
      }
      progress.entries += 1;
      options.onProgress?.({ ...progress });
      if (local) await turns.pause();
    }
    if (previous === undefined) throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `backup ${record.volume}/${record.id} has an empty manifest`);
    while (stack.length > 0) await closeDir(stack.pop()!);
    await barrier();
  } finally {
    // Never clean up under a write still running.
    await Promise.allSettled(jobs);
  }
  repo.releasePackCache();
  return progress;
}

async function writeFileEntry(
  repo: Repository, record: BackupRecord, entry: Entry, path: string, asRoot: boolean,
  progress: { entries: number; files: number; bytes: number }, options: RestoreOptions,
): Promise<void> {
  const handle = await open(path, WRITE_FLAGS, 0o600);
  try {
    let written = 0;
    for (const id of entry.chunks!) {
      const data = await repo.readBlob(id, { wholePacks: true });
      await handle.write(data, 0, data.length, written);
      written += data.length;
      progress.bytes += data.length;
      options.onProgress?.({ ...progress });
    }
    if (written !== entry.size) throw refusedEntry(record, entry.path, `its chunks hold ${written} bytes, the entry says ${entry.size}`);
    if (asRoot) await handle.chown(entry.uid, entry.gid);
    // After chown, which clears set-id bits.
    await handle.chmod(entry.mode);
    await handle.utimes(nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
  } finally {
    await handle.close();
  }
  progress.files += 1;
}

/**
 * writeFileEntry with synchronous calls, for a target on a local filesystem: open (O_EXCL,
 * O_NOFOLLOW), one write per chunk, then owner, mode and times on the descriptor, close. The
 * chunks' reads (a pack fetch, decompression of large chunks) still overlap across files.
 */
async function writeLocalFileEntry(
  repo: Repository, record: BackupRecord, entry: Entry, path: string, asRoot: boolean,
  progress: { entries: number; files: number; bytes: number }, options: RestoreOptions,
): Promise<void> {
  const fd = openSync(path, WRITE_FLAGS, 0o600);
  try {
    let written = 0;
    for (const id of entry.chunks!) {
      const data = await repo.readBlob(id, { wholePacks: true });
      for (let done = 0; done < data.length;) done += writeSync(fd, data, done, data.length - done, written + done);
      written += data.length;
      progress.bytes += data.length;
      options.onProgress?.({ ...progress });
    }
    if (written !== entry.size) throw refusedEntry(record, entry.path, `its chunks hold ${written} bytes, the entry says ${entry.size}`);
    if (asRoot) fchownSync(fd, entry.uid, entry.gid);
    // After chown, which clears set-id bits.
    fchmodSync(fd, entry.mode);
    futimesSync(fd, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
  } finally {
    closeSync(fd);
  }
  progress.files += 1;
}

/**
 * True when `path` is a regular file reached through real directories only: a symlink the
 * manifest restored earlier must not lead a hardlink to a file outside the target.
 */
async function isRestoredFile(target: string, path: string): Promise<boolean> {
  let current = target;
  const segments = path.split('/');
  for (const [i, segment] of segments.entries()) {
    current = join(current, segment);
    const stat = await lstat(current).catch(() => undefined);
    if (!stat) return false;
    if (i < segments.length - 1 ? !stat.isDirectory() : !stat.isFile()) return false;
  }
  return true;
}

/**
 * Reads back every manifest blob and every chunk of a backup and checks each against its hash;
 * the first failure is an error naming the chunk and its pack.
 */
export async function verifyBackup(repo: Repository, volume: string, backupId: string, options: CommonOptions = {}): Promise<{ files: number; chunks: number; bytes: number }> {
  assertVolumeName(volume);
  return withLock(repo.store, { kind: 'shared', purpose: `verify of ${volume}/${backupId}`, owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async () => {
    await repo.reloadIndex();
    const record = await repo.readBackupRecord(volume, backupId);
    const checked = new Set<string>();
    const result = { files: 0, chunks: 0, bytes: 0 };
    for await (const entry of repo.entries(record)) {
      if (entry.type !== 'file') continue;
      result.files += 1;
      for (const id of entry.chunks!) {
        if (checked.has(id)) continue;
        const data = await repo.readBlob(id, { wholePacks: true });
        checked.add(id);
        result.chunks += 1;
        result.bytes += data.length;
        options.onProgress?.({ entries: result.files, files: result.files, bytes: result.bytes });
      }
    }
    repo.releasePackCache();
    return result;
  });
}

/** Removes a backup's record; its chunks stay until gc() finds nothing else needs them. */
export async function deleteBackup(repo: Repository, volume: string, backupId: string, options: CommonOptions = {}): Promise<void> {
  assertVolumeName(volume);
  await withLock(repo.store, { kind: 'exclusive', purpose: `delete of ${volume}/${backupId}`, owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    await repo.readBackupRecord(volume, backupId);
    lock.assertHeld();
    await repo.store.delete([backupKey(volume, backupId)]);
  });
}

export interface GcOptions extends CommonOptions {
  /** List page size (tests use a small one to cross many pages). */
  pageSize?: number;
}

export interface GcResult {
  backups: number;
  deletedPacks: number;
  deletedIndexes: number;
  deletedBytes: number;
  keptPacks: number;
}

/**
 * Deletes packs no backup references, under an exclusive lock. It refuses (changing nothing)
 * when any backup record or manifest fails to load: what a broken record references is
 * unknown, and deleting it could lose data. Index objects go before their packs, so a crash
 * between the two leaves an unindexed pack (removed next time), never an index naming a
 * missing pack. Packs with some live blobs are kept whole (no repacking yet).
 */
export async function gc(repo: Repository, options: GcOptions = {}): Promise<GcResult> {
  return withLock(repo.store, { kind: 'exclusive', purpose: 'garbage collection', owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    const broken: string[] = [];
    const records = await repo.listBackups(undefined, { pageSize: options.pageSize, onBroken: (key, err) => broken.push(`${key}: ${(err as Error).message}`) });
    if (broken.length > 0) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `garbage collection refused: ${broken.length} backup record(s) do not load, so what they reference is unknown (${broken.slice(0, 3).join('; ')})`);
    }
    await repo.reloadIndex();
    const live = new Set<string>();
    for (const record of records) {
      for (const id of record.manifest) live.add(id);
      try {
        for await (const entry of repo.entries(record)) for (const id of entry.chunks ?? []) live.add(id);
      } catch (err) {
        throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `garbage collection refused: the manifest of backup ${record.volume}/${record.id} does not load (${(err as Error).message})`, { cause: err });
      }
    }
    const deadIndexes: string[] = [];
    const deadPacks: string[] = [];
    const indexed = new Set<string>();
    let keptPacks = 0;
    let deletedBytes = 0;
    for await (const { key } of listAll(repo.store, 'index/', options.pageSize)) {
      const index = await repo.readIndex(key);
      indexed.add(index.pack);
      if (index.blobs.some((b) => live.has(b.id))) {
        keptPacks += 1;
      } else {
        deadIndexes.push(key);
        deadPacks.push(packKey(index.pack));
        deletedBytes += index.size;
      }
    }
    // Packs without an index: left by a backup that stopped between the two writes.
    for await (const { key, size } of listAll(repo.store, 'packs/', options.pageSize)) {
      const id = key.split('/').at(-1)!;
      if (!indexed.has(id)) {
        deadPacks.push(key);
        deletedBytes += size;
      }
    }
    lock.assertHeld();
    await deleteInBatches(repo, deadIndexes, lock);
    await deleteInBatches(repo, deadPacks, lock);
    await repo.reloadIndex();
    return { backups: records.length, deletedPacks: deadPacks.length, deletedIndexes: deadIndexes.length, deletedBytes, keptPacks };
  });
}

async function deleteInBatches(repo: Repository, keys: string[], lock: RepoLock): Promise<void> {
  for (let i = 0; i < keys.length; i += 1000) {
    lock.assertHeld();
    await deleteAll(repo.store, keys.slice(i, i + 1000));
  }
}



