import { ErrorCodes, StowageError } from '../errors.js';

/**
 * The one thing a backup repository needs from where it is kept, shaped after object stores
 * (S3 and the like) so every target can offer it: objects written once and never overwritten,
 * read whole or by range, listed by prefix a page at a time, deleted in batches. There is no
 * rename, no append and no directory: a key is an opaque name whose `/` only groups.
 */
export interface PutOptions {
  /**
   * The object is the lock of an operation that writes nothing else (a delete, gc, a verify or
   * restore): a store that holds space back for a full disk may spend it on this object, so that
   * deleting backups, the way to free space, still works there (see the vfs store's SpaceReserve).
   */
  reserved?: boolean;
}

export interface BlobStore {
  /** Where the store lives, for messages (a URL or a path). */
  readonly location: string;
  /**
   * Stores `data` under `key` if nothing is there yet, atomically: readers see the whole object
   * or none. Never overwrites: returns false (and changes nothing) when the key already exists.
   */
  put(key: string, data: Uint8Array, options?: PutOptions): Promise<boolean>;
  /**
   * The whole object; E_BACKUP_OBJECT_MISSING (see blobMissing) when the key does not exist.
   * A store may read it into `into` when it fits (the result is then a view of `into`): a
   * reader of many objects reuses its memory this way. Stores that do not, ignore `into`.
   */
  get(key: string, into?: Buffer): Promise<Buffer>;
  /**
   * `length` bytes from `offset`. Fewer bytes come back only when the object is shorter, and
   * callers that know the size they expect treat that as a truncated object. `into` as for get.
   */
  getRange(key: string, offset: number, length: number, into?: Buffer): Promise<Buffer>;
  /** The object's size, or undefined when the key does not exist. */
  head(key: string): Promise<{ size: number } | undefined>;
  /**
   * Keys that start with `prefix`, in ascending byte order, at most `pageSize` of them (the
   * store may cap it at 1000), starting after `startAfter`. `next` is set while more remain:
   * pass it as `startAfter` for the following page.
   */
  list(prefix: string, options?: ListOptions): Promise<ListPage>;
  /** Deletes up to MAX_DELETE_BATCH keys; keys already gone are not an error. */
  delete(keys: readonly string[]): Promise<void>;
  /**
   * Removes what writes killed half-way left behind, older than `olderThanMs` (a store whose
   * writes leave nothing, like S3's, has none). gc calls it under the exclusive lock.
   */
  sweepTemporary?(olderThanMs: number): Promise<number>;
  /**
   * Whether `err`, from a put or delete, says the store refuses this writer (a read-only mount, a
   * file system's permissions, credentials without write access), not that it failed.
   */
  refusesWrites?(err: unknown): boolean;
  /**
   * Closes what the store keeps open between reads (files opened for range reads) that no read
   * uses now; later reads open again. Called as an operation ends, so that, say, the disk the
   * repository is on can be unmounted right after a restore.
   */
  closeIdle?(): Promise<void>;
}

export interface ListOptions {
  pageSize?: number;
  startAfter?: string;
}

export interface ListedObject {
  key: string;
  size: number;
}

export interface ListPage {
  objects: ListedObject[];
  /** Present while more keys may follow: the startAfter of the next page. */
  next?: string;
}

/** What one S3 DeleteObjects call accepts, and so what every target accepts. */
export const MAX_DELETE_BATCH = 1000;
/** What one S3 ListObjectsV2 page returns at most. */
export const MAX_LIST_PAGE = 1000;

const SEGMENT = /^[A-Za-z0-9_-][A-Za-z0-9._-]*$/;
const MAX_KEY_LENGTH = 1024;

/**
 * Throws unless `key` is safe as an object name and as a relative path on any filesystem:
 * `/`-separated segments of letters, digits, `.`, `_`, `-`, none empty and none starting with a
 * dot (so no `.`, `..` or hidden temp names), not absolute, at most 1024 bytes.
 */
/** assertValidKey as a test: for names a listing returns, which are skipped rather than refused. */
export function isValidKey(key: string): boolean {
  try {
    assertValidKey(key);
    return true;
  } catch {
    return false;
  }
}

export function assertValidKey(key: string): void {
  const ok = key.length > 0 && key.length <= MAX_KEY_LENGTH && key.split('/').every((s) => s.length <= 255 && SEGMENT.test(s));
  if (!ok) throw new StowageError(ErrorCodes.INVALID_REQUEST, `backup object key ${JSON.stringify(key.slice(0, 200))} is not valid (segments of [A-Za-z0-9._-], none empty or starting with a dot)`);
}

/** A prefix is a key, or a key's leading part ending with `/`, or empty (everything). */
export function assertValidPrefix(prefix: string): void {
  if (prefix === '') return;
  assertValidKey(prefix.endsWith('/') ? prefix.slice(0, -1) : prefix);
}

export function blobMissing(location: string, key: string): StowageError {
  return new StowageError(ErrorCodes.BACKUP_OBJECT_MISSING, `backup object ${key} is missing from ${location}`);
}

/** Every key under `prefix`, page by page, without holding more than one page. */
export async function* listAll(store: BlobStore, prefix: string, pageSize?: number): AsyncGenerator<ListedObject> {
  let startAfter: string | undefined;
  for (;;) {
    const page = await store.list(prefix, { pageSize, startAfter });
    yield* page.objects;
    if (page.next === undefined) return;
    // Listings go forward: a page that does not (a broken or hostile server) would loop for ever.
    if (startAfter !== undefined && page.next <= startAfter) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `the listing of ${prefix} in ${store.location} went back to ${JSON.stringify(page.next.slice(0, 200))} after ${JSON.stringify(startAfter.slice(0, 200))}: it cannot go on`);
    }
    startAfter = page.next;
  }
}

/** Deletes any number of keys in batches the store accepts. */
export async function deleteAll(store: BlobStore, keys: readonly string[]): Promise<void> {
  for (let i = 0; i < keys.length; i += MAX_DELETE_BATCH) await store.delete(keys.slice(i, i + MAX_DELETE_BATCH));
}
