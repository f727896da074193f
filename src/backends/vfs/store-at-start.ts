/**
 * What a vfs daemon does at start with what it finds at `vfs.path` and what this node remembers
 * (`<root>/vfs-store.json`). Pure: the backend's init acts on the verdict, and `stowage doctor`
 * reports it, so the two never disagree on whether the daemon would start.
 */

/** This node's memory of the store it used, as `vfs-store.json` holds it (fields may be missing). */
export interface RememberedStore {
  path?: string;
  storeId?: string;
}

export interface StoreFound {
  path: string;
  shared: boolean | 'auto';
  /** `vfs.path` is no directory; else the id of the store marker there, or no marker. */
  store: 'no directory' | 'no marker' | { storeId: string };
  remembered: RememberedStore | undefined;
  /** Where `remembered` was read, named in the remedy. */
  nodeStatePath: string;
}

export type StoreVerdict =
  /** The daemon refuses to start: `problem; remedy` is its error. */
  | { kind: 'refuse'; problem: string; remedy: string }
  /**
   * A new store is made (`vfs.path` too, when it is no directory). `checkShared`: declared shared,
   * so a path under an unmounted fstab mount point is refused first (see checkNewSharedStore).
   */
  | { kind: 'new'; makesPath: boolean; checkShared: boolean }
  /** The store there is used; `replaces`: the different store this node used at this path before. */
  | { kind: 'open'; storeId: string; replaces?: string };

export function storeVerdict(found: StoreFound): StoreVerdict {
  const { path, shared, store, remembered, nodeStatePath } = found;
  // Only a memory of this very path counts: a changed vfs.path is a new choice, not a lost mount.
  const before = remembered?.path === path ? remembered.storeId || undefined : undefined;
  const gone = (how: string): StoreVerdict => ({
    kind: 'refuse',
    problem: `vfs.path ${path} ${how}`,
    remedy: `mount its filesystem there, then start stowage; if the store is really gone, remove ${nodeStatePath} to start a new one`,
  });
  if (store === 'no directory') {
    // Made again here, the directory would sit where a mount belongs.
    if (before) return gone(`does not exist, but this node used stowage store ${before} there before`);
    if (shared === true) {
      return { kind: 'refuse', problem: `vfs.path ${path} does not exist`, remedy: 'mount the shared filesystem there before starting stowage' };
    }
    return { kind: 'new', makesPath: true, checkShared: false };
  }
  if (store === 'no marker') {
    if (before) return gone(`no longer holds stowage store ${before} that this node used before`);
    return { kind: 'new', makesPath: false, checkShared: shared === true };
  }
  return before && before !== store.storeId ? { kind: 'open', storeId: store.storeId, replaces: before } : { kind: 'open', storeId: store.storeId };
}

/** The daemon's words when it starts on another store than the one this node used at the same path. */
export function replacedStoreMessage(path: string, storeId: string, replaces: string): string {
  return `vfs.path ${path} now holds stowage store ${storeId}, not store ${replaces} that this node used there before: ` +
    `this node now uses store ${storeId} and its volumes`;
}
