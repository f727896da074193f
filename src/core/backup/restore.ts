import {
  closeSync, constants, fchmodSync, fchownSync, ftruncateSync, futimesSync, lchownSync, linkSync, lutimesSync,
  openSync, symlinkSync, write, writeSync,
} from 'node:fs';
import { chmod, lchown, link, lstat, lutimes, open, readdir, rename, rm, symlink, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { ExecaCommandRunner, type CommandRunner } from '../command-runner.js';
import { ErrorCodes, StowageError, asStorageFull, messageOf } from '../errors.js';
import { randomHex } from '../random-hex.js';
import { onLocalFilesystem } from '../local-fs.js';
import type { BackupRecord, Entry } from './format.js';
import { readerLock, withLock } from './locks.js';
import { ManifestRules, checkFileSize, parentOf, refusedEntry } from './manifest-rules.js';
import { assertVolumeName } from './objects.js';
import { Turns, type CommonOptions } from './options.js';
import { rangesWithData } from './zeros.js';
import { fsPath } from './raw-names.js';
import type { Repository } from './repository.js';
import { RestoreDirs, nsToSeconds } from './restore-dirs.js';
import { XattrRestorer } from './xattrs.js';

const WRITE_FLAGS = constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW;
/** Files read (backup) or written (restore) at once. */
const FILES_AHEAD = 8;
/**
 * Chunks this large are written through the thread pool while the next chunk is fetched,
 * decompressed and hashed: written synchronously, the writes took a third of the main thread's
 * time in a restore, which is the busy thread. Smaller writes cost less than a round trip.
 */
const WRITE_BEHIND_FROM = 128 * 1024;

/** Writes all of `data` at `position` of `fd` through the thread pool. */
function writeAllAt(fd: number, data: Buffer, position: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const from = (done: number) => {
      write(fd, data, done, data.length - done, position + done, (err, n) => {
        if (err) reject(err);
        else if (done + n < data.length) from(done + n);
        else resolve();
      });
    };
    from(0);
  });
}

/**
 * Chunks of zeros this restore has read and checked once: in a sparse file they are holes, so
 * the next time one comes up it is skipped without reading, decompressing and hashing it again
 * (a 2 GiB image file with little data is one chunk of zeros repeated hundreds of times).
 */
class ZeroChunks {
  private readonly lengths = new Map<string, number>();

  lengthOf(id: string): number | undefined {
    return this.lengths.get(id);
  }

  add(id: string, length: number): void {
    // Ids of zeros differ only by length, so a few; bounded all the same.
    if (this.lengths.size >= 256) this.lengths.clear();
    this.lengths.set(id, length);
  }
}

/** Writes the ranges of `data` at `position` of `fd` through the thread pool, one after the other. */
async function writeRangesAt(fd: number, data: Buffer, position: number, ranges: Array<[number, number]>): Promise<void> {
  for (const [start, end] of ranges) await writeAllAt(fd, data.subarray(start, end), position + start);
}

export interface RestoreOptions extends CommonOptions {
  /** Runs `mknod` for FIFOs and devices (the daemon's runner; a plain one by default). */
  commands?: CommandRunner;
}

/**
 * Makes a FIFO or device node at `path` with `mknod` (Node has no call for it): under a temporary
 * name in `target`, a plain path an argv can hold whatever the entry's name, then renamed into
 * place. Making a device needs root, as with tar.
 */
