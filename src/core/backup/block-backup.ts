import { constants } from 'node:fs';
import { open, type FileHandle } from 'node:fs/promises';
import { hostname } from 'node:os';
import { ErrorCodes, StowageError } from '../errors.js';
import { randomHex } from '../random-hex.js';
import { BLOCK_SIZE, BlockManifestWriter, blockCount, blockList, isBlockBackup } from './block-format.js';
import { overlaps, type ByteRange } from './block-support.js';
import { newBackupId, type BackupRecord } from './format.js';
import { readerLock, waitingForGc, withLock } from './locks.js';
import { assertVolumeName } from './objects.js';
import type { CommonOptions } from './options.js';
import { repairedNote } from './pack-writer.js';
import type { Repository } from './repository.js';
import { BufferPool } from './buffer-pool.js';

/** Block buffers in use at once (reading, hashing, compressing): they bound a block backup's memory. A buffer returns once its block is hashed and, if new, packed. */
const BLOCK_BUFFERS = 6;

export interface BlockBackupOptions extends CommonOptions {
  volume: string;
  sizeBytes: number;
  filesystem: string;
  /**
   * The byte ranges to read from the device: a first backup's mapped ranges, an incremental's
   * changed ranges. Blocks outside them are holes (no base) or the base backup's blocks.
   */
  ranges: ByteRange[];
  /** The block backup of the same device whose snapshot the ranges were computed against. */
  base?: BackupRecord;
  /** Recorded as given: the snapshot read, the volume's backend. */
  origin?: Pick<BackupRecord, 'snapshot' | 'backend'>;
  /** The snapshot's identity on its pool, recorded for the next backup to find its base. */
  source?: string;
  snapshotTaken?: boolean;
  notes?: string[];
}

async function readFully(handle: FileHandle, buffer: Buffer, length: number, position: number, what: string): Promise<void> {
  let done = 0;
  while (done < length) {
    const { bytesRead } = await handle.read(buffer, done, length - done, position + done);
    if (bytesRead === 0) throw new StowageError(ErrorCodes.BACKEND_COMMAND, `${what} ended at byte ${position + done}, before its recorded size`);
    done += bytesRead;
  }
}

const ZEROS = Buffer.alloc(BLOCK_SIZE);
const isZero = (data: Buffer) => data.equals(ZEROS.subarray(0, data.length));

/**
 * Backs up the block device at `device` as a new block backup of `volume`: the blocks that
 * overlap `ranges` are read, an all-zero block is a hole, others are stored content-addressed
 * (a block already in the repository, from any volume or backup, is not stored again); the
 * other blocks are taken from `base`, or are holes without one. A base block whose chunk is no
 * longer in the repository is read again. The manifest lists every block; the record is
 * written last, under a shared lock, like a file-level backup's.
 */
export async function backupBlocks(device: string, repo: Repository, options: BlockBackupOptions): Promise<BackupRecord> {
  assertVolumeName(options.volume);
  const { sizeBytes } = options;
  if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new StowageError(ErrorCodes.INVALID_REQUEST, `device size ${sizeBytes} is not a size`);
  const base = options.base;
  if (base && (!isBlockBackup(base) || base.device?.sizeBytes !== sizeBytes || base.device.blockSize !== BLOCK_SIZE)) {
    throw new StowageError(ErrorCodes.INTERNAL, `backup ${base.id} is not a block backup of a ${sizeBytes}-byte device: it cannot be a base`);
  }
  const now = options.now ?? Date.now;
  return withLock(repo.store, { kind: 'shared', purpose: `backup of ${options.volume}`, ...waitingForGc(() => options.onProgress?.({ entries: 0, files: 0, bytes: 0 })), owner: options.owner, ttlMs: options.lockTtlMs, now: options.now }, async (lock) => {
    const startedAt = new Date(now()).toISOString();
    await repo.reloadIndex();
    const total = blockCount(sizeBytes, BLOCK_SIZE);
    const baseBlocks = base ? blockList(repo, base)[Symbol.asyncIterator]() : undefined;
    const writer = repo.newWriter();
    const manifest = new BlockManifestWriter(writer);
    const buffers = new BufferPool(BLOCK_BUFFERS, BLOCK_SIZE);
    const stats = { entries: total, files: 1, bytes: 0, filesRead: 0, bytesRead: 0, skipped: 0 };
    const handle = await open(device, constants.O_RDONLY);
    // Block ids in order; reads and hashes run a few blocks ahead of the manifest.
    const queue: Array<Promise<string | null>> = [];
    const drain = async (limit: number) => {
      while (queue.length > limit) await manifest.add(await queue.shift()!);
    };
    try {
      for (let i = 0; i < total; i += 1) {
        const start = i * BLOCK_SIZE;
        const length = Math.min(BLOCK_SIZE, sizeBytes - start);
        let from: string | null = null;
        if (baseBlocks) {
          const next = await baseBlocks.next();
          if (next.done) throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `the block manifest of base backup ${base!.id} ended early`);
          from = next.value;
        }
        const read = overlaps(options.ranges, start, start + length) || (from !== null && !repo.has(from));
        if (!read) {
          if (from !== null) stats.bytes += length;
          queue.push(Promise.resolve(from));
        } else {
          const buffer = await buffers.take();
          const block = (async () => {
            let handed = false;
            try {
              await readFully(handle, buffer, length, start, `device ${device}`);
              stats.filesRead += 1;
              stats.bytesRead += length;
              options.onProgress?.({ entries: i, files: 0, bytes: stats.bytesRead });
              const data = buffer.subarray(0, length);
              if (isZero(data)) return null;
              stats.bytes += length;
              handed = true;
              return (await writer.add('data', data, undefined, () => buffers.give(buffer))).id;
            } finally {
              if (!handed) buffers.give(buffer);
            }
          })();
          block.catch(() => {});
          queue.push(block);
        }
        await drain(BLOCK_BUFFERS);
      }
      await drain(0);
    } finally {
      await Promise.allSettled(queue);
      await handle.close();
    }
    const manifestIds = await manifest.finish();
    await writer.flush();
    const record: BackupRecord = {
      format: 1,
      id: newBackupId(now(), randomHex(4)),
      volume: options.volume,
      ...(base ? { parent: base.id } : {}),
      host: hostname(),
      startedAt,
      finishedAt: new Date(now()).toISOString(),
      manifest: manifestIds,
      stats: { ...stats, newBlobs: writer.stats.newBlobs, newRawBytes: writer.stats.newRawBytes, newStoredBytes: writer.stats.newStoredBytes },
      warnings: writer.stats.repaired > 0 ? [repairedNote(writer.stats.repaired)] : [],
      ...options.origin,
      kind: 'blocks',
      device: {
        sizeBytes, blockSize: BLOCK_SIZE, filesystem: options.filesystem,
        ...(options.source !== undefined ? { source: options.source } : {}),
        ...(options.snapshotTaken ? { snapshotTaken: true } : {}),
        ...(base ? { base: base.id } : {}),
      },
      ...(options.notes && options.notes.length > 0 ? { notes: options.notes } : {}),
    };
    options.signal?.throwIfAborted();
    lock.assertHeld();
    await repo.putBackupRecord(record);
    return record;
  });
}

