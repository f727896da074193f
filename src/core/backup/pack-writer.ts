import { randomFillSync, randomInt } from 'node:crypto';
import type { StowageError } from '../errors.js';
import type { BlobStore } from './blob-store.js';
import { compress } from './codec.js';
import { FORMAT_VERSION, indexKey, packKey, PackIndexSchema, type BlobType, type PackBlob, type PackIndex } from './format.js';
import { parseObject, sha256 } from './objects.js';
import type { Repository } from './repository.js';
import { zeroChunkId } from './zeros.js';

export interface WriterStats {
  newBlobs: number;
  newRawBytes: number;
  newStoredBytes: number;
  packs: number;
  /** Blobs stored again because every stored copy was recorded as damaged (see DamagedBlobs). */
  repaired: number;
}

/** What a backup says of the blobs it stored again (WriterStats.repaired). */
export function repairedNote(repaired: number): string {
  return `${repaired} chunk(s) whose stored copies were recorded as damaged were stored again: backups that need them restore again`;
}

/**
 * Compressions in flight at once: zlib runs them on libuv's pool, so they use the other cores.
 * Two, not four: each holds its input, its output and a compressor's native state, and a
 * backup's peak RSS must stay well under 150 MB in the daemon; two keep two cores busy.
 */
const COMPRESSIONS_IN_FLIGHT = 2;

/** Unused bytes a pack whose name is taken is moved by (see writePack): a random count in this range. */
const PACK_SHIFT_MIN = 16;
const PACK_SHIFT_SPREAD = 64 * 1024;

/** Pack buffers kept for reuse once their pack is written (one: the pack being filled takes it). */
const SPARE_PACK_BUFFERS = 1;
/**
 * Sealed packs waiting for their write, at most: past that, add() waits. Without a bound, a
 * store slower than reading and compressing (a busy disk, fsync per object, a remote target)
 * made the packs waiting in memory grow with the volume. Zero: one pack is written while the
 * next fills, and no third pack buffer is held.
 */
const PACKS_WAITING = 0;

/**
 * Adds blobs to a repository: new ones (by id) are compressed and copied into the current
 * pack's buffer, which is written once it reaches the pack size, followed by its index object.
 * Compression runs a few blobs ahead of the caller (bounded), and packs are written one after
 * the other. Blobs are readable by others only after flush(): a backup flushes before writing
 * its record, so a record never names a blob that is not stored.
 *
 * Pack buffers are reused: a fresh 16 MiB buffer per pack costs its page faults every time,
 * more than the copy into it. A blob's bytes are copied into the pack as soon as they are
 * compressed, so the caller's buffer is free from then on (see add's `onReleased`).
 */
export class PackWriter {
  readonly stats: WriterStats = { newBlobs: 0, newRawBytes: 0, newStoredBytes: 0, packs: 0, repaired: 0 };
  private current: Buffer | undefined;
  private entries: PackBlob[] = [];
  private size = 0;
  private readonly spare: Buffer[] = [];
  private readonly pending = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  private writes: Promise<void> = Promise.resolve();
  /** The writes of packs sealed and not yet written, oldest first. */
  private readonly unwritten: Array<Promise<void>> = [];
  private failure: { error: unknown } | undefined;

  constructor(private readonly repo: Repository) {}

