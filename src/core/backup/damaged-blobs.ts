import { hostname } from 'node:os';
import { messageOf } from '../errors.js';
import { listAll, type BlobStore } from './blob-store.js';

/**
 * Blobs found damaged where they are stored, one object each: `damaged/<pack>/<blob>`, written
 * once by the read that found the blob's bytes truncated, not decompressing or not hashing to
 * its id (a verify, a check, a restore). Content addressing makes the damage repairable: the
 * repository no longer counts a damaged copy as stored, so the next backup of data holding the
 * same bytes stores them again (an unchanged file is read again rather than taken from its
 * parent), and every backup that needs the blob then reads that good copy. Without the record,
 * later backups would go on referencing the damaged copy, and every one of them would fail to
 * restore.
 *
 * The key alone says what is damaged; the object's content is for people and is never read.
 * A record another machine forged costs only space: the copy it names is still read (and
 * checked) when no other copy exists, so nothing a good copy could serve becomes unreadable.
 */
const DAMAGED_PREFIX = 'damaged/';
const damagedKey = (pack: string, blob: string): string => `${DAMAGED_PREFIX}${pack}/${blob}`;

/** The pack and blob a listed key names, or undefined for anything else under damaged/. */
export function damagedOfKey(key: string): { pack: string; blob: string } | undefined {
  const match = /^damaged\/([0-9a-f]{64})\/([0-9a-f]{64})$/.exec(key);
  return match ? { pack: match[1]!, blob: match[2]! } : undefined;
}

export class DamagedBlobs<Location extends { readonly pack: string }> {
  private readonly places = new Set<string>();
  /** Blobs every indexed copy of which is recorded as damaged: where to read them all the same. */
  private readonly onlyCopies = new Map<string, Location>();

  /** Reads every record again (the indexes are then added again: see isGoodCopy). */
  async load(store: BlobStore): Promise<void> {
    this.places.clear();
    this.onlyCopies.clear();
    for await (const { key } of listAll(store, DAMAGED_PREFIX)) {
      const named = damagedOfKey(key);
      if (named) this.places.add(`${named.pack}/${named.blob}`);
    }
  }

  /** Whether the copy of `blob` in `pack` is recorded as damaged. */
  has(pack: string, blob: string): boolean {
    return this.places.has(`${pack}/${blob}`);
  }

  get size(): number {
    return this.places.size;
  }

  /**
   * For each indexed copy of a blob, until one is good: true when the copy `at` is not recorded
   * as damaged; otherwise the first such copy is kept as the blob's only copy, false.
   */
  isGoodCopy(blob: string, at: Location): boolean {
    if (!this.places.has(`${at.pack}/${blob}`)) {
      this.onlyCopies.delete(blob);
      return true;
    }
    if (!this.onlyCopies.has(blob)) this.onlyCopies.set(blob, at);
    return false;
  }

  /** The copy to read a blob from when it has no good one. */
  onlyCopy(blob: string): Location | undefined {
    return this.onlyCopies.get(blob);
  }

  /**
   * Records the copy of `blob` in `pack` as damaged; says how it went, in words for the error
   * that reports the damage. A store that refuses the write (read-only, full) does not hide the
   * damage itself: the record is only what lets later backups repair it.
   */
  async record(store: BlobStore, blob: string, at: Location, why: string): Promise<string> {
    const pack = at.pack;
    if (!this.onlyCopies.has(blob)) this.onlyCopies.set(blob, at);
    const repair = 'a backup of a volume that still holds these bytes stores them again, and every backup that needs them reads that copy';
    if (this.places.has(`${pack}/${blob}`)) return `it was recorded as damaged before: ${repair}`;
    const body = JSON.stringify({ found: new Date().toISOString(), host: hostname(), why });
    try {
      await store.put(damagedKey(pack, blob), Buffer.from(body));
    } catch (err) {
      return `recording it as damaged in the repository failed (${messageOf(err)}), so later backups go on referencing this copy`;
    }
    this.places.add(`${pack}/${blob}`);
    return `recorded as damaged in the repository: ${repair}`;
  }

  /** Keys of records whose pack is not among `packs` (deleted by gc, or never there): gc deletes them. */
  async orphans(store: BlobStore, packs: ReadonlySet<string>, pageSize?: number): Promise<string[]> {
    const keys: string[] = [];
    for await (const { key } of listAll(store, DAMAGED_PREFIX, pageSize)) {
      const named = damagedOfKey(key);
      if (named && !packs.has(named.pack)) keys.push(key);
    }
    return keys;
  }
}
