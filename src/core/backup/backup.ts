import { closeSync, readlinkSync, readSync, type BigIntStats } from 'node:fs';
import { readlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { ExecaCommandRunner, type CommandRunner } from '../command-runner.js';
import { ErrorCodes, isStowageError, messageOf } from '../errors.js';
import { randomHex } from '../random-hex.js';
import { onLocalFilesystem } from '../local-fs.js';
import { isBlockBackup } from './block-format.js';
import { Chunker, chunkStream } from './chunker.js';
import { newBackupId, type BackupRecord, type Entry } from './format.js';
import { waitingForGc, withLock } from './locks.js';
import { guidedChunks, previousLayout } from './guided-chunking.js';
import { ManifestWriter } from './manifest.js';
import { assertVolumeName } from './objects.js';
import { Turns, type CommonOptions } from './options.js';
import { repairedNote, type PackWriter } from './pack-writer.js';
import type { Repository } from './repository.js';
import { ENTRY_XATTR_BYTES_MAX, XattrsSchema, type Xattr } from './xattrs.js';
import { AttributedEntries, XattrReader, type XattrTicket } from './xattr-reader.js';
import { ParentCursor, walk, type OpenDir, type Walked } from './walk.js';
import { deviceNumbers, fileBase, inodeNumber, ownFacts } from './entry-stat.js';
import { changedWhileRead, openWalked, openWalkedSync } from './walked-file.js';
import { LinkedNames } from './hardlinks.js';
import { BufferPool } from './buffer-pool.js';
import { nameFromBytes } from './raw-names.js';

const MAX_WARNINGS = 100;
/** The note of a backup made without extended attributes. */
export const XATTRS_LEFT_OUT = 'extended attributes were left out, as asked when it was made: a restore of it sets none';
/** Characters of one warning kept in the record (the schema takes up to 4096). */
const MAX_WARNING_LENGTH = 1024;
/** Files read at once. */
const FILES_AHEAD = 8;
/**
 * Read size for large files on a local filesystem: most chunks (512 KiB on average) then lie
 * inside one read, uncopied. 4 MiB, not 8: a backup of the bench tree peaked at 142-146 MiB
 * instead of 149-162 MiB, in the same time; 2 MiB peaked higher again (159-160 MiB), as more
 * chunks straddle two reads and are copied out.
 */
const LOCAL_READ_SIZE = 4 * 1024 * 1024;
/** Files up to this size are read into a buffer of their own; larger ones into pooled buffers. */
const OWN_BUFFER_MAX = 256 * 1024;
/**
 * Read buffers (LOCAL_READ_SIZE each) in use at once, at most: they bound a backup's memory.
 * Two: one being cut and hashed while the other is read or waits for its compressions.
 */
const READ_BUFFERS = 2;
/*
 * Read buffers for large files (a BufferPool), reused and bounded. Reused: on the virtual machines measured,
 * the page faults of a fresh buffer per read cost more than reading the data (256 MiB of
 * files: 200-740 ms with fresh buffers, 40-110 ms with one reused). Bounded: the files read at
 * once each held a read buffer and the chunks cut from it, which made a backup's peak RSS
 * about 300 MB. A buffer goes back once every chunk cut from it has been hashed and, if new,
 * compressed and copied into its pack (PackWriter.add's onReleased).
 */

export interface BackupOptions extends CommonOptions {
  volume: string;
  /**
   * The backup whose files cache to use: a backup id of the same volume, undefined for the
   * volume's latest backup, or false to read every file. Or a backup this caller made, with the
   * digest of its record (backupRecordDigest): used only while its record is still that one,
   * so a record another machine forged in its place cannot pass its chunks off as unchanged files.
   */
  parent?: string | false | { id: string; sha256: string };
  /** Sockets (and files that vanish while read) are skipped; each is reported here and in the record. */
  onWarning?: (message: string) => void;
  /** Whether to back up extended attributes (xattrs.ts; default true): `commands` runs getfattr. false notes it in the record (XATTRS_LEFT_OUT). */
  xattrs?: boolean;
  commands?: CommandRunner;
  /** Recorded in the backup record as given: the snapshot read and the volume's backend. */
  origin?: Pick<BackupRecord, 'snapshot' | 'backend'>;
}

/**
 * Backs up the tree at `dir` as a new backup of `volume`: every file is chunked by content and
 * its chunks added to the repository unless already there; files whose inode, size, mtime and
 * ctime match the parent backup's entry are not read again. Symlinks are stored, never
 * followed; hardlinks are stored once with the other names pointing at the first; FIFOs and
 * devices are stored as what they are (a device with its numbers); sockets are skipped with a
 * warning. Memory stays bounded: one chunk, one pack, one
 * manifest blob, one directory listing per level, and two batches of entries waiting for their
 * extended attributes (xattr-reader.ts). The record is written last, so a backup
 * that fails or is killed leaves only unreferenced packs, which GC removes.
 */
export async function backupTree(dir: string, repo: Repository, options: BackupOptions): Promise<BackupRecord> {
  assertVolumeName(options.volume);
  const now = options.now ?? Date.now;
  return withLock(repo.store, { kind: 'shared', purpose: `backup of ${options.volume}`, ...waitingForGc(() => options.onProgress?.({ entries: 0, files: 0, bytes: 0 })), owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    const startedAt = new Date(now()).toISOString();
    let parent: BackupRecord | undefined;
    // An object under the volume's records that does not load (another machine's, damaged) is
    // not a parent, and does not stop the backup: it is said in the backup's warnings.
    const unusable: string[] = [];
    if (typeof options.parent === 'string') parent = await repo.readBackupRecord(options.volume, options.parent);
    else if (typeof options.parent === 'object') {
      const { id, sha256: digest } = options.parent;
      parent = await repo.readBackupRecordAsWritten(options.volume, id, digest).catch((err: unknown) => {
        // Deleted since: nothing to compare with. Changed since: not to be trusted, and said.
        if (!isStowageError(err, ErrorCodes.BACKUP_NOT_FOUND)) unusable.push(`the previous backup ${id} is not used as this backup's parent, so every file is read: ${messageOf(err)}`);
        return undefined;
      });
      if (parent && isBlockBackup(parent)) parent = undefined;
    }
    // A block backup has no files to compare with: the latest file-level backup serves.
    else if (options.parent === undefined) {
      parent = (await repo.listBackups(options.volume, { onBroken: (key, err) => unusable.push(`${key} is not a backup record, so not this backup's parent: ${messageOf(err)}`) }))
        .filter((r) => !isBlockBackup(r)).at(-1);
    }
    // After choosing the parent: a backup's record is written after its packs and indexes, so
    // the index read now holds every blob of a parent that finished a moment ago.
    await repo.reloadIndex();
    const writer = repo.newWriter();
    const manifest = new ManifestWriter(writer);
    const stats = { entries: 0, files: 0, bytes: 0, filesRead: 0, bytesRead: 0, skipped: 0 };
    const warnings: string[] = [];
    // A name deep in a tree can be long: the record keeps each warning bounded.
    const bounded = (text: string) => (text.length > MAX_WARNING_LENGTH ? `${text.slice(0, MAX_WARNING_LENGTH - 3)}...` : text);
    // The record holds MAX_WARNINGS (its schema refuses more): past them, warnings go only to onWarning.
    const note = (message: string) => {
      if (warnings.length < MAX_WARNINGS) warnings.push(bounded(message));
      options.onWarning?.(bounded(message));
    };
    // A damaged parent (a pack of its manifest lost) must not keep every later backup from being made.
    const cursor = new ParentCursor(parent ? repo.entries(parent)[Symbol.asyncIterator]() : undefined, (err) =>
      note(`the previous backup ${parent!.id}'s list of files cannot be read past some point, so the files after it are read again: ${err.message}`));
    const warn = (message: string) => {
      stats.skipped += 1;
      note(message);
    };
    for (const text of unusable.slice(0, 10)) warnings.push(bounded(text));
    const reader = options.xattrs === false ? undefined : new XattrReader(options.commands ?? new ExecaCommandRunner(), note);
    // Setting an attribute changes an inode's ctime: an entry with the inode and ctime it had in
    // a parent whose attributes were all read keeps the parent's, unread.
    const carryXattrs = parent?.xattrsRead === true;
    const xattrsOf = (walked: Walked, previous: Entry | undefined): XattrTicket | Xattr[] | undefined => {
      if (!reader) return undefined;
      if (carryXattrs && previous && previous.type !== 'hardlink' && !previous.xattrsPartial
        && previous.ino === inodeNumber(walked.stat.ino) && previous.ctimeNs === walked.stat.ctimeNs.toString()) return previous.xattrs ?? [];
      return reader.read(walked.path, walked.abs, walked.parent);
    };
    const withXattrs = (entry: Entry, xattrs: Xattr[] | undefined, partial: boolean): Entry => {
      if (entry.type === 'hardlink') return entry;
      const marked: Entry = partial ? { ...entry, xattrsPartial: true } : entry;
      if (!xattrs?.length) return marked;
      if (XattrsSchema.safeParse(xattrs).success) return { ...marked, xattrs };
      warn(`${entry.path}: its extended attributes are left out (more than 64 of them, or more than ${ENTRY_XATTR_BYTES_MAX} bytes)`);
      return { ...entry, xattrsPartial: true };
    };
    const links = new LinkedNames();
    // Entries in walk order; files are read a few at a time ahead of the manifest, which takes
    // them in order (file system calls wait on the thread pool: overlapping them hides that).
    // Their attributes are read a batch at a time, while entries wait for them in `attributed`.
    const queue: Array<{ entry: Promise<Entry | undefined>; xattrs?: XattrTicket | Xattr[] }> = [];
    const attributed = new AttributedEntries(reader, (entry, xattrs, partial) => manifest.add(withXattrs(entry, xattrs, partial)));
    const drain = async (limit: number) => {
      while (queue.length > limit) {
        const next = queue.shift()!;
        const entry = await next.entry;
        if (!entry) continue;
        await attributed.push(entry, next.xattrs);
        stats.entries += 1;
        options.onProgress?.({ entries: stats.entries, files: stats.files, bytes: stats.bytes });
      }
    };
    try {
      const turns = new Turns();
      const readBuffers = new BufferPool(READ_BUFFERS, LOCAL_READ_SIZE);
      const local = options.localFastPath !== false && onLocalFilesystem(dir) === true;
      for await (const walked of walk(dir, local, turns, (at, why) => warn(`${at}: ${why}`))) {
        const { path, abs, stat, local: entryLocal, parent: holder } = walked;
        const previous = await cursor.find(path);
        const own = ownFacts(stat);
        let entry: Promise<Entry | undefined>;
        if (stat.isDirectory()) {
          entry = Promise.resolve({ path, type: 'dir', ...own, size: 0 });
        } else if (stat.isSymbolicLink()) {
          let target: Buffer;
          try {
            target = entryLocal ? readlinkSync(abs, 'buffer') : await readlink(abs, 'buffer');
          } catch (err) {
            if (!changedWhileRead(err, path, warn)) throw err;
            continue;
          }
          const symlink: Entry = { path, type: 'symlink', ...own, size: 0, target: nameFromBytes(target) };
          // A symlink, FIFO or device can have several names too (link(2) takes any but a directory).
          entry = links.entry(path, stat, undefined, () => Promise.resolve(symlink));
        } else if (stat.isFile()) {
          // The file's directory stays open until the file is: it may be opened after the walk moved on.
          entry = links.entry(path, stat, holder?.hold(), (dir) => fileEntry(path, abs, dir, stat, entryLocal ? turns : undefined, readBuffers, previous, repo, writer, stats, options, warn).then((done) => {
            if (done) stats.files += 1;
            return done;
          }));
          // Its failure is taken when the manifest reaches it (drain) or in the finally below;
          // until then it must not count as unhandled (a process-level unhandled rejection
          // would end the daemon).
          entry.catch(() => {});
        } else if (stat.isFIFO()) {
          const fifo: Entry = { path, type: 'fifo', ...own, size: 0 };
          entry = links.entry(path, stat, undefined, () => Promise.resolve(fifo));
        } else if (stat.isCharacterDevice() || stat.isBlockDevice()) {
          const device: Entry = { path, type: stat.isCharacterDevice() ? 'chardev' : 'blockdev', ...own, size: 0, device: deviceNumbers(stat.rdev) };
          entry = links.entry(path, stat, undefined, () => Promise.resolve(device));
        } else {
          // A socket is only an address while its server runs: nothing to restore.
          warn(`${path}: socket skipped`);
          continue;
        }
        queue.push({ entry, xattrs: xattrsOf(walked, previous) });
        await drain(FILES_AHEAD);
      }
      await drain(0);
      await attributed.finish();
      // Files finish after the walk reported them: the last report is the whole backup.
      options.onProgress?.({ entries: stats.entries, files: stats.files, bytes: stats.bytes });
    } finally {
      // A failure leaves other reads running: let them end before the lock is released.
      await Promise.allSettled(queue.map((queued) => queued.entry));
      await reader?.finish();
    }
    const manifestIds = await manifest.finish();
    await writer.flush();
    if (writer.stats.repaired > 0) note(repairedNote(writer.stats.repaired));
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
      ...(reader?.complete ? { xattrsRead: true as const } : {}),
      // Said where `backup inspect` shows it: a restore of this backup sets no attributes.
      ...(reader ? {} : { notes: [XATTRS_LEFT_OUT] }),
      ...options.origin,
    };
    options.signal?.throwIfAborted();
    // Past our lock's expiry a GC may have run: a record must not name chunks it removed.
    lock.assertHeld();
    await repo.putBackupRecord(record);
    return record;
  });
}