  /**
   * Adds `data` unless the repository (or this writer) already has it; returns its id.
   * `onReleased` is called exactly once, when nothing refers to `data` any more (at once for a
   * blob already stored, after its compression and copy into the pack otherwise, and also when
   * adding fails), so the caller may reuse the buffer.
   */
  async add(type: BlobType, data: Buffer, knownId?: string, onReleased?: () => void): Promise<{ id: string; added: boolean }> {
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      onReleased?.();
    };
    try {
      this.throwIfFailed();
      const id = knownId ?? zeroChunkId(data) ?? sha256(data);
      if (this.repo.has(id) || this.pending.has(id)) {
        release();
        return { id, added: false };
      }
      this.pending.add(id);
      // Located without a good copy: only damaged ones.
      const repairs = this.repo.locate(id) !== undefined;
      // Waits before starting, not after: callers adding at the same time (several files read
      // at once) must not put more than COMPRESSIONS_IN_FLIGHT blobs in flight between them.
      while (this.inFlight.size >= COMPRESSIONS_IN_FLIGHT) await Promise.race(this.inFlight);
      while (this.unwritten.length > PACKS_WAITING) await this.unwritten[0];
      this.throwIfFailed();
      const job: Promise<void> = compress(this.repo.config.codec, data).then((packed) => {
        this.append({ id, type, offset: this.size, length: packed.data.length, rawLength: data.length, codec: packed.codec }, packed.data);
        this.stats.newBlobs += 1;
        this.stats.newRawBytes += data.length;
        if (repairs) this.stats.repaired += 1;
        if (this.size >= this.repo.config.packSize) this.sealPack();
      }).catch((error: unknown) => { this.failure ??= { error }; }).finally(() => {
        this.inFlight.delete(job);
        release();
      });
      this.inFlight.add(job);
      return { id, added: true };
    } catch (err) {
      release();
      throw err;
    }
  }

  /** Writes everything added so far. */
  async flush(): Promise<void> {
    await Promise.all(this.inFlight);
    if (this.entries.length > 0) this.sealPack();
    await this.writes;
    this.throwIfFailed();
  }

  private throwIfFailed(): void {
    if (this.failure) throw this.failure.error;
  }

  private get bufferSize(): number {
    return this.repo.config.packSize + (this.repo.config.packSize >> 2);
  }

  private append(entry: PackBlob, bytes: Buffer): void {
    this.current ??= this.spare.pop() ?? Buffer.allocUnsafe(this.bufferSize);
    if (this.size + bytes.length > this.current.length) {
      // A large blob near the end of a pack: this pack gets a larger buffer of its own.
      const larger = Buffer.allocUnsafe(Math.max(this.bufferSize, Math.ceil((this.size + bytes.length) * 1.25)));
      this.current.copy(larger, 0, 0, this.size);
      this.current = larger;
    }
    bytes.copy(this.current, this.size);
    this.entries.push(entry);
    this.size += bytes.length;
  }

  /** Takes the current pack's contents and queues its write after the ones before it. */
  private sealPack(): void {
    const entries = this.entries;
    const buffer = this.current ?? Buffer.alloc(0);
    const size = this.size;
    this.current = undefined;
    this.entries = [];
    this.size = 0;
    const write: Promise<void> = this.writes.then(() => this.writePack(entries, buffer, size))
      .catch((error: unknown) => { this.failure ??= { error }; })
      .finally(() => { this.unwritten.splice(this.unwritten.indexOf(write), 1); });
    this.unwritten.push(write);
    this.writes = write;
  }

  private async writePack(sealed: PackBlob[], buffer: Buffer, size: number): Promise<void> {
    if (this.failure) return;
    for (let shift = 0, tries = 0; ; shift = PACK_SHIFT_MIN + randomInt(PACK_SHIFT_SPREAD), tries += 1) {
      const { id, pack, index } = layOut(sealed, buffer, size, shift);
      // Pack first, index second: an index never names a pack that is not stored.
      if (await this.repo.store.put(packKey(id), pack)) {
        this.stats.newStoredBytes += pack.length;
        // put() keeps nothing of its data once it has resolved.
        if (buffer.length === this.bufferSize && this.spare.length < SPARE_PACK_BUFFERS) this.spare.push(buffer);
        const indexData = Buffer.from(JSON.stringify(index));
        if (await this.repo.store.put(indexKey(id), indexData)) this.stats.newStoredBytes += indexData.length;
        this.stats.packs += 1;
        this.repo.blobs.add(index);
        for (const e of index.blobs) this.pending.delete(e.id);
        return;
      }
      // The name is taken: the same blobs at the same places were stored before, and whether
      // that copy is good is not known here (it may be damaged, its index unreadable, or it is
      // why these blobs are stored again). Bytes in front that no blob uses move them, so this
      // copy gets a name of its own; an earlier attempt's pack without an index is gc's.
      if (tries >= 8) throw new Error(`no free name for a pack of ${sealed.length} blob(s) in ${this.repo.store.location} after ${tries} tries`);
    }
  }
}

/**
 * A pack's bytes (`shift` unused bytes, the blobs, then its own index and that index's length)
 * and its name. Named by the hash of its trailer, not of all its bytes: the trailer names every
 * blob by the hash of its content, with its offset, length and codec, so two packs with the
 * same name hold the same blobs at the same places, and hashing 8 MiB more per pack is saved.
 * Every blob is still checked against its own hash when read.
 */
function layOut(sealed: PackBlob[], buffer: Buffer, size: number, shift: number): { id: string; pack: Buffer; index: PackIndex } {
  const entries = shift === 0 ? sealed : sealed.map((e) => ({ ...e, offset: e.offset + shift }));
  // The pack carries its own index too, so a lost index object can be rebuilt from the pack.
  const trailer = Buffer.from(JSON.stringify(entries));
  const total = shift + size + trailer.length + 4;
  let pack = buffer;
  if (shift > 0 || pack.length < total) {
    pack = Buffer.allocUnsafe(total);
    randomFillSync(pack, 0, shift);
    buffer.copy(pack, shift, 0, size);
  }
  trailer.copy(pack, shift + size);
  pack.writeUInt32BE(trailer.length, shift + size + trailer.length);
  const id = sha256(trailer);
  return { id, pack: pack.subarray(0, total), index: { format: FORMAT_VERSION, pack: id, size: total, blobs: entries } };
}

/** The most a pack's own index (its trailer) is read: far above what a pack of the largest size holds. */
const MAX_PACK_TRAILER_BYTES = 64 * 1024 * 1024;

/**
 * The index a pack carries after its blobs (see writePack), checked against the pack's name:
 * what stands in for a damaged index object. `damaged` is thrown when there is none to trust.
 */
export async function indexInPack(store: BlobStore, pack: string, damaged: StowageError): Promise<PackIndex> {
  const key = packKey(pack);
  const head = await store.head(key);
  if (!head || head.size < 4) throw damaged;
  const length = (await store.getRange(key, head.size - 4, 4)).readUInt32BE(0);
  // A pack's trailer is a few hundred bytes per blob: a larger length is not read (a repository is hostile input).
  if (length + 4 > head.size || length > MAX_PACK_TRAILER_BYTES) throw damaged;
  const trailer = await store.getRange(key, head.size - 4 - length, length);
  if (sha256(trailer) !== pack) throw damaged;
  const blobs = parseObject(PackIndexSchema.shape.blobs, trailer, `the index inside ${key}`);
  return parseObject(PackIndexSchema, JSON.stringify({ format: FORMAT_VERSION, pack, size: head.size, blobs }), `the index inside ${key}`);
}
