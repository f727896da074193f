/**
 * Memory a restore or verify reads stored bytes into: the last packs read whole, and spare
 * buffers used again instead of new ones. A new 8 MiB buffer per pack, and one per chunk read
 * alone, lived through several young-generation collections, and V8 counts such external memory
 * towards its next full collection: a restore of the bench tree ran one every 25-50 ms (58-75
 * in 3 s), each marking the whole heap; with both read into reused buffers, 3.
 */

/**
 * Buffers of one size given back for reuse, at most `max` kept. Taking one opens a session;
 * clear() ends it, and buffers given back after that are left to the garbage collector.
 */
export class SpareBuffers {
  private free: Buffer[] = [];
  private open = false;

  constructor(readonly size: number, private readonly max: number) {}

  take(): Buffer {
    this.open = true;
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  give(buffer: Buffer): void {
    if (this.open && this.free.length < this.max) this.free.push(buffer);
  }

  clear(): void {
    this.free = [];
    this.open = false;
  }
}

/** A pack read whole: `users` reads hold views of it; `buffer` is set when it is a reused one. */
interface KeptPack {
  id: string;
  data: Promise<Buffer>;
  users: number;
  kept: boolean;
  buffer?: Buffer;
}

export interface PackLease {
  data: Promise<Buffer>;
  /** Whether the data is a view of a buffer read into again once released. */
  readonly pooled: boolean;
  /** Must be called once the reader is done with every view of the data. */
  release(): void;
}

/** Whole packs a restore or verify keeps in memory. */
const PACKS_KEPT = 2;
/** Pack buffers kept for reuse beside the packs kept. */
const PACK_BUFFERS_SPARE = 2;

/**
 * Whole packs, each read once and kept with the last PACKS_KEPT: a restore or verify reads
 * blobs in the order a backup wrote them, so one request per pack serves many small files.
 * Two, not one: files restored in parallel straddle a pack boundary, and with one kept they
 * took turns evicting each other's pack (a 6-pack restore read 22 packs, now 7). A backup packs
 * the files it reads in parallel interleaved, so a restore can still fetch a pack again (a
 * test tree of 12 small packs: 26 fetches with one kept, 13-15 with two to four). Concurrent
 * readers of the same pack share one request. Packs are read into buffers used again once a
 * pack is neither kept nor leased, where the store reads into a given buffer.
 */
export class PackCache {
  private recent: KeptPack[] = [];
  private readonly buffers: SpareBuffers;

  /** `read` fetches a whole pack, into the buffer given when it fits. */
  constructor(private readonly read: (id: string, into: Buffer) => Promise<Buffer>, bufferSize: number) {
    this.buffers = new SpareBuffers(bufferSize, PACK_BUFFERS_SPARE);
  }

  keeps(id: string): boolean {
    return this.recent.some((p) => p.id === id);
  }

  lease(id: string): PackLease {
    let entry = this.recent.find((p) => p.id === id);
    if (entry) {
      this.recent = [...this.recent.filter((p) => p !== entry), entry];
    } else {
      const created: KeptPack = { id, data: Promise.resolve(Buffer.alloc(0)), users: 0, kept: true };
      created.data = this.readPack(created);
      // A failed read is not kept for the next reader.
      created.data.catch(() => {
        if (this.recent.includes(created)) this.drop([created]);
      });
      entry = created;
      const all = [...this.recent, created];
      this.recent = all.slice(-PACKS_KEPT);
      this.drop(all.slice(0, -PACKS_KEPT));
    }
    const leased = entry;
    leased.users += 1;
    let released = false;
    return {
      data: leased.data,
      get pooled() { return leased.buffer !== undefined; },
      release: () => {
        if (released) return;
        released = true;
        leased.users -= 1;
        this.recycle(leased);
      },
    };
  }

  /** Drops the packs kept, and the buffers kept for the next reads. */
  clear(): void {
    this.drop(this.recent);
    this.buffers.clear();
  }

  private async readPack(entry: KeptPack): Promise<Buffer> {
    const into = this.buffers.take();
    let data: Buffer;
    try {
      data = await this.read(entry.id, into);
    } catch (err) {
      this.buffers.give(into);
      throw err;
    }
    // A pack larger than the buffer, or a store that reads into its own, came back elsewhere.
    if (data.buffer === into.buffer) entry.buffer = into;
    else this.buffers.give(into);
    return data;
  }

  private drop(packs: KeptPack[]): void {
    for (const pack of packs) {
      pack.kept = false;
      this.recycle(pack);
    }
    this.recent = this.recent.filter((p) => p.kept);
  }

  /** Gives a pack's buffer back once nothing keeps or reads the pack. */
  private recycle(pack: KeptPack): void {
    if (pack.kept || pack.users > 0) return;
    // The read may still be running (an evicted pack nobody waits for): its buffer is back when it ends.
    void pack.data.then(() => {
      if (!pack.buffer) return;
      this.buffers.give(pack.buffer);
      pack.buffer = undefined;
    }, () => undefined);
  }
}
