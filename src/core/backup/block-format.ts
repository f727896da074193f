import { z } from 'zod';
import { ErrorCodes, StowageError } from '../errors.js';
import { FORMAT_VERSION, Sha256Schema, type BackupRecord } from './format.js';
import { parseObject } from './objects.js';
import type { PackWriter } from './pack-writer.js';
import type { Repository } from './repository.js';

/**
 * Block manifests: the manifest of a backup of kind `blocks` lists every block of the device,
 * in order, as the sha256 of its content (a data blob of the repository) or null for a block
 * that reads as zeros (unmapped or all zero: stored as a hole, restored by writing nothing).
 * Every backup lists all of its blocks, so each one restores and deletes alone; GC keeps every
 * chunk a block manifest names.
 *
 * A block manifest blob has no `entries` key, on purpose: a version of the library that
 * predates block backups then fails to load it and refuses GC, rather than seeing an empty
 * file list and deleting the blocks.
 */
export const BLOCK_SIZE = 2 * 1024 * 1024;
/** Blocks per manifest blob: 4096 x 2 MiB = 8 GiB of device per blob, about 270 KB of JSON. */
export const BLOCKS_PER_MANIFEST_BLOB = 4096;

export const BlockManifestBlobSchema = z.object({
  format: z.literal(FORMAT_VERSION),
  kind: z.literal('blocks'),
  /** Index of the first block this blob lists. */
  first: z.number().int().nonnegative(),
  blocks: z.array(Sha256Schema.nullable()).max(BLOCKS_PER_MANIFEST_BLOB),
});

export function isBlockBackup(record: BackupRecord): boolean {
  return record.kind === 'blocks';
}

/** The error for a block backup where a file tree is wanted (a restore into another backend, a tree restore). */
export function notAFileBackup(record: BackupRecord): StowageError {
  return new StowageError(ErrorCodes.NOT_SUPPORTED,
    `backup ${record.volume}/${record.id} is a block-level backup of a devicemapper volume: it restores only into a ` +
    'devicemapper volume, restored by a daemon on the devicemapper backend; a backup that restores into another backend is file-level',
    { volume: record.volume, remedies: [{ action: 'file-backup', volume: record.volume }] });
}

/** Writes a block manifest as tree blobs of BLOCKS_PER_MANIFEST_BLOB blocks each. */
export class BlockManifestWriter {
  readonly ids: string[] = [];
  private batch: Array<string | null> = [];
  private next = 0;

  constructor(private readonly writer: PackWriter) {}

  async add(block: string | null): Promise<void> {
    this.batch.push(block);
    if (this.batch.length >= BLOCKS_PER_MANIFEST_BLOB) await this.seal();
  }

  async finish(): Promise<string[]> {
    if (this.batch.length > 0) await this.seal();
    return this.ids;
  }

  private async seal(): Promise<void> {
    const data = Buffer.from(JSON.stringify({ format: FORMAT_VERSION, kind: 'blocks', first: this.next, blocks: this.batch }));
    this.next += this.batch.length;
    this.batch = [];
    this.ids.push((await this.writer.add('tree', data)).id);
  }
}

/** The number of blocks a device of `sizeBytes` has in blocks of `blockSize` (the last may be short). */
export function blockCount(sizeBytes: number, blockSize: number): number {
  return Math.ceil(sizeBytes / blockSize);
}

/**
 * The blocks of a block backup, in order, one manifest blob in memory at a time; validated
 * (hostile input): the blobs must follow each other and list exactly the device's blocks.
 */
export async function* blockList(repo: Repository, record: BackupRecord): AsyncGenerator<string | null> {
  if (!isBlockBackup(record) || !record.device) {
    throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `backup ${record.volume}/${record.id} is not a block backup (no device recorded)`);
  }
  const total = blockCount(record.device.sizeBytes, record.device.blockSize);
  let index = 0;
  for (const id of record.manifest) {
    const blob = parseObject(BlockManifestBlobSchema, await repo.readBlob(id), `block manifest blob ${id} of backup ${record.id}`);
    if (blob.first !== index) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `block manifest blob ${id} of backup ${record.id} starts at block ${blob.first}, expected ${index}`);
    }
    if (index + blob.blocks.length > total) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `the block manifest of backup ${record.id} lists more blocks than its device has (${total})`);
    }
    for (const block of blob.blocks) {
      index += 1;
      yield block;
    }
  }
  if (index !== total) {
    throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `the block manifest of backup ${record.id} lists ${index} blocks; its device has ${total}`);
  }
}

/** Every chunk a backup references, of either kind (GC's live set, verify's work list). */
export async function* referencedChunks(repo: Repository, record: BackupRecord): AsyncGenerator<string> {
  if (isBlockBackup(record)) {
    for await (const block of blockList(repo, record)) if (block !== null) yield block;
    return;
  }
  for await (const entry of repo.entries(record)) for (const id of entry.chunks ?? []) yield id;
}
