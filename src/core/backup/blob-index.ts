import { ErrorCodes, isStowageError, messageOf } from '../errors.js';
import { listAll, type BlobStore } from './blob-store.js';
import { DamagedBlobs } from './damaged-blobs.js';
import { indexIdOfKey, indexKey, packIdOfKey, packKey, type PackBlob, type PackIndex } from './format.js';

/** Where a blob lives. */
export interface BlobLocation extends PackBlob { pack: string }

const locations = (index: PackIndex) => ({ pack: index.pack, size: index.size, at: index.blobs.map((b): BlobLocation => ({ ...b, pack: index.pack })) });

/**
 * Where every blob of a repository is, from the index objects of the packs that are there.
 * Most blobs are stored once; a few more than once (stored again after a copy was found
 * damaged, or by two backups at the same moment): every copy is kept, the first good one read
 * first, so a read that finds one damaged goes on to the next.
 */
export class BlobIndex {
  /** The copy of each blob a read takes first: a good one when there is one. */
  private readonly first = new Map<string, BlobLocation>();
  /** The other copies of the few blobs stored more than once. */
  private readonly others = new Map<string, BlobLocation[]>();
  /** Index objects read before, by key: objects are written once, so a reload reads and checks only new ones. */
  private readonly indexes = new Map<string, { pack: string; size: number; at: BlobLocation[] }>();
  /** Blobs only indexes of missing packs name, with that pack: for errors, never for reads. */
  private readonly lost = new Map<string, string>();
  /** Index objects that do not load, with why: for errors. */
  private readonly unreadable = new Map<string, string>();
  readonly damaged = new DamagedBlobs();

  constructor(private readonly store: BlobStore, private readonly readIndex: (key: string) => Promise<PackIndex>) {}

  /**
   * Reads every pack index again (after other nodes wrote packs, or after GC). Only indexes
   * whose pack is there count: one naming a pack that is gone (lost, or forged by another
   * machine) would make a backup skip storing chunks it claims, and report success for a backup
   * that never restores. Packs are listed first: a pack is written before its index, so an
   * index listed after is found with its pack.
   */
  async reload(): Promise<void> {
    this.first.clear();
    this.others.clear();
    this.lost.clear();
    this.unreadable.clear();
    await this.damaged.load(this.store);
    const packs = new Set<string>();
    for await (const { key } of listAll(this.store, 'packs/')) {
      const id = packIdOfKey(key);
      if (id !== undefined) packs.add(id);
    }
    const listed = new Set<string>();
    for await (const { key } of listAll(this.store, 'index/')) {
      if (indexIdOfKey(key) === undefined) continue; // not an index of this repository's
      listed.add(key);
      let index = this.indexes.get(key);
      if (!index) {
        try {
          index = locations(await this.readIndex(key));
        } catch (err) {
          // Damaged, with no pack trailer to stand in (the pack cut short too): what it names is
          // unknown, so backups store those blobs again; gc, which reads every index, refuses.
          if (!isStowageError(err, ErrorCodes.BACKUP_CORRUPT)) throw err;
          this.unreadable.set(key, messageOf(err));
          continue;
        }
        this.indexes.set(key, index);
      }
      if (packs.has(index.pack)) this.addLocations(index.at);
      else for (const at of index.at) if (!this.lost.has(at.id)) this.lost.set(at.id, at.pack);
    }
    for (const key of this.indexes.keys()) if (!listed.has(key)) this.indexes.delete(key);
  }

  /** Adds a pack just written. */
  add(index: PackIndex): void {
    this.addLocations(locations(index).at);
  }

  private addLocations(locations: readonly BlobLocation[]): void {
    for (const at of locations) {
      const first = this.first.get(at.id);
      if (!first) {
        this.first.set(at.id, at);
        continue;
      }
      const others = this.others.get(at.id) ?? [];
      if ([first, ...others].some((known) => known.pack === at.pack && known.offset === at.offset)) continue;
      if (!this.isGood(first) && this.isGood(at)) {
        this.first.set(at.id, at);
        others.unshift(first);
      } else {
        others.push(at);
      }
      this.others.set(at.id, others);
    }
  }

  private isGood(at: BlobLocation): boolean {
    return !this.damaged.has(at.pack, at.id);
  }

  /** Whether a copy not recorded as damaged is stored: a backup may reference the blob without storing it. */
  has(id: string): boolean {
    const first = this.first.get(id);
    return first !== undefined && this.isGood(first);
  }

  /** The copy a read takes first: a good one, else one recorded as damaged (read, and checked, all the same). */
  locate(id: string): BlobLocation | undefined {
    return this.first.get(id);
  }

  /** Every copy of a blob: those not recorded as damaged first. */
  copies(id: string): BlobLocation[] {
    const first = this.first.get(id);
    if (!first) return [];
    const others = this.others.get(id);
    if (!others) return [first];
    const all = [first, ...others];
    return [...all.filter((at) => this.isGood(at)), ...all.filter((at) => !this.isGood(at))];
  }

  /**
   * What the index object `key` held when a reload last read it, if it loaded then: objects are
   * written once, so it needs no second read (gc, under its exclusive lock, reloads and then
   * goes through every index).
   */
  loadedIndex(key: string): { pack: string; size: number; blobs: readonly BlobLocation[] } | undefined {
    const index = this.indexes.get(key);
    return index && { pack: index.pack, size: index.size, blobs: index.at };
  }

  /** The blobs a pack's index places at or past `size`: what a pack cut short to `size` bytes lost. */
  cutOff(pack: string, size: number): BlobLocation[] {
    return (this.indexes.get(indexKey(pack))?.at ?? []).filter((at) => at.offset + at.length > size);
  }

  /**
   * Records the copy `at` as damaged (see DamagedBlobs); the words say how that went. A later
   * backup storing the blob then stores it again, and reads take another copy first.
   */
  async markDamaged(at: BlobLocation, why: string): Promise<string> {
    const said = await this.damaged.record(this.store, at.id, at.pack, at.type, why);
    if (this.first.get(at.id) === at) {
      const good = this.others.get(at.id)?.find((other) => this.isGood(other));
      if (good) {
        this.others.set(at.id, [at, ...this.others.get(at.id)!.filter((other) => other !== good)]);
        this.first.set(at.id, good);
      }
    }
    return said;
  }

  /** For the error about a blob no index places: an index named it in a pack that is gone, or none did. */
  whyMissing(id: string): string {
    const lostIn = this.lost.get(id);
    if (lostIn !== undefined) return `its pack ${packKey(lostIn)} is not in ${this.store.location}`;
    const [key, why] = this.unreadable.entries().next().value ?? [];
    return `it is in no pack of ${this.store.location}` + (key === undefined ? '' :
      ` whose index loads; ${this.unreadable.size} index object(s) do not (${key}: ${why}), and may name it`);
  }

  get size(): number {
    return this.first.size;
  }
}
