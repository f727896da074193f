import { compress } from './codec.js';
import { FORMAT_VERSION, indexKey, packKey, type BlobType, type PackBlob, type PackIndex } from './format.js';
import { sha256 } from './objects.js';
import type { Repository } from './repository.js';

export interface WriterStats {
  newBlobs: number;
  newRawBytes: number;
  newStoredBytes: number;
  packs: number;
}

/** Compressions in flight at once: zlib runs them on libuv's pool, so they use the other cores. */
const COMPRESSIONS_IN_FLIGHT = 4;

/**
 * Adds blobs to a repository: new ones (by id) are compressed into the current pack, which is
 * written once it reaches the pack size, followed by its index object. Compression runs a few
 * blobs ahead of the caller (bounded), and packs are written one after the other. Blobs are
 * readable by others only after flush(): a backup flushes before writing its record, so a
 * record never names a blob that is not stored.
 */
export class PackWriter {
  readonly stats: WriterStats = { newBlobs: 0, newRawBytes: 0, newStoredBytes: 0, packs: 0 };
  private parts: Buffer[] = [];
  private entries: PackBlob[] = [];
  private size = 0;
  private readonly pending = new Set<string>();
  private readonly inFlight = new Set<Promise<void>>();
  private writes: Promise<void> = Promise.resolve();
  private failure: { error: unknown } | undefined;
  private packBuffer: Buffer | undefined;

  constructor(private readonly repo: Repository) {}

  /** Adds `data` unless the repository (or this writer) already has it; returns its id. */
  async add(type: BlobType, data: Buffer, knownId?: string): Promise<{ id: string; added: boolean }> {
    this.throwIfFailed();
    const id = knownId ?? sha256(data);
    if (this.repo.has(id) || this.pending.has(id)) return { id, added: false };
    this.pending.add(id);
    const job: Promise<void> = compress(this.repo.config.codec, data).then((packed) => {
      this.entries.push({ id, type, offset: this.size, length: packed.data.length, rawLength: data.length, codec: packed.codec });
      this.parts.push(packed.data);
      this.size += packed.data.length;
      this.stats.newBlobs += 1;
      this.stats.newRawBytes += data.length;
      if (this.size >= this.repo.config.packSize) this.sealPack();
    }).catch((error: unknown) => { this.failure ??= { error }; }).finally(() => { this.inFlight.delete(job); });
    this.inFlight.add(job);
    while (this.inFlight.size >= COMPRESSIONS_IN_FLIGHT) await Promise.race(this.inFlight);
    this.throwIfFailed();
    return { id, added: true };
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

  /** Takes the current pack's contents and queues its write after the ones before it. */
  private sealPack(): void {
    const entries = this.entries;
    const parts = this.parts;
    this.parts = [];
    this.entries = [];
    this.size = 0;
    this.writes = this.writes.then(() => this.writePack(entries, parts)).catch((error: unknown) => { this.failure ??= { error }; });
  }

  private async writePack(entries: PackBlob[], parts: Buffer[]): Promise<void> {
    if (this.failure) return;
    // The pack carries its own index too, so a lost index object can be rebuilt from the pack.
    const trailer = Buffer.from(JSON.stringify(entries));
    const length = Buffer.alloc(4);
    length.writeUInt32BE(trailer.length);
    const total = parts.reduce((n, part) => n + part.length, 0) + trailer.length + 4;
    // Packs are written one at a time, so one buffer serves them all: a fresh 16 MiB buffer per
    // pack costs its page faults every time, more than the copy into it. put() keeps nothing
    // of its data once it has resolved.
    if (!this.packBuffer || this.packBuffer.length < total) this.packBuffer = Buffer.allocUnsafe(Math.max(total, this.repo.config.packSize + (this.repo.config.packSize >> 2)));
    const pack = this.packBuffer.subarray(0, total);
    let at = 0;
    for (const part of [...parts, trailer, length]) at += part.copy(pack, at);
    const id = sha256(pack);
    const index: PackIndex = { format: FORMAT_VERSION, pack: id, size: pack.length, blobs: entries };
    const indexData = Buffer.from(JSON.stringify(index));
    // Pack first, index second: an index never names a pack that is not stored.
    if (await this.repo.store.put(packKey(id), pack)) this.stats.newStoredBytes += pack.length;
    if (await this.repo.store.put(indexKey(id), indexData)) this.stats.newStoredBytes += indexData.length;
    this.stats.packs += 1;
    this.repo.addIndex(index);
    for (const e of entries) this.pending.delete(e.id);
  }
}
