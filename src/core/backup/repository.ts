import { ErrorCodes, StowageError, isStowageError } from '../errors.js';
import { firstIssue } from '../schema/parse-record.js';
import { randomHex } from '../random-hex.js';
import { listAll, type BlobStore } from './blob-store.js';
import { DEFAULT_CHUNKER, validateChunkerParams, type ChunkerParams } from './chunker.js';
import { decompress, DEFAULT_CODEC, type Codec } from './codec.js';
import {
  BackupRecordSchema, backupKey, backupPrefix, BackupIdSchema, CONFIG_KEY, EntrySchema, FORMAT_VERSION,
  indexIdOfKey, indexKey, ManifestBlobSchema, packKey, PackIndexSchema, RepoConfigSchema,
  type BackupRecord, type Entry, type PackIndex, type RepoConfig,
} from './format.js';
import { isBlockBackup, notAFileBackup } from './block-format.js';
import { assertVolumeName, corrupt, isRecordFault, notEmpty, parseObject, sha256, sha256OffThread, unreadableRecord } from './objects.js';
import { BlobIndex, type BlobLocation } from './blob-index.js';
import { PackCache, SpareBuffers } from './pack-cache.js';
import { PackWriter, indexInPack } from './pack-writer.js';

/**
 * Pack size of new repositories (each records its own). 8 MiB, not 16: a backup holds two pack
 * buffers (one filling, one being written), and 16 MiB ones were a fifth of its peak RSS.
 */
export const DEFAULT_PACK_SIZE = 8 * 1024 * 1024;
/** Size and number of the spare buffers leased blobs are read alone into (see pack-cache.ts). */
const CHUNK_BUFFER_SIZE = 1024 * 1024;
const CHUNK_BUFFERS_SPARE = 16;
/**
 * Stored size from which a blob is read alone (a ranged read) even when whole packs are asked
 * for: whole packs serve the many small blobs of small files with one request, but the large
 * chunks of large files restored side by side each wanted a different pack, and with two kept a
 * 1 GiB restore read 4.7 GiB of packs (8 files at a time, 8 MiB for each ~1 MiB chunk).
 */
export const RANGE_READ_FROM = 64 * 1024;

export interface InitOptions {
  chunker?: ChunkerParams;
  codec?: Codec;
  packSize?: number;
}

/** A blob's checked plaintext, valid until release() (see Repository.leaseBlob). */
export interface BlobLease { data: Buffer; release(): void }

/** What a read of one copy of a blob found wrong with its bytes. */
class DamagedCopy extends Error {
  constructor(readonly what: string, readonly truncated: boolean, options?: { cause?: unknown }) {
    super(what, options);
  }
}

const recordBytes = (record: BackupRecord): Buffer => Buffer.from(JSON.stringify(record));

/** The SHA-256 of a record as putBackupRecord writes it: what readBackupRecordAsWritten checks. */
export const backupRecordDigest = (record: BackupRecord): string => sha256(recordBytes(record));

/**
 * A backup repository on a BlobStore: its config, the index of every blob (loaded from the
 * index objects), verified reads, and the records of backups. Writing new blobs goes through a
 * PackWriter, which groups them into packs so small files never become one object each.
 */
export class Repository {
  /** Where every blob is, and which copies are recorded as damaged. */
  readonly blobs: BlobIndex;
  /** Whole packs kept for restore and verify. */
  private readonly packs: PackCache;
  /** Buffers leased blobs are read alone into (ranged reads up to CHUNK_BUFFER_SIZE). */
  private readonly chunkBuffers = new SpareBuffers(CHUNK_BUFFER_SIZE, CHUNK_BUFFERS_SPARE);

  /** Set when this open made the repository (openOrInit found nothing there): a mistyped destination looks like this. */
  createdNow = false;

  private constructor(readonly store: BlobStore, readonly config: RepoConfig) {
    this.packs = new PackCache((id, into) => store.get(packKey(id), into), config.packSize + (config.packSize >> 2));
    this.blobs = new BlobIndex(store, (key) => this.readIndex(key));
  }

