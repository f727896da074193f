import * as fs from 'node:fs';
import * as fsp from 'node:fs/promises';
import { promisify } from 'node:util';
import type { FsPort } from './fs-port.js';
import { openRegularFile, openRegularFileSync } from './open-regular.js';

/**
 * statfs magic numbers of filesystems on a local block device or in memory: a metadata call
 * there takes microseconds and cannot wait on a network. NFS, FUSE (GlusterFS), CIFS, Ceph and
 * cluster filesystems are absent on purpose.
 */
const LOCAL_FS_TYPES = new Set([
  0xef53, // ext2, ext3, ext4
  0x58465342, // xfs
  0x9123683e, // btrfs
  0x01021994, // tmpfs
  0xf2f52010, // f2fs
  0x2fc12fc1, // zfs
  0x794c7630, // overlayfs (a container's root on a local disk)
]);

/** Whether statfs says `dir` is on a local disk (or memory) filesystem; undefined when it cannot tell. */
export function onLocalFilesystem(dir: string): boolean | undefined {
  try {
    return LOCAL_FS_TYPES.has(Number(fs.statfsSync(dir).type));
  } catch {
    return undefined;
  }
}

/** Longest the event loop runs synchronous calls back to back before letting other work in. */
const TURN_MS = 4;

const fsync = promisify(fs.fsync);

type Path = string | Buffer | URL;

/**
 * The same calls as `node:fs/promises`, done synchronously for paths under directories known to
 * sit on a local filesystem. A promise-based call costs a thread-pool round trip (tens of
 * microseconds here, and most of a request's time); the system call itself is a few. Paths
 * elsewhere (a shared mount, anything not registered) take the thread pool as before, so a hung
 * network filesystem can only stall its own calls. fsync always goes to the thread pool: it
 * waits on the disk. Long runs of calls (a purge walking a tree) give the event loop a turn
 * every few milliseconds.
 */
export class LocalFirstFs {
  /**
   * Directories registered as local (true) or not (false), each with a trailing slash. A path is
   * local when the longest one it lies under is: a network filesystem mounted below a local root
   * (a GlusterFS client's mount under the daemon's state directory) is not.
   */
  /** The kernel's own tables (read before every remove and purge): reading them never waits on a disk or a network. */
  private readonly roots = new Map<string, boolean>([['/proc/self/mountinfo/', true], ['/proc/self/fdinfo/', true]]);
  private turnStartedAt = 0;
  private turnPending = false;

  /**
   * Registers `dir` for synchronous calls if statfs says it is on a local filesystem.
   * @returns whether it was registered
   */
  trustIfLocal(dir: string): boolean {
    const local = onLocalFilesystem(dir) === true;
    this.roots.set(dir.endsWith('/') ? dir : `${dir}/`, local);
    return local;
  }

  /**
   * Calls under `alias` (a directory descriptor's `/proc/self/fd/N`) run as calls on `dir`, where
   * it was opened, would: synchronously when that is local. Until `dropAlias`, before the close.
   */
  aliasOf(alias: string, dir: string): void {
    this.roots.set(`${alias}/`, this.isLocal(dir));
  }

  dropAlias(alias: string): void {
    this.roots.delete(`${alias}/`);
  }

  /** Stops synchronous calls under `dir`, even below a local root (network filesystems are mounted there). */
  distrust(dir: string): void {
    this.roots.set(dir.endsWith('/') ? dir : `${dir}/`, false);
  }

  /** True when calls on `path` run synchronously: it lies under a directory on a local filesystem. */
  isLocal(path: Path): path is string {
    if (typeof path !== 'string' || !path.startsWith('/') || path.includes('/..')) return false;
    let longest = '';
    let local = false;
    for (const [root, isLocal] of this.roots) {
      if ((path.startsWith(root) || path === root.slice(0, -1)) && root.length > longest.length) {
        longest = root;
        local = isLocal;
      }
    }
    return local;
  }

  /** Resolves with `value`, after an event-loop turn when synchronous calls ran too long. */
  private settle<T>(value: T): Promise<T> {
    const now = performance.now();
    if (!this.turnPending) {
      this.turnPending = true;
      this.turnStartedAt = now;
      setImmediate(() => { this.turnPending = false; });
    }
    if (now - this.turnStartedAt < TURN_MS) return Promise.resolve(value);
    return new Promise((resolve) => setImmediate(() => resolve(value)));
  }

  private run<T>(sync: () => T): Promise<T> {
    try {
      return this.settle(sync());
    } catch (err) {
      return Promise.reject(err as Error);
    }
  }

