import { hostname } from 'node:os';
import { messageOf } from '../errors.js';
import { listAll, type BlobStore } from './blob-store.js';
import type { BlobType } from './format.js';

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
 * A record another machine forged costs only space: every copy of a blob is still read (and
 * checked) when the others fail, and gc frees a copy recorded as damaged only after reading
 * back the copy that takes its place.
 */
const DAMAGED_PREFIX = 'damaged/';
const damagedKey = (pack: string, blob: string): string => `${DAMAGED_PREFIX}${pack}/${blob}`;

/** The pack and blob a listed key names, or undefined for anything else under damaged/. */
function damagedOfKey(key: string): { pack: string; blob: string } | undefined {
  const match = /^damaged\/([0-9a-f]{64})\/([0-9a-f]{64})$/.exec(key);
  return match ? { pack: match[1]!, blob: match[2]! } : undefined;
}

export class DamagedBlobs {
  private readonly places = new Set<string>();

  /** Reads every record again. */
  async load(store: BlobStore): Promise<void> {
    this.places.clear();
    for await (const { key } of listAll(store, DAMAGED_PREFIX)) {
      const named = damagedOfKey(key);
      if (named) this.places.add(`${named.pack}/${named.blob}`);
    }
  }

  /** Whether the copy of `blob` in `pack` is recorded as damaged. */
  has(pack: string, blob: string): boolean {
    return this.places.has(`${pack}/${blob}`);
  }

  /**
   * Records the copy of `blob` in `pack` as damaged; says how it went, in words for the error
   * that reports the damage. This reader counts the copy as damaged from now on even when the
   * store refuses the record (read-only, full): only later readers then do not know.
   */
  async record(store: BlobStore, blob: string, pack: string, type: BlobType, why: string): Promise<string> {
    // A backup's list of files (a manifest blob) records times that change with every backup,
    // so no later backup makes the same blob again: only data chunks are mended this way.
    const repair = type === 'tree'
      ? 'it is part of a backup\'s list of files, which no later backup stores again: the backups that need it cannot be restored whole; delete them so that garbage collection can run again'
      : 'a backup of a volume that still holds these bytes stores them again, and every backup that needs them reads that copy';
    if (this.places.has(`${pack}/${blob}`)) return `it was recorded as damaged before: ${repair}`;
    this.places.add(`${pack}/${blob}`);
    const body = JSON.stringify({ found: new Date().toISOString(), host: hostname(), why });
    try {
      await store.put(damagedKey(pack, blob), Buffer.from(body));
    } catch (err) {
      return `recording it as damaged in the repository failed (${messageOf(err)}), so other readers and later backups still take this copy for good`;
    }
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
