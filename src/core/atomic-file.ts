import { constants } from 'node:fs';
import { createHash } from 'node:crypto';
import { hostname } from 'node:os';
import { basename, dirname, join } from 'node:path';
import type { FsPort } from './fs-port.js';
import { errnoCode } from './errors.js';
import { readFileNoFollow } from './safe-path.js';
import { processExists } from './process-exists.js';
import { isLocalPath, openRegularOn } from './local-fs.js';
import type { Flusher } from './flusher.js';
import { randomHex } from './random-hex.js';

export { readFileNoFollow } from './safe-path.js';

/**
 * Temp files start with a dot, which no valid volume name does, so listings that skip dot-files
 * never confuse a temp with a volume (`app.tmp-data` is a valid name). The name carries a tag of
 * the writing node and its pid, so a node can tell its own dead temps from another node's live ones.
 */
export const TEMP_PREFIX = '.tmp-';
const TEMP_NAME = /^\.tmp-([0-9a-f]{8})-(\d+)-[0-9a-f]{8}-/;
/** Temps of the naming used before: `<file>.tmp-<pid>-<hex8>`. */
const LEGACY_TEMP_NAME = /\.tmp-\d+-[0-9a-f]{8}$/;

function tagOf(nodeId: string): string {
  return createHash('sha256').update(nodeId).digest('hex').slice(0, 8);
}

let ownerTag = tagOf(hostname());
/** `process.pid` asks the kernel on every read. */
const PID = process.pid;

/** Names this process's temps after the node id, so its next run can clean them at once. */
export function setTempOwner(nodeId: string): void {
  ownerTag = tagOf(nodeId);
}

function tempPathFor(path: string): string {
  // Keep within NAME_MAX: the base name is at most 133 bytes for registry entries.
  return join(dirname(path), `${TEMP_PREFIX}${ownerTag}-${PID}-${randomHex(4)}-${basename(path)}`);
}

/**
 * A fixed temp name (`.tmp-own-<file>`), for a file in a directory only this daemon writes
 * (its --root) and written one write at a time: a fixed name lets a crash test aim at it.
 */
function ownTempPathFor(path: string): string {
  return join(dirname(path), `${TEMP_PREFIX}own-${basename(path)}`);
}

/** True for a name `tempPathFor` (or an older stowage) made. */
export function isTempName(name: string): boolean {
  return name.startsWith(TEMP_PREFIX) || LEGACY_TEMP_NAME.test(name);
}


export interface TempSweep {
  /** Node id whose dead temps go at once. */
  nodeId: string;
  /** Others' temps (and ours of a live pid) go only when older than this, by the file's mtime. */
  maxAgeMs: number;
  /** Current time on the clock that sets the directory's mtimes. */
  nowMs: number;
}

/**
 * Removes leftover temp files in `dir`: this node's from processes that are gone at once,
 * anyone's once older than `maxAgeMs`. Only regular files with a temp name are touched.
 * @returns the names removed
 */
export async function sweepTemps(fs: FsPort, dir: string, sweep: TempSweep): Promise<string[]> {
  const mine = tagOf(sweep.nodeId);
  const removed: string[] = [];
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return removed;
    throw err;
  }
  for (const name of names.filter(isTempName)) {
    const path = join(dir, name);
    const stat = await fs.lstat(path).catch(() => undefined);
    if (!stat?.isFile()) continue;
    const match = TEMP_NAME.exec(name);
    const deadOwn = match?.[1] === mine && Number(match[2]) !== PID && !processExists(Number(match[2]));
    if (!deadOwn && sweep.nowMs - stat.mtimeMs <= sweep.maxAgeMs) continue;
    await fs.unlink(path).then(() => removed.push(name), () => undefined);
  }
  return removed;
}

/** Identity of a file's content as `stat` reports it; what caches compare. */
export interface FileIdentity {
  dev: number;
  ino: number;
  mtimeMs: number;
  size: number;
}

type OpenFile = Awaited<ReturnType<FsPort['open']>>;

/** Writes a new file at `path`; `keepOpen` returns its handle instead of closing it. */
async function writeTemp(fs: FsPort, path: string, data: string, durable: boolean): Promise<void>;
async function writeTemp(fs: FsPort, path: string, data: string, durable: boolean, keepOpen: true): Promise<FileIdentity & { handle: OpenFile }>;
async function writeTemp(fs: FsPort, path: string, data: string, durable: boolean, keepOpen = false): Promise<(FileIdentity & { handle: OpenFile }) | void> {
  // 'wx' (O_CREAT|O_EXCL) never follows a symlink planted at the name.
  const handle = await fs.open(path, 'wx', 0o600);
  let keep = false;
  try {
    await handle.writeFile(data);
    if (durable) await handle.sync();
    // Only a kept file's identity is wanted (createFileExclusive); a file renamed into place needs none.
    if (!keepOpen) return;
    const { dev, ino, mtimeMs, size } = await handle.stat();
    keep = true;
    return { dev, ino, mtimeMs, size, handle };
  } catch (err) {
    await handle.close().catch(() => undefined);
    await fs.unlink(path).catch(() => undefined);
    throw err;
  } finally {
    if (!keep) await handle.close().catch(() => undefined);
  }
}

async function syncDir(fs: FsPort, dir: string): Promise<void> {
  // Directory fsync makes the rename durable; some filesystems (and memfs) refuse it.
  try {
    // O_DIRECTORY: a device that took the directory's name is refused before its driver runs.
    const handle = await fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
    try { await handle.sync(); } finally { await handle.close(); }
  } catch { /* best effort */ }
}