  /** Creates a repository in an empty store; refuses a store that already holds one. */
  static async init(store: BlobStore, options: InitOptions = {}): Promise<Repository> {
    const chunker = options.chunker ?? DEFAULT_CHUNKER;
    validateChunkerParams(chunker);
    const config: RepoConfig = {
      format: FORMAT_VERSION,
      id: randomHex(16),
      createdAt: new Date().toISOString(),
      chunker,
      codec: options.codec ?? DEFAULT_CODEC,
      packSize: options.packSize ?? DEFAULT_PACK_SIZE,
    };
    RepoConfigSchema.parse(config);
    if (!(await store.put(CONFIG_KEY, Buffer.from(JSON.stringify(config))))) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `${store.location} already holds a backup repository`);
    }
    const repo = new Repository(store, config);
    repo.createdNow = true;
    return repo;
  }

  /**
   * Before a record makes a backup complete: the repository must still be the one opened. A
   * directory moved away or a filesystem unmounted meanwhile leaves an empty directory where
   * writes go on (a vfs store makes its directories as it writes), and a record written there
   * would be a backup that exists nowhere.
   */
  async assertStillHere(what: string): Promise<void> {
    const data = await this.store.get(CONFIG_KEY).catch(() => undefined);
    const id = data === undefined ? undefined : (() => {
      try {
        return parseObject(RepoConfigSchema, data, `the config of ${this.store.location}`).id;
      } catch {
        return undefined; // not a config: not this repository either
      }
    })();
    if (id !== this.config.id) {
      throw new StowageError(ErrorCodes.BACKUP_CORRUPT, `the backup repository at ${this.store.location} is not the one this operation opened any more ` +
        `(its config object is ${data === undefined ? 'gone' : 'another'}: was it moved, or its filesystem unmounted?); ${what}`);
    }
  }

  /** Opens the repository in `store` and loads its index. */
  static async open(store: BlobStore): Promise<Repository> {
    let data: Buffer;
    try {
      data = await store.get(CONFIG_KEY);
    } catch (err) {
      if (isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) {
        throw new StowageError(ErrorCodes.BACKUP_NOT_FOUND, `${store.location} holds no backup repository (no config object)`);
      }
      throw err;
    }
    const repo = new Repository(store, parseObject(RepoConfigSchema, data, `the config of ${store.location}`));
    validateChunkerParams(repo.config.chunker);
    await repo.reloadIndex();
    return repo;
  }

  /** Opens the repository, made first in an empty store; objects without a config (a mistyped destination, a lost config) are refused. */
  static async openOrInit(store: BlobStore, options: InitOptions = {}): Promise<Repository> {
    if (!(await store.head(CONFIG_KEY))) {
      const [found] = (await store.list('', { pageSize: 1 })).objects;
      // Listed after another node's init landed: its config, or what it wrote right after.
      if (found && !(await store.head(CONFIG_KEY))) throw notEmpty(store.location, found.key);
      try {
        return await Repository.init(store, options);
      } catch (err) {
        // Another node created it at the same moment: open theirs.
        if (!isStowageError(err, ErrorCodes.INVALID_REQUEST)) throw err;
      }
    }
    return Repository.open(store);
  }

  /** Reads every pack index again (see BlobIndex.reload). */
  reloadIndex(): Promise<void> {
    return this.blobs.reload();
  }

  async readIndex(key: string): Promise<PackIndex> {
    try {
      const index = parseObject(PackIndexSchema, await this.store.get(key), `index object ${key}`);
      if (key !== indexKey(index.pack)) throw corrupt(`index object ${key} describes pack ${index.pack}, not its own`);
      return index;
    } catch (err) {
      const pack = indexIdOfKey(key);
      if (!isStowageError(err, ErrorCodes.BACKUP_CORRUPT) || pack === undefined) throw err;
      // Damaged: the pack carries the same index as its trailer, named by its hash.
      return indexInPack(this.store, pack, err);
    }
  }

  has(id: string): boolean {
    return this.blobs.has(id);
  }

  locate(id: string): BlobLocation | undefined {
    return this.blobs.locate(id);
  }

  get blobCount(): number {
    return this.blobs.size;
  }

  newWriter(): PackWriter {
    return new PackWriter(this);
  }

  /**
   * A blob's plaintext, checked: the stored bytes must be all there, decompress, and hash to
   * the blob's id. Any failure is an error naming the blob and its pack.
   */
  async readBlob(id: string, options: { wholePacks?: boolean } = {}): Promise<Buffer> {
    const blob = await this.fetchBlob(id, options, false);
    if (!blob.lent) {
      blob.release();
      return blob.data;
    }
    try {
      // A view of a reused buffer: the caller gets bytes of its own.
      return Buffer.from(blob.data);
    } finally {
      blob.release();
    }
  }

  /**
   * readBlob for a reader that is done with the bytes soon (a restore writes them, a verify
   * only hashes them): `data` may be a view of a buffer the repository reads into again, valid
   * until `release()` is called, which must happen exactly once whatever the outcome.
   */
  async leaseBlob(id: string, options: { wholePacks?: boolean } = {}): Promise<BlobLease> {
    const blob = await this.fetchBlob(id, options, true);
    return { data: blob.data, release: blob.release };
  }

  /**
   * Reads a blob from its first copy that reads back whole (see fetchCopy), recording each copy
   * found damaged on the way; only copies `among` allows are tried. Fails with the first copy's
   * error when none does.
   */
  private async fetchBlob(id: string, options: { wholePacks?: boolean }, pooled: boolean, among?: (at: BlobLocation) => boolean): Promise<{ data: Buffer; lent: boolean; release: () => void }> {
    let failure: unknown;
    for (const loc of this.blobs.copies(id).filter((at) => among?.(at) ?? true)) {
      try {
        return await this.fetchCopy(loc, options, pooled);
      } catch (err) {
        if (err instanceof DamagedCopy) failure ??= await this.damage(loc, err);
        else if (isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) failure ??= err;
        else throw err;
      }
    }
    throw failure ?? new StowageError(ErrorCodes.BACKUP_OBJECT_MISSING, `chunk ${id} is missing: ${this.blobs.whyMissing(id)}`);
  }

  /**
   * Whether a copy of the blob outside `pack` reads back whole: what gc asks before it frees a
   * copy recorded as damaged (the record may be wrong, or the other copy damaged since).
   */
  async readsElsewhere(id: string, pack: string): Promise<boolean> {
    try {
      (await this.fetchBlob(id, {}, false, (at) => at.pack !== pack)).release();
      return true;
    } catch (err) {
      if (isStowageError(err, ErrorCodes.BACKUP_CORRUPT) || isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) return false;
      throw err;
    }
  }

  /**
   * Reads, decompresses and checks one copy of a blob; DamagedCopy when its bytes are not the
   * blob's. With `pooled`, a ranged read goes into a spare buffer (chunkBuffers). `lent` says
   * whether `data` is a view of a buffer that goes back for reuse on release: a blob stored as
   * is, read from a reused pack or chunk buffer.
   */
  private async fetchCopy(loc: BlobLocation, options: { wholePacks?: boolean }, pooled: boolean): Promise<{ data: Buffer; lent: boolean; release: () => void }> {
    const key = packKey(loc.pack);
    const pack = options.wholePacks && (loc.length < RANGE_READ_FROM || this.packs.keeps(loc.pack)) ? this.packs.lease(loc.pack) : undefined;
    let spare = pack || !pooled || loc.length > CHUNK_BUFFER_SIZE ? undefined : this.chunkBuffers.take();
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      pack?.release();
      if (spare) this.chunkBuffers.give(spare);
      spare = undefined;
    };
    try {
      let stored: Buffer;
      try {
        stored = pack
          ? (await pack.data).subarray(loc.offset, loc.offset + loc.length)
          : await this.store.getRange(key, loc.offset, loc.length, spare);
      } catch (err) {
        if (isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) {
          throw new StowageError(ErrorCodes.BACKUP_OBJECT_MISSING, `chunk ${loc.id} is missing: its pack ${key} is not in ${this.store.location}`, { cause: err });
        }
        throw err;
      }
      if (spare && stored.buffer !== spare.buffer) {
        // The store read into a buffer of its own.
        this.chunkBuffers.give(spare);
        spare = undefined;
      }
      if (stored.length !== loc.length) throw new DamagedCopy(`is truncated (${stored.length} of ${loc.length} bytes)`, true);
      let plain: Buffer;
      try {
        plain = await decompress(loc.codec, stored, loc.rawLength);
      } catch (err) {
        throw new DamagedCopy(`is corrupt: it does not decompress (${loc.codec})`, false, { cause: err });
      }
      // Stored as is, the plaintext is the stored bytes; decompressed, those are not needed any more.
      const lent = loc.codec === 'none' && (spare !== undefined || pack?.pooled === true);
      if (loc.codec !== 'none') release();
      if (plain.length !== loc.rawLength || await sha256OffThread(plain) !== loc.id) {
        throw new DamagedCopy('is corrupt: its content does not match its hash', false);
      }
      return { data: plain, lent, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Records a copy found damaged (later backups then store the blob again): the error to throw if no other copy reads. */
  private async damage(loc: BlobLocation, found: DamagedCopy): Promise<StowageError> {
    const said = await this.blobs.markDamaged(loc, found.what);
    if (found.truncated) {
      // A pack cut short lost every blob past its end: all are recorded at once, not one a read.
      const size = (await this.store.head(packKey(loc.pack)))?.size ?? 0;
      for (const at of this.blobs.cutOff(loc.pack, size)) if (at !== loc) await this.blobs.markDamaged(at, `is cut off: its pack is ${size} bytes long`);
    }
    return corrupt(`chunk ${loc.id} in ${packKey(loc.pack)} ${found.what}; ${said}`, found.cause);
  }

  /** Drops the packs kept by whole-pack reads, and the buffers kept for the next reads. */
  releasePackCache(): void {
    this.packs.clear();
    this.chunkBuffers.clear();
  }

  async putBackupRecord(record: BackupRecord): Promise<void> {
    BackupRecordSchema.parse(record);
    await this.assertStillHere(`backup ${record.volume}/${record.id} is not recorded`);
    if (!(await this.store.put(backupKey(record.volume, record.id), recordBytes(record)))) {
      throw new StowageError(ErrorCodes.INTERNAL, `backup ${record.volume}/${record.id} already exists`);
    }
  }

  async readBackupRecord(volume: string, id: string): Promise<BackupRecord> {
    return (await this.loadBackupRecord(volume, id)).record;
  }

  /**
   * The record, if its bytes are still those whose SHA-256 (backupRecordDigest) was taken when
   * it was written; a record changed since (deleted and written again by another machine) is
   * E_BACKUP_CORRUPT.
   */
  async readBackupRecordAsWritten(volume: string, id: string, sha256Hex: string): Promise<BackupRecord> {
    const { record, data } = await this.loadBackupRecord(volume, id);
    if (sha256(data) !== sha256Hex) throw corrupt(`backup record ${backupKey(volume, id)} is not the one written here: its content changed since`);
    return record;
  }

  private async loadBackupRecord(volume: string, id: string): Promise<{ record: BackupRecord; data: Buffer }> {
    assertVolumeName(volume);
    if (!BackupIdSchema.safeParse(id).success) {
      throw new StowageError(ErrorCodes.INVALID_REQUEST, `${JSON.stringify(id)} is not a backup id`);
    }
    const key = backupKey(volume, id);
    let data: Buffer;
    try {
      data = await this.store.get(key);
    } catch (err) {
      if (isStowageError(err, ErrorCodes.BACKUP_OBJECT_MISSING)) {
        throw new StowageError(ErrorCodes.BACKUP_NOT_FOUND, `backup ${id} of volume ${volume} does not exist in ${this.store.location}`, { volume });
      }
      throw err;
    }
    const record = parseObject(BackupRecordSchema, data, `backup record ${key}`);
    if (record.volume !== volume || record.id !== id) throw corrupt(`backup record ${key} names ${record.volume}/${record.id}`);
    return { record, data };
  }

  /**
   * Backups in the repository, oldest first, one volume's or all; `skipped` collects records
   * that do not load (the caller decides whether that is fatal: GC refuses to run).
   */
  async listBackups(volume?: string, options: { pageSize?: number; onBroken?: (key: string, err: unknown) => void } = {}): Promise<BackupRecord[]> {
    if (volume !== undefined) assertVolumeName(volume);
    const records: BackupRecord[] = [];
    for await (const { key } of listAll(this.store, backupPrefix(volume), options.pageSize)) {
      const [, vol, id] = key.split('/');
      try {
        if (vol === undefined || id === undefined || key.split('/').length !== 3) throw corrupt(`${key} is not where a backup record goes`);
        records.push(await this.readBackupRecord(vol, id));
      } catch (err) {
        // Listed, then deleted (a delete on another node runs beside a list or a check): not there, and not broken.
        if (isStowageError(err, ErrorCodes.BACKUP_NOT_FOUND)) continue;
        if (options.onBroken) options.onBroken(key, err);
        else throw isRecordFault(err) ? unreadableRecord(key, this.store.location, err) : err;
      }
    }
    return records.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : a.volume < b.volume ? -1 : 1));
  }

  /** The entries of a backup's manifest, in order, one manifest blob in memory at a time; validated. */
  async *entries(record: BackupRecord): AsyncGenerator<Entry> {
    // A block backup has no file entries: a tree restore of one fails here, saying what to do.
    if (isBlockBackup(record)) throw notAFileBackup(record);
    for (const id of record.manifest) {
      const blob = parseObject(ManifestBlobSchema, await this.readBlob(id), `manifest blob ${id} of backup ${record.id}`);
      for (const [i, raw] of blob.entries.entries()) {
        const parsed = EntrySchema.safeParse(raw);
        if (!parsed.success) {
          const { where, message } = firstIssue(parsed.error);
          throw corrupt(`manifest blob ${id} of backup ${record.id}: entry ${i} is refused${where}: ${message}`);
        }
        yield parsed.data;
      }
    }
  }
}
