import { realpath } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { sweepTemps } from '../../core/atomic-file.js';
import { CLUSTER_LAYOUT } from '../../core/cluster/node-record.js';
import { withCheckedDir } from '../../core/cluster/node-dir.js';
import type { FsPort } from '../../core/fs-port.js';
import { onLocalFilesystem } from '../../core/local-fs.js';
import type { Logger } from '../../core/logger.js';
import { readFileNoFollow, realDirOn } from '../../core/safe-path.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { ErrorCodes, StowageError, errnoCode, messageOf } from '../../core/errors.js';
import type { RegistryEntry } from './registry-entry.js';
import { MountPointsBelow } from '../../core/mount-points.js';
import { mountOf, parseMountinfo, type MountinfoEntry } from '../../core/proc-mounts.js';
import { decideSharing, type SharingDecision } from './store-sharing.js';

export const META_DIR = '.stowage';

/** Every directory stowage keeps inside a store; each is checked at start and kept 0700. */
export interface StoreLayout {
  meta: string;
  volumes: string;
  removed: string;
  deleting: string;
  journal: string;
  cluster: string;
  /** Node records (cluster layout 2, see CLUSTER_LAYOUT). */
  members: string;
  /** Mount markers, one directory per node. */
  mounts: string;
  /** Layout 1's directory of node records, now a file (read only for evidence of other nodes). */
  legacyNodes: string;
  locks: string;
}

export function storeLayout(path: string): StoreLayout {
  const meta = join(path, META_DIR);
  const cluster = join(meta, 'cluster');
  return {
    meta,
    volumes: join(meta, 'volumes'),
    removed: join(meta, 'removed'),
    deleting: join(meta, 'deleting'),
    journal: join(meta, 'journal'),
    cluster,
    members: join(cluster, CLUSTER_LAYOUT.members),
    mounts: join(cluster, CLUSTER_LAYOUT.mounts),
    legacyNodes: join(cluster, CLUSTER_LAYOUT.legacyNodes),
    locks: join(cluster, 'locks'),
  };
}

/** The order matters: parents before children. */
export function internalDirs(layout: StoreLayout): string[] {
  return [layout.meta, layout.volumes, layout.removed, layout.deleting, layout.journal, layout.cluster, layout.members, layout.mounts, layout.locks];
}

export const storeMarkerSchema = z.object({
  format: z.literal(1),
  storeId: z.string().regex(/^[0-9a-f]{8,64}$/),
  createdAt: z.string(),
  createdBy: z.string(),
});
export type StoreMarker = z.infer<typeof storeMarkerSchema>;

export const nodeStateSchema = z.object({ path: z.string(), storeId: z.string() }).partial();

/** Reads a JSON record without following symlinks; undefined when the file does not exist. */
export async function readRecord<S extends z.ZodType>(fs: FsPort, schema: S, path: string, what: string): Promise<z.infer<S> | undefined> {
  const text = await readFileNoFollow(fs, path);
  return text === undefined ? undefined : parseRecordText(schema, text, `${what} ${path}`);
}

/**
 * Names of node records other than this node's in the given directories (`.stowage/cluster/members/`,
 * and layout 1's `nodes/` while it is still a directory).
 */
export async function otherNodeRecords(fs: FsPort, nodesDirs: readonly string[], nodeId: string): Promise<string[]> {
  const files: string[] = [];
  for (const dir of nodesDirs) {
    files.push(...await fs.readdir(dir).catch((err: unknown) => {
      // ENOTDIR: layout 2's `nodes` file.
      if (errnoCode(err) === 'ENOENT' || errnoCode(err) === 'ENOTDIR') return [] as string[];
      throw err;
    }));
  }
  return files
    .filter((file) => file.endsWith('.json') && !file.startsWith('.') && file !== `${nodeId}.json`)
    .map((file) => file.slice(0, -'.json'.length))
    .filter((id, i, all) => all.indexOf(id) === i)
    .sort();
}

/** The mount holding `path`, from /proc/self/mountinfo; undefined where that cannot be read (memfs, non-Linux). */
export async function mountHolding(fs: FsPort, path: string): Promise<MountinfoEntry | undefined> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => undefined);
  if (typeof text !== 'string') return undefined;
  // Mount points are real paths: a vfs.path reached through a symlink is looked up where it leads.
  const real = await realpath(path).catch(() => path);
  return mountOf(parseMountinfo(text), real);
}

/** Other nodes' temp files may belong to a write in progress; only old ones are removed. */
const STALE_TEMP_MS = 60 * 60 * 1000;

