import { realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ErrorCodes, StowageError } from '../errors.js';
import type { BackupTarget } from './backup-url.js';
import { isRetainedSnapshotsKey } from './retained-snapshots.js';

/**
 * The directories stowage keeps its own data in: its root (state, restore markers) and the
 * backend's store (volumes, `.stowage/` with the snapshot repositories and cluster state). A
 * backup repository made inside them would put its objects among volumes or state (a volume
 * named `packs` could no longer be created), and a backup deleted from there (a snapshot's)
 * takes data a snapshot relies on.
 */
export class OwnStorage {
  constructor(private readonly dirs: readonly string[]) {}

  /** The store of a backend whose cluster directory is `<store>/.stowage/cluster` (vfs, glusterfs). */
  static storeOf(clusterStateDir: string | undefined): string[] {
    if (clusterStateDir === undefined) return [];
    const stowageDir = dirname(clusterStateDir);
    return basename(clusterStateDir) === 'cluster' && basename(stowageDir) === '.stowage' ? [dirname(stowageDir)] : [];
  }

  /**
   * Refuses a vfs repository at or inside one of these directories, symlinks resolved. With
   * `retainedVolume`, a name a removed volume's snapshots are kept under (isRetainedSnapshotsKey),
   * the store's snapshot repository itself is allowed: no snapshot relies on those backups.
   */
  async assertOutside(target: BackupTarget, what: string, retainedVolume?: string): Promise<void> {
    if (target.scheme !== 'vfs') return;
    const path = await resolvedPath(target.path);
    for (const dir of this.dirs) {
      const own = await resolvedPath(dir);
      if (retainedVolume !== undefined && isRetainedSnapshotsKey(retainedVolume) && path === join(own, '.stowage', 'snapshots')) continue;
      if (path === own || path.startsWith(`${own}/`)) {
        throw new StowageError(ErrorCodes.INVALID_REQUEST,
          `${what} ${target.path} is inside stowage's own storage (${dir}): keep backup repositories elsewhere (a volume's snapshots are kept there already)`);
      }
    }
  }
}

/** `path` with symlinks resolved as far as it exists (a repository is made on first write). */
async function resolvedPath(path: string): Promise<string> {
  const absolute = resolve(path);
  let existing = absolute;
  const rest: string[] = [];
  for (;;) {
    try {
      return join(await realpath(existing), ...rest.reverse());
    } catch {
      const parent = dirname(existing);
      if (parent === existing) return absolute;
      rest.push(basename(existing));
      existing = parent;
    }
  }
}