/**
 * A file's entry: from the parent backup's when the files cache says it is unchanged, else read.
 * `dir` is the file's directory, held for this file: released once the file is open.
 */
async function fileEntry(
  path: string, abs: string | Buffer, dir: OpenDir | undefined, walked: BigIntStats, localTurns: Turns | undefined, readBuffers: BufferPool, previous: Entry | undefined,
  repo: Repository, writer: PackWriter, stats: { entries: number; files: number; filesRead: number; bytesRead: number; bytes: number }, options: BackupOptions,
  warn: (message: string) => void,
): Promise<Entry | undefined> {
  let held = dir;
  const letGo = () => {
    held?.release();
    held = undefined;
  };
  try {
    return await readFileEntry(path, abs, letGo, walked, localTurns, readBuffers, previous, repo, writer, stats, options, warn);
  } finally {
    letGo();
  }
}

async function readFileEntry(
  path: string, abs: string | Buffer, opened: () => void, walked: BigIntStats, localTurns: Turns | undefined, readBuffers: BufferPool, previous: Entry | undefined,
  repo: Repository, writer: PackWriter, stats: { entries: number; files: number; filesRead: number; bytesRead: number; bytes: number }, options: BackupOptions,
  warn: (message: string) => void,
): Promise<Entry | undefined> {
  if (previous?.type === 'file' && previous.ino === inodeNumber(walked.ino) && previous.size === Number(walked.size)
    && previous.mtimeNs === walked.mtimeNs.toString() && previous.ctimeNs === walked.ctimeNs.toString()
    && previous.chunks!.every((id) => repo.has(id))) {
    stats.bytes += previous.size;
    return { ...fileBase(path, walked), size: previous.size, chunks: previous.chunks! };
  }
  const chunks: string[] = [];
  let size = 0;
  const addChunk = async (chunk: Buffer, onReleased?: () => void, knownId?: string) => {
    chunks.push((await writer.add('data', chunk, knownId, onReleased)).id);
    size += chunk.length;
    stats.bytesRead += chunk.length;
    stats.bytes += chunk.length;
    options.onProgress?.({ entries: stats.entries, files: stats.files, bytes: stats.bytes });
  };
  // A changed file whose previous chunks are known is scanned only around its changes.
  const layout = previous?.type === 'file' ? previousLayout(previous.chunks ?? [], (id) => repo.locate(id)?.rawLength) : undefined;
  if (layout && localTurns) {
    const got = openWalkedSync(abs, path, warn);
    opened();
    if (!got) return undefined;
    const { fd, stat } = got;
    try {
      const read = (buffer: Buffer, offset: number, length: number, position: number) => readSync(fd, buffer, offset, length, position);
      await guidedChunks(read, layout, repo.config.chunker, readBuffers, LOCAL_READ_SIZE, addChunk, () => localTurns.pause());
    } finally {
      closeSync(fd);
    }
    stats.filesRead += 1;
    return { ...fileBase(path, stat), size, chunks };
  }
  if (layout) {
    const got = await openWalked(abs, path, warn);
    opened();
    if (!got) return undefined;
    const { handle, stat } = got;
    try {
      const read = async (buffer: Buffer, offset: number, length: number, position: number) => (await handle.read(buffer, offset, length, position)).bytesRead;
      await guidedChunks(read, layout, repo.config.chunker, readBuffers, LOCAL_READ_SIZE, addChunk, async () => {});
    } finally {
      await handle.close();
    }
    stats.filesRead += 1;
    return { ...fileBase(path, stat), size, chunks };
  }
  if (localTurns) {
    // open, fstat, read (a small file in one), close.
    const got = openWalkedSync(abs, path, warn);
    opened();
    if (!got) return undefined;
    const { fd, stat } = got;
    try {
      const chunker = new Chunker(repo.config.chunker);
      // One byte more than the size: a file that grew since lstat shows it and is read on.
      let want = stat.size < BigInt(LOCAL_READ_SIZE) ? Number(stat.size) + 1 : LOCAL_READ_SIZE;
      for (;;) {
        if (want <= OWN_BUFFER_MAX) {
          // A small file: its own buffer, handed to the chunker as owned (its chunk is a view).
          const buffer = Buffer.allocUnsafe(want);
          const got = readSync(fd, buffer, 0, want, null);
          if (got > 0) for (const chunk of chunker.push(buffer.subarray(0, got), true)) await addChunk(chunk);
          if (got < want) break;
          want = LOCAL_READ_SIZE;
          continue;
        }
        // A pooled buffer, lent to the chunker: chunks are views of it, what the chunker keeps
        // is copied, and the buffer returns to the pool once no chunk needs it.
        const buffer = await readBuffers.take();
        let users = 1;
        const release = () => { if (--users === 0) readBuffers.give(buffer); };
        let got: number;
        try {
          got = readSync(fd, buffer, 0, want, null);
          if (got > 0) {
            for (const chunk of chunker.push(buffer.subarray(0, got), 'lent')) {
              users += 1;
              await addChunk(chunk, release);
            }
          }
        } finally {
          release();
        }
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
    return { ...fileBase(path, stat), size, chunks };
  }
  const got = await openWalked(abs, path, warn);
  opened();
  if (!got) return undefined;
  const { handle, stat } = got;
  try {
    // A file below the minimum chunk size is one chunk: one read, no stream, and the buffer is ours.
    const small = stat.size < BigInt(repo.config.chunker.minSize);
    const input = small ? [await handle.readFile()] : handle.createReadStream({ highWaterMark: 1024 * 1024, autoClose: false });
    for await (const chunk of chunkStream(input, repo.config.chunker, small)) await addChunk(chunk);
    stats.filesRead += 1;
    // A file that changed while read keeps what was read; its changed ctime makes the next
    // backup read it again.
    return { ...fileBase(path, stat), size, chunks };
  } finally {
    await handle.close();
  }
}
