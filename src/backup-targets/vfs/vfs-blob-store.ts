import { constants } from 'node:fs';
import type { Stats } from 'node:fs';
import { link, lstat, mkdir, open, readdir, unlink, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  assertValidKey, assertValidPrefix, blobMissing, isValidKey, MAX_DELETE_BATCH, MAX_LIST_PAGE,
  type BlobStore, type ListedObject, type PutOptions, type ListOptions, type ListPage,
} from '../../core/backup/blob-store.js';
import { ErrorCodes, StowageError, asStorageFull, describeCause, errnoCode } from '../../core/errors.js';
import { openRegularFile } from '../../core/open-regular.js';
import { randomHex } from '../../core/random-hex.js';
import { OpenObjects } from './open-objects.js';
import { SpaceReserve, TEMP_NAME, isFull } from './space-reserve.js';

/** Temps live in a dot-directory no key can name (keys never have a segment starting with a dot). */
const TEMP_DIR = '.tmp';

export interface VfsBlobStoreOptions {
  /** fsync each object and its directory before put returns (default true). */
  durable?: boolean;
}

/**
 * A BlobStore on a directory: a local disk, an NFS or a GlusterFS mount. A key is a relative
 * path under the root. Objects are written to a temp file, fsynced, then hard-linked to their
 * name: link() fails with EEXIST instead of replacing, exclusively even on NFS and GlusterFS,
 * so put never overwrites. Directories and files are checked with lstat and opened with
 * O_NOFOLLOW: a symlink planted in the repository is refused, never followed out of it.
 */
export class VfsBlobStore implements BlobStore {
  readonly location: string;
  private readonly durable: boolean;

  private readonly reserve: SpaceReserve;
  private readonly openForRanges = new OpenObjects((key) => this.openObject(key).then((o) => o.handle));

  constructor(private readonly root: string, options: VfsBlobStoreOptions = {}) {
    this.location = root;
    this.durable = options.durable ?? true;
    this.reserve = new SpaceReserve(root, this.durable);
  }

  async put(key: string, data: Uint8Array, options: PutOptions = {}): Promise<boolean> {
    assertValidKey(key);
    // The root first: the reserve is made in it, and must not be made in another one.
    await this.ensureDirs([]).catch((err: unknown) => { throw this.writeRefused(err) ?? err; });
    await this.reserve.keep();
    try {
      return await this.putOnce(key, data);
    } catch (err) {
      // The lock of a delete, gc, verify or restore takes the reserve's room on a full disk (see
      // SpaceReserve): deleting is how space is freed, and reading must not need free space.
      if (isFull(err) && options.reserved === true && await this.reserve.spend()) {
        return this.putOnce(key, data).catch((again: unknown) => { throw this.full(again, true); });
      }
      throw this.writeRefused(err) ?? this.full(err, options.reserved === true);
    }
  }

  private readonly refusals = new WeakSet<object>();

  refusesWrites(err: unknown): boolean {
    return typeof err === 'object' && err !== null && this.refusals.has(err);
  }