  // Signatures are loose on purpose: `asFsPort` below pins them to fs/promises' types.
  mkdir = (path: Path, options?: fs.MakeDirectoryOptions | fs.Mode): Promise<string | undefined> =>
    this.isLocal(path) ? this.run(() => fs.mkdirSync(path, options)) : fsp.mkdir(path, options);

  readFile = (path: Path, options?: { encoding?: BufferEncoding | null } | BufferEncoding | null): Promise<string | Buffer> =>
    this.isLocal(path) ? this.run(() => fs.readFileSync(path, options)) : fsp.readFile(path, options);

  writeFile = (path: Path, data: string | Uint8Array, options?: fs.WriteFileOptions): Promise<void> =>
    this.isLocal(path) ? this.run(() => fs.writeFileSync(path, data, options)) : fsp.writeFile(path, data, options);

  rename = (from: Path, to: Path): Promise<void> =>
    this.isLocal(from) && this.isLocal(to) ? this.run(() => fs.renameSync(from, to)) : fsp.rename(from, to);

  /** Always through the thread pool: a recursive remove can be long. */
  rm = (path: Path, options?: fs.RmOptions): Promise<void> => fsp.rm(path, options);

  rmdir = (path: Path): Promise<void> => this.isLocal(path) ? this.run(() => fs.rmdirSync(path)) : fsp.rmdir(path);

  readdir = (path: Path, options?: BufferEncoding | null): Promise<string[]> =>
    this.isLocal(path) ? this.run(() => fs.readdirSync(path, options ?? 'utf8')) : fsp.readdir(path, options ?? 'utf8');

  stat = (path: Path): Promise<fs.Stats> => this.isLocal(path) ? this.run(() => fs.statSync(path)) : fsp.stat(path);

  lstat = (path: Path): Promise<fs.Stats> => this.isLocal(path) ? this.run(() => fs.lstatSync(path)) : fsp.lstat(path);

  chmod = (path: Path, mode: fs.Mode): Promise<void> =>
    this.isLocal(path) ? this.run(() => fs.chmodSync(path, mode)) : fsp.chmod(path, mode);

  chown = (path: Path, uid: number, gid: number): Promise<void> =>
    this.isLocal(path) ? this.run(() => fs.chownSync(path, uid, gid)) : fsp.chown(path, uid, gid);

  lchown = (path: Path, uid: number, gid: number): Promise<void> =>
    this.isLocal(path) ? this.run(() => fs.lchownSync(path, uid, gid)) : fsp.lchown(path, uid, gid);

  link = (existing: Path, created: Path): Promise<void> =>
    this.isLocal(existing) && this.isLocal(created) ? this.run(() => fs.linkSync(existing, created)) : fsp.link(existing, created);

  unlink = (path: Path): Promise<void> => this.isLocal(path) ? this.run(() => fs.unlinkSync(path)) : fsp.unlink(path);

  utimes = (path: Path, atime: fs.TimeLike, mtime: fs.TimeLike): Promise<void> =>
    this.isLocal(path) ? this.run(() => fs.utimesSync(path, atime, mtime)) : fsp.utimes(path, atime, mtime);

  access = (path: Path, mode?: number): Promise<void> =>
    this.isLocal(path) ? this.run(() => fs.accessSync(path, mode)) : fsp.access(path, mode);

  open = (path: Path, flags?: string | number, mode?: fs.Mode): Promise<fsp.FileHandle | LocalFileHandle> =>
    this.isLocal(path) ? this.run(() => new LocalFileHandle(fs.openSync(path, flags ?? 'r', mode), this)) : fsp.open(path, flags, mode);

  /** Opens `path` only if it is a regular file, without opening anything else there (see open-regular.ts). */
  openRegular = (path: string, flags: number): Promise<LocalFileHandle | fsp.FileHandle | NotRegularFile> => {
    if (!this.isLocal(path)) return openRegularAsync(path, flags);
    return this.run(() => {
      const opened = openRegularFileSync(path, flags);
      return 'other' in opened ? notRegular(path, opened.other) : new LocalFileHandle(opened.fd, this);
    });
  };

  /** @internal for LocalFileHandle */
  runSync<T>(sync: () => T): Promise<T> {
    return this.run(sync);
  }
}

/** The FileHandle calls stowage makes, on a descriptor of a local file. */
export class LocalFileHandle {
  private closed = false;

  constructor(readonly fd: number, private readonly owner: LocalFirstFs) {}

  stat(): Promise<fs.Stats> {
    return this.owner.runSync(() => fs.fstatSync(this.fd));
  }

  readFile(options?: { encoding?: BufferEncoding | null } | BufferEncoding | null): Promise<string | Buffer> {
    return this.owner.runSync(() => fs.readFileSync(this.fd, options));
  }

  writeFile(data: string | Uint8Array): Promise<void> {
    return this.owner.runSync(() => fs.writeFileSync(this.fd, data));
  }