/**
 * Writes a file so readers see either the old or the new content, never a torn one. The rename
 * replaces a symlink at `path` instead of writing through it. `durable: false` skips the fsyncs,
 * for files that only need to survive a process crash (intent records); `ownTemp` names the temp
 * `.tmp-own-<file>` (see ownTempPathFor).
 */
export async function writeFileAtomic(
  fs: FsPort, path: string, data: string, options: { durable?: boolean; ownTemp?: boolean } = {},
): Promise<void> {
  const durable = options.durable ?? true;
  const temp = options.ownTemp ? ownTempPathFor(path) : tempPathFor(path);
  // A fixed temp name may be left over by a killed write: it is this process's own, replaced.
  if (options.ownTemp) await fs.unlink(temp).catch((err: unknown) => { if (errnoCode(err) !== 'ENOENT') throw err; });
  await writeTemp(fs, temp, data, durable);
  try {
    await fs.rename(temp, path);
  } catch (err) {
    await fs.unlink(temp).catch(() => undefined);
    throw err;
  }
  if (durable) await syncDir(fs, dirname(path));
}

/**
 * Creates `path` with `data` only if it does not exist yet, atomically and exclusively even on
 * shared filesystems (hard links are exclusive on NFS and GlusterFS; O_EXCL on old NFS is not).
 * Returns false when the file already existed, else the new file's identity (a hard link
 * leaves the inode's mtime as it was). `durable: false` skips the fsync, for files that need not
 * survive a power loss (locks with a TTL); a `flusher` takes the fsync over, in its next group
 * flush after the answer (see Flusher).
 */
export async function createFileExclusive(
  fs: FsPort, path: string, data: string,
  options: { durable?: boolean; tornIsHarmless?: boolean; flusher?: Flusher; flushAs?: string } = {},
): Promise<false | FileIdentity> {
  // One creation instead of three (temp, link, unlink) where O_EXCL is exclusive for every
  // writer: on a local filesystem, for files whose readers treat a half-written one as taken.
  if (options.tornIsHarmless && isLocalPath(fs, path)) return createDirect(fs, path, data, options.durable ?? true);
  const temp = tempPathFor(path);
  const { flusher } = options;
  // With a flusher the file is flushed after the link, so that flush also covers the new name
  // (with the directory's fsync); without, its content is fsynced before and the new directory
  // entry rides the journal.
  const { handle, ...identity } = await writeTemp(fs, temp, data, !flusher && (options.durable ?? true), true);
  let linked = false;
  try {
    await fs.link(temp, path);
    linked = true;
    return identity;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.unlink(temp).catch(() => undefined);
    if (flusher && linked) {
      // `flushAs`: the path callers know the file by, when `path` goes through a descriptor that is closed before the flush.
      flusher.file(options.flushAs ?? path, handle);
      flusher.directory(dirname(options.flushAs ?? path));
    } else {
      await handle.close().catch(() => undefined);
    }
  }
}

async function createDirect(fs: FsPort, path: string, data: string, durable: boolean): Promise<false | FileIdentity> {
  let handle;
  try {
    handle = await fs.open(path, 'wx', 0o600);
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  }
  try {
    await handle.writeFile(data);
    if (durable) await handle.sync();
    const { dev, ino, mtimeMs, size } = await handle.stat();
    return { dev, ino, mtimeMs, size };
  } catch (err) {
    await fs.unlink(path).catch(() => undefined);
    throw err;
  } finally {
    await handle.close().catch(() => undefined);
  }
}

/**
 * Reads and parses a JSON file, undefined when it does not exist. Never follows a symlink at
 * `path` and accepts only a regular file (E_STATE_CORRUPT otherwise): callers pass the result
 * through a schema (`parseRecord`).
 */
export async function readJsonFile(fs: FsPort, path: string): Promise<unknown | undefined> {
  const text = await readFileNoFollow(fs, path);
  return text === undefined ? undefined : JSON.parse(text) as unknown;
}

/**
 * Writes `text` over the file at `path` in place, only when that is a regular file of exactly
 * `text`'s length in bytes whose one name is `path`, checked on the opened file after the open
 * (a file opened through a second name planted there, and swapped away since, must not be
 * written). Overwriting reuses the inode: on ext4 making and dropping an inode per write (a temp
 * renamed over the old file) costs several times more. A reader may catch the write half done
 * and see neither value. For local filesystems only: a network client may keep serving the old
 * content of a file written over in place, where a new file is looked up afresh.
 * @returns false when the file is not such a file (missing included) or the write failed or fell
 * short; the caller then writes it whole (writeFileAtomic)
 */
export async function overwriteSameSize(fs: FsPort, path: string, text: string): Promise<boolean> {
  let opened;
  try {
    opened = await openRegularOn(fs, path, constants.O_WRONLY | constants.O_NONBLOCK);
  } catch {
    return false;
  }
  if ('notRegular' in opened) return false;
  try {
    const stat = await opened.stat();
    if (stat.size !== Buffer.byteLength(text) || stat.nlink !== 1) return false;
    const named = await fs.lstat(path);
    if (named.ino !== stat.ino || named.dev !== stat.dev) return false;
    const { bytesWritten } = await opened.write(text, 0, 'utf8');
    return bytesWritten === stat.size;
  } catch {
    return false;
  } finally {
    await opened.close().catch(() => undefined);
  }
}