export interface BlockRestoreResult {
  blocksWritten: number;
  bytesWritten: number;
  holes: number;
  zeroedBytes: number;
}

/**
 * Writes a block backup onto `device` (a new volume's, exactly the recorded size): every block
 * that holds data is read from the repository (checked against its hash) and written; a hole is
 * written only where `mapped` says the device holds something already (what mkfs wrote), as
 * zeros, so the device reads exactly as the backed-up one. Under a shared lock.
 */
export async function restoreBlocks(repo: Repository, volume: string, backupId: string, device: string,
  options: CommonOptions & { mapped?: ByteRange[] } = {}): Promise<BlockRestoreResult> {
  assertVolumeName(volume);
  return withLock(repo.store, readerLock(`restore of ${volume}/${backupId}`, options), async () => {
    await repo.reloadIndex();
    const record = await repo.readBackupRecord(volume, backupId);
    if (!isBlockBackup(record) || !record.device) throw new StowageError(ErrorCodes.INVALID_REQUEST, `backup ${volume}/${backupId} is a file-level backup, not a block backup`);
    const { sizeBytes, blockSize } = record.device;
    const handle = await open(device, constants.O_WRONLY);
    const result: BlockRestoreResult = { blocksWritten: 0, bytesWritten: 0, holes: 0, zeroedBytes: 0 };
    const mapped = options.mapped ?? [];
    try {
      let index = 0;
      // The next data block is fetched while this one is written: repository reads and device writes overlap.
      const fetch = (id: string) => {
        const data = repo.readBlob(id, { wholePacks: true });
        data.catch(() => {});
        return { id, data };
      };
      let prefetched: { id: string; data: Promise<Buffer> } | undefined;
      const blocks = blockList(repo, record)[Symbol.asyncIterator]();
      for (let current = await blocks.next(); !current.done;) {
        const next = await blocks.next();
        const block = current.value;
        const data = block === null ? undefined : prefetched?.id === block ? prefetched.data : fetch(block).data;
        prefetched = !next.done && next.value !== null ? fetch(next.value) : undefined;
        const start = index * blockSize;
        const length = Math.min(blockSize, sizeBytes - start);
        if (data === undefined) {
          result.holes += 1;
          if (overlaps(mapped, start, start + length)) {
            await writeFully(handle, Buffer.alloc(length), start);
            result.zeroedBytes += length;
          }
        } else {
          const bytes = await data;
          if (bytes.length !== length) {
            throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `block ${index} of backup ${record.id} (chunk ${block}) holds ${bytes.length} bytes, not ${length}`);
          }
          await writeFully(handle, bytes, start);
          result.blocksWritten += 1;
          result.bytesWritten += length;
        }
        index += 1;
        options.onProgress?.({ entries: index, files: 0, bytes: result.bytesWritten });
        current = next;
      }
      await handle.sync();
    } finally {
      repo.releasePackCache();
      await handle.close();
    }
    return result;
  });
}

async function writeFully(handle: FileHandle, data: Buffer, position: number): Promise<void> {
  let done = 0;
  while (done < data.length) {
    const { bytesWritten } = await handle.write(data, done, data.length - done, position + done);
    done += bytesWritten;
  }
}