/** Removes leftover temps in the store's internal directories and in --root. */
export async function sweepStoreTemps(fs: FsPort, log: Logger, nodeId: string, dirs: readonly string[]): Promise<void> {
  const sweep = { nodeId, maxAgeMs: STALE_TEMP_MS, nowMs: Date.now() };
  for (const dir of dirs) {
    const removed = await sweepTemps(fs, dir, sweep).catch((err: unknown) => {
      log.warn(`could not clean temp files in ${dir}: ${messageOf(err)}`);
      return [];
    });
    if (removed.length > 0) log.info(`removed ${removed.length} leftover temp file(s) in ${dir}`);
  }
}

/** What stowage names the data it moves aside: `NAME@<UTC stamp>-<hex>`; purge touches nothing else. */
export const MOVED_NAME = /^[A-Za-z0-9][A-Za-z0-9_.-]*@\d{8}T\d{6}Z-[0-9a-f]{6}$/;

/** Entries of `deleting/` that stowage put there: the right name, a real directory on the store's device. */
export async function purgeable(fs: FsPort, log: Logger, deleting: string, dev: number): Promise<string[]> {
  const found: string[] = [];
  for (const leftover of await fs.readdir(deleting)) {
    const path = join(deleting, leftover);
    if (!MOVED_NAME.test(leftover)) {
      log.warn(`leaving ${path} alone: stowage did not put it there`);
      continue;
    }
    const real = await realDirOn(fs, path, dev).then(() => true, (err: unknown) => {
      log.warn(`leaving ${path} alone: ${messageOf(err)}`);
      return false;
    });
    if (real) found.push(path);
  }
  return found;
}

/**
 * Gathers the evidence that a store is shared and decides the scope; `false` is held to its
 * promise: a store other nodes use is never run unprotected by accident.
 */
export async function decideStoreSharing(
  fs: FsPort, log: Logger, nodeId: string, options: { path: string; shared: boolean | 'auto' }, nodesDirs: readonly string[],
  creators: readonly string[],
): Promise<SharingDecision> {
  const { path, shared } = options;
  const decision = decideSharing(shared, {
    mount: await mountHolding(fs, path),
    otherNodes: await otherNodeRecords(fs, nodesDirs, nodeId),
    otherCreators: [...new Set(creators.filter((id) => id !== nodeId))].sort(),
  });
  if (shared === false && decision.evidence.length > 0) {
    throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `vfs.shared=false, but the store at ${path} is used by more than this node (${nodeId}): ` +
      `${decision.evidence.join('; ')}. Start with vfs.shared=true (or leave vfs.shared unset) so removals check ` +
      `the other nodes; if those nodes are gone for good, forget them or delete their records in ${nodesDirs[0]}`);
  }
  if (decision.evidence.length > 0) log.info(`vfs store ${path} is shared (scope global): ${decision.evidence.join('; ')}`);
  else log.info(`vfs store ${path} shows no other node (scope ${decision.scope}); cluster protection stays on`);
  return decision;
}

/** Where an entry's data lives. Entries come from shared storage: only a single plain name is followed. */
export function dataPathOf(storePath: string, entry: RegistryEntry): string {
  // The registry schema already allows only a single plain component; checked again because
  // an entry from shared storage must never name a path outside the store.
  if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(entry.dataDir) || entry.dataDir.includes('..')) {
    throw new StowageError(ErrorCodes.STATE_CORRUPT,
      `registry entry of volume ${entry.record.name} points at ${JSON.stringify(entry.dataDir)}, outside the store`,
      { volume: entry.record.name });
  }
  return join(storePath, entry.dataDir);
}

/**
 * What sits where a volume's data goes: nothing, an empty directory, or data; anything else is a
 * conflict. A mount point is refused, a bind mount of this filesystem too: the volume's data would
 * be the files of wherever it came from, and its remove could only fail. The table is this mount
 * namespace's (see MountPointsBelow): a host mount that never reached a managed plugin's namespace
 * covers nothing the plugin takes or deletes. A mount further down is not looked for: one can
 * appear in any volume at any time, and the delete leaves it alone.
 */
export async function dataStateAt(fs: FsPort, dir: string, name: string, dev: number): Promise<'absent' | 'empty' | 'data'> {
  const stat = await fs.lstat(dir).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (!stat) return 'absent';
  if (stat.isSymbolicLink() || !stat.isDirectory()) {
    throw new StowageError(ErrorCodes.DATA_CONFLICT,
      `${dir} exists and is not a plain directory of the store (a file or symlink); move it away first`, { volume: name });
  }
  if (stat.dev !== dev) throw dataIsMountPoint(dir, name);
  await assertNoMountAt(fs, dir, name);
  return (await fs.readdir(dir)).length > 0 ? 'data' : 'empty';
}

/** Throws unless the mount table shows no mount at `dir` (a bind mount of this filesystem shows its device). */
export async function assertNoMountAt(fs: FsPort, dir: string, name: string): Promise<void> {
  if ((await MountPointsBelow.read(fs, dir)).at(dir)) throw dataIsMountPoint(dir, name);
}