  /** A write the file system refuses this process (a read-only mount, permissions), said as such; undefined for any other failure. */
  private writeRefused(err: unknown): StowageError | undefined {
    const code = errnoCode(err);
    if (code !== 'EROFS' && code !== 'EACCES' && code !== 'EPERM') return undefined;
    const refusal = new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `the backup repository at ${this.root} refuses writes: ${describeCause(err)}; ` +
      'a backup, a delete or a snapshot writes there (a restore or verify only reads): make it writable for the daemon, or choose another repository', { cause: err });
    this.refusals.add(refusal);
    return refusal;
  }

  /** `locking`: the write was the lock of a delete, verify or restore, which even the reserve could not make room for. */
  private full(err: unknown, locking = false): unknown {
    return asStorageFull(err, `the backup repository at ${this.root}`, locking
      ? 'not even the space it holds back for deleting backups (.reserve) is left: something other than stowage filled the disk, or the reserve was removed; free space there by other means and try again'
      : 'free space there (stowage backup delete frees the chunks only the deleted backups use) and run the backup again: what it stored so far is reused');
  }

  private async putOnce(key: string, data: Uint8Array): Promise<boolean> {
    const segments = key.split('/');
    const dir = await this.ensureDirs(segments.slice(0, -1));
    const tempDir = await this.ensureDirs([TEMP_DIR]);
    const temp = join(tempDir, `${randomHex(8)}-${process.pid}`);
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      try {
        await handle.writeFile(data);
        if (this.durable) await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await link(temp, join(dir, segments[segments.length - 1]!));
      } catch (err) {
        if (errnoCode(err) === 'EEXIST') return false;
        throw err;
      }
      if (this.durable) await syncDir(dir);
      return true;
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }

  async get(key: string, into?: Buffer): Promise<Buffer> {
    const { handle, size } = await this.openObject(key);
    try {
      // Objects never change once written: the size from fstat is the size to read, in as few
      // reads as the kernel allows (readFile reads a pack in many small pieces).
      return await readFully(handle, 0, size, into);
    } finally {
      await handle.close();
    }
  }

  async getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer> {
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `range ${offset}+${length} of ${key} is not valid`);
    }
    return this.openForRanges.use(key, (handle) => readFully(handle, offset, length, into));
  }

  closeIdle(): Promise<void> {
    return this.openForRanges.closeIdle();
  }

  async head(key: string): Promise<{ size: number } | undefined> {
    assertValidKey(key);
    const stat = await lstat(join(this.root, key)).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
      throw err;
    });
    if (!stat) return undefined;
    if (!stat.isFile()) throw this.refused(key, 'is not a regular file');
    return { size: stat.size };
  }

  async list(prefix: string, options: ListOptions = {}): Promise<ListPage> {
    assertValidPrefix(prefix);
    const pageSize = Math.min(Math.max(1, options.pageSize ?? MAX_LIST_PAGE), MAX_LIST_PAGE);
    const after = options.startAfter ?? '';
    // The deepest directory every matching key lies under; the rest of the prefix filters names.
    const cut = prefix.lastIndexOf('/');
    const base = cut < 0 ? '' : prefix.slice(0, cut);
    const found: ListedObject[] = [];
    // An empty listing of another directory would read as a repository with nothing in it.
    await this.checkDirs([]);
    // One more than a page tells whether another page follows.
    await this.walk(base, prefix, after, found, pageSize + 1);
    const objects = found.slice(0, pageSize);
    return found.length > pageSize ? { objects, next: objects[objects.length - 1]!.key } : { objects };
  }

  async delete(keys: readonly string[]): Promise<void> {
    if (keys.length > MAX_DELETE_BATCH) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `at most ${MAX_DELETE_BATCH} keys per delete, not ${keys.length}`);
    }
    keys.forEach(assertValidKey);
    for (const key of keys) {
      await this.checkDirs(key.split('/').slice(0, -1));
      const path = join(this.root, key);
      const stat = await lstat(path).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
        throw err;
      });
      if (!stat) continue;
      if (stat.isDirectory()) throw this.refused(key, 'is a directory');
      await unlink(path).catch((err: unknown) => { if (errnoCode(err) !== 'ENOENT') throw this.writeRefused(err) ?? err; });
      this.reserve.spaceFreed();
    }
  }

  /**
   * Appends keys under `dir` in byte order until `out` holds `limit`. Sorting each directory's
   * names with a `/` after directory names makes a depth-first walk emit keys in the byte order
   * object stores list in (`a.x` < `a/b` < `a0`), so a page stops early instead of reading all.
   */
  private async walk(dir: string, prefix: string, after: string, out: ListedObject[], limit: number): Promise<void> {
    const path = dir === '' ? this.root : join(this.root, dir);
    const stat = await lstat(path).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return undefined;
      throw err;
    });
    if (!stat) return;
    // A listing that skipped what it cannot read would hide objects: gc would then free the
    // chunks a hidden backup record needs. So a symlink, FIFO or device where the store keeps
    // directories and objects fails the listing, as a read of it would.
    if (!stat.isDirectory()) throw this.refused(dir, 'is not a directory');
    const children = (await readdir(path, { withFileTypes: true }))
      .filter((d) => !d.name.startsWith('.'))
      .map((d) => ({ name: d.name, isDir: d.isDirectory(), isFile: d.isFile(), sortKey: d.isDirectory() ? `${d.name}/` : d.name }))
      .sort((a, b) => compareBytes(a.sortKey, b.sortKey));
    for (const child of children) {
      if (out.length >= limit) return;
      const key = dir === '' ? child.name : `${dir}/${child.name}`;
      // Neither a prefix of the wanted prefix nor under it: nothing inside can match.
      if (!key.startsWith(prefix) && !prefix.startsWith(`${key}/`)) continue;
      if (!child.isDir && !child.isFile) {
        if (isValidKey(key) || prefix.startsWith(`${key}/`)) throw this.refused(key, 'is neither a directory nor a regular file');
        continue;
      }
      if (child.isDir) {
        // Every key under `key/` sorts before `after` when `after` leaves that subtree upward.
        const sub = `${key}/`;
        if (!after.startsWith(sub) && compareBytes(after, sub) > 0) continue;
        await this.walk(key, prefix, after, out, limit);
      } else if (key.startsWith(prefix) && compareBytes(key, after) > 0 && isValidKey(key)) {
        // Names outside the key alphabet (someone else's files) are not objects of this store.
        const entry = await lstat(join(path, child.name)).catch((err: unknown) => {
          if (errnoCode(err) === 'ENOENT') return undefined; // deleted since the readdir
          throw err;
        });
        if (entry && !entry.isFile()) throw this.refused(key, 'is not a regular file');
        if (entry) out.push({ key, size: entry.size });
      }
    }
  }

  private async openObject(key: string) {
    assertValidKey(key);
    await this.checkDirs(key.split('/').slice(0, -1));
    let opened;
    try {
      // Another machine writes the repository: a device planted under an object's name is never
      // opened (its driver would run on this host), only refused.
      opened = await openRegularFile(join(this.root, key));
    } catch (err) {
      const code = errnoCode(err);
      if (code === 'ENOENT' || code === 'ENOTDIR') throw blobMissing(this.location, key);
      throw err;
    }
    if ('other' in opened) throw this.refused(key, opened.other.isSymbolicLink() ? 'is a symbolic link' : 'is not a regular file');
    return { handle: opened.handle, size: Number(opened.stat.size) };
  }

  /** The root's identity when this store first found or made it. */
  private pinnedRoot?: { dev: number; ino: number };

  /**
   * Holds the root to the directory this store first found or made there. A filesystem unmounted
   * from under a repository leaves its mount point, an empty directory of the disk below, and a
   * repository moved away leaves nothing: a write would make the repository's directories again
   * in the wrong place. `stat` is the root's lstat now, undefined when it is gone.
   */
  private checkRoot(stat: Stats | undefined): void {
    if (!this.pinnedRoot) {
      if (stat?.isDirectory()) this.pinnedRoot = { dev: stat.dev, ino: stat.ino };
      return;
    }
    if (stat && stat.dev === this.pinnedRoot.dev && stat.ino === this.pinnedRoot.ino) return;
    throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `the backup repository at ${this.root} ${stat ? 'is another directory' : 'is gone'} ` +
      'since this operation opened it: was it moved, or its filesystem unmounted? Nothing more is written there; ' +
      'mount it again (or put it back) and run the operation again');
  }

  /** Throws if any existing directory on the way to a key is a symlink or not a directory. */
  private async checkDirs(segments: readonly string[]): Promise<void> {
    let path = this.root;
    for (const segment of ['', ...segments]) {
      path = segment === '' ? path : join(path, segment);
      const stat = await lstat(path).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      });
      if (segment === '') this.checkRoot(stat);
      if (!stat) return;
      if (!stat.isDirectory()) throw this.notADirectory(path, stat);
    }
  }

  private async ensureDirs(segments: readonly string[]): Promise<string> {
    let path = this.root;
    for (const segment of ['', ...segments]) {
      path = segment === '' ? path : join(path, segment);
      // The root itself is created on first write (its parent must exist: no mkdir -p of a typo),
      // and never again once found or made (checkRoot).
      if (segment !== '' || !this.pinnedRoot) {
        await mkdir(path, { mode: 0o700 }).catch((err: unknown) => { if (errnoCode(err) !== 'EEXIST') throw err; });
      }
      const stat = segment === '' && this.pinnedRoot
        ? await lstat(path).catch((err: unknown) => { if (errnoCode(err) === 'ENOENT') return undefined; throw err; })
        : await lstat(path);
      if (segment === '') this.checkRoot(stat);
      if (!stat) continue; // unreachable: checkRoot refused the pinned root that is gone
      if (!stat.isDirectory()) throw this.notADirectory(path, stat);
    }
    return path;
  }

  /**
   * Unlinks the temporary files (`.tmp/<random>-<pid>`) of puts older than `olderThanMs`: a
   * process killed between writing one and linking it leaves it for good otherwise. Only plain
   * files of the names puts give are touched, never followed.
   */
  async sweepTemporary(olderThanMs: number): Promise<number> {
    const dir = join(this.root, TEMP_DIR);
    const dirStat = await lstat(dir).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    const reserveTemps = await this.reserve.sweep(olderThanMs);
    if (!dirStat) return reserveTemps;
    if (!dirStat.isDirectory()) throw this.refused(TEMP_DIR, 'is not a directory');
    const cutoff = Date.now() - olderThanMs;
    let removed = reserveTemps;
    for (const name of await readdir(dir)) {
      const path = join(dir, name);
      if (!TEMP_NAME.test(name)) continue;
      const stat = await lstat(path).catch(() => undefined);
      if (!stat?.isFile() || stat.mtimeMs > cutoff) continue;
      await unlink(path).catch((err: unknown) => { if (errnoCode(err) !== 'ENOENT') throw this.writeRefused(err) ?? err; });
      removed += 1;
    }
    return removed;
  }

  /** A key's directory that is not one is damage in the repository; the repository's own path that is not one is a wrong URL. */
  private notADirectory(path: string, stat: Stats): StowageError {
    const what = stat.isSymbolicLink() ? 'is a symbolic link' : 'is not a directory';
    if (path !== this.root) return this.refused(path.slice(this.root.length + 1), what);
    return new StowageError(ErrorCodes.INVALID_REQUEST, `the backup repository ${this.location} ${what}: give the path of a directory ` +
      '(or of one to be made in an existing directory); stowage does not follow or touch what is there');
  }

  private refused(key: string, why: string): StowageError {
    return new StowageError(ErrorCodes.BACKUP_CORRUPT, `${key} in backup repository ${this.location} ${why}; stowage does not follow or touch it`);
  }
}

/** Keys are ASCII, so UTF-16 order is byte order; named for what callers rely on. */
export function compareBytes(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

async function syncDir(dir: string): Promise<void> {
  try {
    const handle = await open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try { await handle.sync(); } finally { await handle.close(); }
  } catch { /* some filesystems refuse a directory fsync; the link is still atomic */ }
}

/** Up to `length` bytes from `offset`; fewer only at the end of the file. */
async function readFully(handle: FileHandle, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const buffer = into && length <= into.length ? into.subarray(0, length) : Buffer.allocUnsafe(length);
  let filled = 0;
  while (filled < length) {
    const { bytesRead } = await handle.read(buffer, filled, length - filled, offset + filled);
    if (bytesRead === 0) break;
    filled += bytesRead;
  }
  return buffer.subarray(0, filled);
}
