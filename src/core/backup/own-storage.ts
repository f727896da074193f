import { readFile, realpath } from 'node:fs/promises';
import { basename, dirname, join, resolve } from 'node:path';
import { ErrorCodes, StowageError } from '../errors.js';
import type { BackupTarget } from './backup-url.js';
import { isPathWithin, mountOf, parseMountinfo, type MountinfoEntry } from '../proc-mounts.js';
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
   * Refuses a vfs repository at or inside one of these directories, symlinks resolved, and
   * also where the same directory shows through another mount (a bind mount of the store or of
   * a directory in it, the same NFS export or GlusterFS volume mounted twice): compared where it lies in its
   * filesystem, as /proc/self/mountinfo says. With `retainedVolume`, a name a removed volume's
   * snapshots are kept under (isRetainedSnapshotsKey), the store's snapshot repository itself
   * is allowed: no snapshot relies on those backups.
   */
  async assertOutside(target: BackupTarget, what: string, retainedVolume?: string, use: 'write' | 'delete' = 'write'): Promise<void> {
    if (target.scheme !== 'vfs') return;
    const mounts = await mountTable();
    const path = locate(await resolvedPath(target.path), mounts);
    const owned: Array<{ dir: string; at: Location }> = [];
    for (const dir of this.dirs) owned.push({ dir, at: locate(await resolvedPath(dir), mounts) });
    // Before any containment check: by default the store lies inside the root (`<root>/volumes`).
    if (retainedVolume !== undefined && isRetainedSnapshotsKey(retainedVolume) && owned.some(({ at }) => sameLocation(path, within(at, '.stowage', 'snapshots')))) return;
    for (const { dir, at } of owned) {
      if (inside(path, at)) {
        throw new StowageError(ErrorCodes.INVALID_REQUEST,
          `${what} ${target.path} is inside stowage's own storage (${dir}): ` + (use === 'delete'
            ? 'the backups there are volumes\' snapshots, which only go as snapshots: delete the snapshot instead'
            : 'keep backup repositories elsewhere (a volume\'s snapshots are kept there already)'));
      }
    }
  }
}

/** A directory by its path here, and (when /proc says) by its filesystem and its path inside that filesystem. */
export interface Location {
  path: string;
  fs?: { dev: string; path: string };
}

/** This process's mounts; none without /proc (paths alone are compared then). */
async function mountTable(): Promise<MountinfoEntry[]> {
  return parseMountinfo(await readFile('/proc/self/mountinfo', 'utf8').catch(() => ''));
}

/** Where `path` (absolute, symlinks resolved) lies: the mount it is under decides its filesystem and its path there. */
export function locate(path: string, mounts: readonly MountinfoEntry[]): Location {
  const mount = mountOf(mounts, path);
  if (!mount) return { path };
  const rest = path.slice(mount.mountPoint === '/' ? 0 : mount.mountPoint.length);
  const { dev, root } = filesystemOf(mount);
  return { path, fs: { dev, path: join(root, rest) } };
}

/**
 * The filesystem a mount shows, and where in it the mount starts. Each FUSE mount of a GlusterFS
 * volume has a device of its own, so a gluster volume is named by its volume name instead
 * (`host:/VOLUME[/subdir]`, any server of the pool): two clusters with volumes of the same name
 * are taken as one, which only refuses more.
 */
function filesystemOf(mount: MountinfoEntry): { dev: string; root: string } {
  if (mount.fstype === 'fuse.glusterfs') {
    const [volume, ...subdir] = mount.source.slice(mount.source.indexOf(':') + 1).split('/').filter(Boolean);
    if (volume !== undefined) return { dev: `glusterfs:${volume}`, root: join('/', ...subdir, mount.root) };
  }
  return { dev: mount.dev, root: mount.root };
}

function within(location: Location, ...names: string[]): Location {
  return { path: join(location.path, ...names), ...(location.fs ? { fs: { dev: location.fs.dev, path: join(location.fs.path, ...names) } } : {}) };
}

function inside(path: Location, dir: Location): boolean {
  if (isPathWithin(path.path, dir.path)) return true;
  return path.fs !== undefined && dir.fs !== undefined && path.fs.dev === dir.fs.dev && isPathWithin(path.fs.path, dir.fs.path);
}

function sameLocation(a: Location, b: Location): boolean {
  if (a.fs && b.fs) return a.fs.dev === b.fs.dev && a.fs.path === b.fs.path;
  return a.path === b.path;
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