async function makeNode(commands: CommandRunner, record: BackupRecord, entry: Entry, target: string, path: string | Buffer): Promise<void> {
  const temp = join(target, `.stowage-node-${randomHex(8)}`);
  const kind = entry.type === 'fifo' ? ['p'] : [entry.type === 'chardev' ? 'c' : 'b', String(entry.device!.major), String(entry.device!.minor)];
  try {
    await commands.run('mknod', ['-m', '600', '--', temp, ...kind]);
  } catch (err) {
    throw new StowageError(ErrorCodes.BACKEND_COMMAND, `backup ${record.volume}/${record.id}: cannot make ${entry.type === 'fifo' ? 'the FIFO' : 'the device'} ` +
      `${JSON.stringify(entry.path.slice(0, 300))}: ${messageOf(err)}${entry.type === 'fifo' || process.getuid?.() === 0 ? '' : ' (making a device needs root)'}`, { cause: err });
  }
  try {
    await rename(temp, path);
  } catch (err) {
    await unlink(temp).catch(() => undefined);
    throw err;
  }
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
  return withLock(repo.store, readerLock(`restore of ${volume}/${backupId}`, options), async () => {
    await repo.reloadIndex();
    const record = await repo.readBackupRecord(volume, backupId);
    try {
      return await restoreEntries(repo, record, target, options);
    } catch (err) {
      repo.releasePackCache();
      // Everything under target is ours: it was empty. rm never follows symlinks. Names as bytes:
      // one that is not UTF-8, read as a string, would name nothing and stay behind.
      const prefix = Buffer.from(`${target}/`);
      for (const name of await readdir(target, { encoding: 'buffer' })) await rm(Buffer.concat([prefix, name]), { recursive: true, force: true });
      throw asStorageFull(err, `the storage restored into (${target})`, 'make room for the backup\'s files and restore again');
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
  let dirs: RestoreDirs | undefined;
  // The rules verify applies too; what they cannot see (what a hardlink finds) is checked on the target.
  const rules = new ManifestRules(record);
  // Files are written a few at a time; what depends on them (a directory's times, a hardlink)
  // waits for all of them first.
  const jobs = new Set<Promise<void>>();
  const zeroChunks = new ZeroChunks();
  let commands: CommandRunner | undefined;
  const xattrs = new XattrRestorer(() => (commands ??= options.commands ?? new ExecaCommandRunner()), target);
  let failure: { error: unknown } | undefined;
  const barrier = async () => {
    await Promise.all(jobs);
    if (failure) throw failure.error;
  };
  const leaveDir = async () => {
    await barrier();
    await dirs!.leave();
  };
  try {
    for await (const entry of repo.entries(record)) {
      rules.next(entry);
      if (dirs !== undefined) {
        // The rules found the parent among the directories still open, which are these.
        const parent = parentOf(entry.path);
        while (dirs.innermost !== parent) await leaveDir();
      }
      if (entry.xattrs) xattrs.add(entry.path, entry.xattrs, entry.type === 'dir');
      if (dirs === undefined) {
        // The root, the first entry, restored into target itself: a directory (the manifest's schema).
        dirs = await RestoreDirs.open(target, entry, local, asRoot);
        progress.entries += 1;
        options.onProgress?.({ ...progress });
        continue;
      }
      const path = dirs.place(entry.path);
      switch (entry.type) {
        case 'dir':
          await dirs.enter(entry);
          break;
        case 'symlink':
          if (local) {
            symlinkSync(fsPath(entry.target!), path);
            if (asRoot) lchownSync(path, entry.uid, entry.gid);
            lutimesSync(path, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
          } else {
            await symlink(fsPath(entry.target!), path);
            if (asRoot) await lchown(path, entry.uid, entry.gid);
            await lutimes(path, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
          }
          break;
        case 'fifo':
        case 'chardev':
        case 'blockdev':
          commands ??= options.commands ?? new ExecaCommandRunner();
          await makeNode(commands, record, entry, target, path);
          if (asRoot) await lchown(path, entry.uid, entry.gid);
          // Not a symlink: made here a moment ago, in a volume nothing else reaches during a restore.
          await chmod(path, entry.mode);
          await lutimes(path, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
          break;
        case 'hardlink': {
          const first = entry.target!;
          await barrier();
          const source = await dirs.restoredEntry(first);
          if (!source) throw refusedEntry(record, entry.path, `its hardlink target ${JSON.stringify(first)} is not a restored file, symlink, FIFO or device`);
          try {
            if (local) linkSync(source.at, path);
            else await link(source.at, path);
          } finally {
            source.release();
          }
          break;
        }
        case 'file': {
          const job: Promise<void> = (local ? writeLocalFileEntry : writeFileEntry)(repo, record, entry, path, asRoot, progress, options, zeroChunks)
            .catch((error: unknown) => { failure ??= { error }; })
            .finally(() => { jobs.delete(job); });
          jobs.add(job);
          while (jobs.size >= FILES_AHEAD) await Promise.race(jobs);
          if (failure) throw failure.error;
          break;
        }
      }
      if (xattrs.due) await xattrs.setBatch(barrier);
      progress.entries += 1;
      options.onProgress?.({ ...progress });
      if (local) await turns.pause();
    }
    rules.end();
    while (dirs!.depth > 0) await leaveDir();
    await barrier();
    for (const text of await xattrs.finish(barrier)) options.onWarning?.(text);
    // Files finish after their entry was counted: the last report is the whole restore.
    options.onProgress?.({ ...progress });
  } finally {
    // Never clean up under a write still running.
    await Promise.allSettled(jobs);
    dirs?.closeAll();
  }
  repo.releasePackCache();
  return progress;
}

async function writeFileEntry(
  repo: Repository, record: BackupRecord, entry: Entry, path: string | Buffer, asRoot: boolean,
  progress: { entries: number; files: number; bytes: number }, options: RestoreOptions, zeroChunks: ZeroChunks,
): Promise<void> {
  const handle = await open(path, WRITE_FLAGS, 0o600);
  try {
    let written = 0;
    for (const id of entry.chunks!) {
      let length = entry.sparse ? zeroChunks.lengthOf(id) : undefined;
      if (length === undefined) {
        const { data, release } = await repo.leaseBlob(id, { wholePacks: true });
        try {
          const ranges: Array<[number, number]> = entry.sparse ? rangesWithData(data, written) : [[0, data.length]];
          if (entry.sparse && ranges.length === 0) zeroChunks.add(id, data.length);
          for (const [start, end] of ranges) await handle.write(data, start, end - start, written + start);
        } finally {
          release();
        }
        length = data.length;
      }
      written += length;
      progress.bytes += length;
      options.onProgress?.({ ...progress });
    }
    checkFileSize(record, entry, written);
    // A hole at the end is the file's length past its last write.
    if (entry.sparse) await handle.truncate(written);
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
 * O_NOFOLLOW), one write per chunk (per range with data, in a sparse file), then owner, mode
 * and times on the descriptor, close. The
 * chunks' reads (a pack fetch, decompression of large chunks) still overlap across files.
 */
async function writeLocalFileEntry(
  repo: Repository, record: BackupRecord, entry: Entry, path: string | Buffer, asRoot: boolean,
  progress: { entries: number; files: number; bytes: number }, options: RestoreOptions, zeroChunks: ZeroChunks,
): Promise<void> {
  const fd = openSync(path, WRITE_FLAGS, 0o600);
  // One large write in flight behind the next chunk's fetch; awaited before the descriptor closes.
  let behind: Promise<void> = Promise.resolve();
  try {
    let written = 0;
    for (const id of entry.chunks!) {
      const zeroLength = entry.sparse ? zeroChunks.lengthOf(id) : undefined;
      if (zeroLength !== undefined) {
        written += zeroLength;
        progress.bytes += zeroLength;
        options.onProgress?.({ ...progress });
        continue;
      }
      const { data, release } = await repo.leaseBlob(id, { wholePacks: true });
      try {
        await behind;
      } catch (err) {
        release();
        throw err;
      }
      // A sparse file's blocks of zeros are left unwritten: holes, as they were when backed up.
      const ranges: Array<[number, number]> = entry.sparse ? rangesWithData(data, written) : [[0, data.length]];
      if (entry.sparse && ranges.length === 0) zeroChunks.add(id, data.length);
      if (data.length >= WRITE_BEHIND_FROM && ranges.length > 0) {
        behind = writeRangesAt(fd, data, written, ranges).finally(release);
        // Handled here for the time it waits; the await above or below still sees the failure.
        behind.catch(() => undefined);
      } else {
        try {
          for (const [start, end] of ranges) {
            for (let done = start; done < end;) done += writeSync(fd, data, done, end - done, written + done);
          }
        } finally {
          release();
        }
      }
      written += data.length;
      progress.bytes += data.length;
      options.onProgress?.({ ...progress });
    }
    await behind;
    checkFileSize(record, entry, written);
    // A hole at the end is the file's length past its last write.
    if (entry.sparse) ftruncateSync(fd, written);
    if (asRoot) fchownSync(fd, entry.uid, entry.gid);
    // After chown, which clears set-id bits.
    fchmodSync(fd, entry.mode);
    futimesSync(fd, nsToSeconds(entry.atimeNs), nsToSeconds(entry.mtimeNs));
  } finally {
    // Never close under a write still running: the number could name another file by then.
    await behind.catch(() => undefined);
    closeSync(fd);
  }
  progress.files += 1;
}