  async write(data: string, position?: number | null, encoding?: BufferEncoding): Promise<{ bytesWritten: number; buffer: string }> {
    const bytesWritten = await this.owner.runSync(() => fs.writeSync(this.fd, data, position, encoding));
    return { bytesWritten, buffer: data };
  }

  async read<T extends NodeJS.ArrayBufferView>(buffer: T, offset?: number, length?: number, position?: number | null): Promise<{ bytesRead: number; buffer: T }> {
    const bytesRead = await this.owner.runSync(() => fs.readSync(this.fd, buffer, offset ?? 0, length ?? buffer.byteLength, position ?? null));
    return { bytesRead, buffer };
  }

  truncate(length?: number): Promise<void> {
    return this.owner.runSync(() => fs.ftruncateSync(this.fd, length));
  }

  chmod(mode: fs.Mode): Promise<void> {
    return this.owner.runSync(() => fs.fchmodSync(this.fd, mode));
  }

  chown(uid: number, gid: number): Promise<void> {
    return this.owner.runSync(() => fs.fchownSync(this.fd, uid, gid));
  }

  /** In the thread pool: the only call here that waits on the disk. */
  sync(): Promise<void> {
    return fsync(this.fd);
  }

  close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return this.owner.runSync(() => fs.closeSync(this.fd));
  }
}

/** What was found where a regular file was to be opened; it was never opened. */
export interface NotRegularFile {
  notRegular: string;
}

function kindOf(st: { isDirectory(): boolean; isFIFO(): boolean; isSocket(): boolean; isCharacterDevice(): boolean; isBlockDevice(): boolean }): string {
  if (st.isDirectory()) return 'a directory';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'an unknown kind';
}

/** A symlink is refused as open(O_NOFOLLOW) refuses it, so callers keep telling it apart; anything else is described. */
function notRegular(path: string, st: fs.BigIntStats): NotRegularFile {
  if (st.isSymbolicLink()) {
    throw Object.assign(new Error(`ELOOP: too many symbolic links encountered, open '${path}'`), { code: 'ELOOP', syscall: 'open', path });
  }
  return { notRegular: kindOf(st) };
}

type PortFileHandle = Awaited<ReturnType<FsPort['open']>>;

/** openRegularFile through the thread pool, answered as openRegularOn answers. */
async function openRegularAsync(path: string, flags: number): Promise<fsp.FileHandle | NotRegularFile> {
  const opened = await openRegularFile(path, flags);
  return 'other' in opened ? notRegular(path, opened.other) : opened.handle;
}

/**
 * Opens `path` with `flags` only if it is a regular file: on the real file system nothing else
 * is ever opened (a device planted there by another machine never sees its driver run), and a
 * symlink is ELOOP. A port that is not the real file system (memfs in unit tests) opens it with
 * O_NOFOLLOW and O_NONBLOCK and checks what it got.
 */
export async function openRegularOn(port: FsPort, path: string, flags: number): Promise<PortFileHandle | NotRegularFile> {
  if (port instanceof LocalFirstFs) return await port.openRegular(path, flags) as PortFileHandle | NotRegularFile;
  if (port.open === fsp.open) return openRegularAsync(path, flags);
  const handle = await port.open(path, flags | fs.constants.O_NOFOLLOW | fs.constants.O_NONBLOCK);
  const st = await handle.stat().catch(async (err: unknown) => { await handle.close(); throw err; });
  if (st.isFile()) return handle;
  await handle.close();
  return { notRegular: kindOf(st) };
}

/**
 * The port's view of a LocalFirstFs: its calls take the arguments stowage passes and return what
 * fs/promises returns for them (tested side by side in test/unit/local-fs.test.ts); the cast only
 * drops the overloads stowage never uses.
 */
export function asFsPort(local: LocalFirstFs): FsPort {
  return local as unknown as FsPort;
}

/** Registers `dir` for synchronous calls when `fs` is a LocalFirstFs and `dir` is on a local filesystem. */
export function trustIfLocal(port: FsPort, dir: string): boolean {
  return port instanceof LocalFirstFs ? port.trustIfLocal(dir) : false;
}

/** True when `path` is known to be on a local filesystem (where O_EXCL is exclusive for every writer). */
export function isLocalPath(port: FsPort, path: string): boolean {
  return port instanceof LocalFirstFs && port.isLocal(path);
}

/** True for a path the daemon's own file system port knows to be on a network filesystem (NFS, FUSE, ...). */
export function isRemotePath(port: FsPort, path: string): boolean {
  return port instanceof LocalFirstFs && !port.isLocal(path);
}

export function distrust(port: FsPort, dir: string): void {
  if (port instanceof LocalFirstFs) port.distrust(dir);
}