/** The data directory of volume `name` is a mount point (found so, or as rename's EBUSY says). */
export function dataIsMountPoint(dir: string, name: string, cause?: unknown): StowageError {
  return new StowageError(ErrorCodes.DATA_CONFLICT,
    `${dir} is a mount point (another filesystem, or a directory or file from elsewhere, is mounted there), ` +
    `not a plain directory of the store; stowage neither takes nor moves it: unmount it, then try again`, { volume: name, cause });
}

/**
 * Moves a removed volume's data from `source` into `area` (`deleting/` or `removed/`) as `leaf`,
 * through a descriptor of `area` (see openCheckedDir): a symlink swapped in for it after the
 * checks cannot take the data out of the store. True when moved; false when `source` is gone
 * (removed meanwhile). Any other failure, a vanished `area` included, leaves the data in place.
 */
/** Puts data moveAside moved back at `source`, through a checked descriptor of `area` too. */
export async function moveBack(fs: FsPort, area: string, leaf: string, source: string): Promise<void> {
  await withCheckedDir(fs, area, 'a directory of removed volumes', (base) => fs.rename(join(base, leaf), source));
}

export async function moveAside(fs: FsPort, source: string, area: string, leaf: string, name: string): Promise<boolean> {
  try {
    await withCheckedDir(fs, area, 'a directory of removed volumes', (base) => fs.rename(source, join(base, leaf)));
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EBUSY') throw dataIsMountPoint(source, name, err);
    if (errnoCode(err) !== 'ENOENT') throw err;
    if (!(await fs.lstat(source).then(() => true, () => false))) return false;
    throw new StowageError(ErrorCodes.STATE_CORRUPT,
      `cannot move the data of volume ${name} into ${area}: that directory is gone; nothing was removed`, { volume: name, cause: err });
  }
}

/** Mount points /etc/fstab names (octal escapes such as `\040` decoded), "/" and swap left out. */
export function fstabMountPoints(text: string): string[] {
  return text.split('\n').map((line) => line.trim().split(/\s+/)).filter((f) => f.length >= 2 && !f[0]!.startsWith('#'))
    .map((f) => f[1]!.replace(/\\([0-7]{3})/g, (_m, oct: string) => String.fromCharCode(parseInt(oct, 8))))
    .filter((point) => point.startsWith('/') && point !== '/');
}

/** What stands against a new store at `path`: an unmounted /etc/fstab mount point it lies at or under, or that it is a plain local directory. */
export interface NewStoreRisk {
  /** The deepest-reaching mount point of /etc/fstab holding `path` that is not mounted. */
  unmounted?: string;
  /** The local filesystem type, when `path` is a plain directory of one (not a mount point itself). */
  localDir?: string;
}

/** Reads the mount table and /etc/fstab only; empty where the mount table cannot be read. */
export async function newStoreRisk(fs: FsPort, path: string): Promise<NewStoreRisk> {
  const holding = await mountHolding(fs, path);
  if (!holding) return {};
  const real = await realpath(path).catch(() => path);
  const fstab = await fs.readFile('/etc/fstab', 'utf8').then(String, () => '');
  const unmounted = fstabMountPoints(fstab).find((point) => (real === point || real.startsWith(`${point}/`)) && point.length > holding.mountPoint.length);
  if (unmounted !== undefined) return { unmounted };
  return holding.mountPoint !== real && onLocalFilesystem(path) === true ? { localDir: holding.fstype } : {};
}

export const unmountedFstabProblem = (path: string, point: string): string =>
  `vfs.path ${path} is declared shared and holds no stowage store, and it lies under ${point}, a mount point in /etc/fstab that is not mounted`;

export const localSharedStoreProblem = (path: string, fstype: string): string =>
  `vfs.path ${path} is declared shared but is a plain directory of a local filesystem (${fstype}), not a mount, ` +
  'and holds no stowage store: a new store is made here, which other nodes do not see';

export const LOCAL_SHARED_STORE_REMEDY = 'If a shared filesystem belongs there, stop stowage, mount it, and remove the new store (its .stowage directory)';

/**
 * Before a new store is made at `path` declared shared: a mount that did not come up must not
 * become a store on the local disk, which other nodes never see (two volumes of one name, each
 * node writing its own). Refused when `path` is at or under a mount point of /etc/fstab that is
 * not mounted; said loudly when it is a plain directory of a local filesystem.
 */
export async function checkNewSharedStore(fs: FsPort, path: string, log: Logger): Promise<void> {
  const risk = await newStoreRisk(fs, path);
  if (risk.unmounted !== undefined) {
    throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `${unmountedFstabProblem(path, risk.unmounted)}: mount it (mount ${risk.unmounted}), then start stowage`);
  }
  if (risk.localDir !== undefined) log.warn(`${localSharedStoreProblem(path, risk.localDir)}. ${LOCAL_SHARED_STORE_REMEDY}`);
}
