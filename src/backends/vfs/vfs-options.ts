import { access, realpath } from 'node:fs/promises';
import { join, isAbsolute, resolve } from 'node:path';
import type { Logger } from '../../core/logger.js';
import { MOUNTS_FILE, MOUNTS_LOG } from '../../core/mount-log.js';
import { INSTANCE_FILE } from '../../core/cluster/node-instance.js';
import { invalidOption, optionMap, parseBoolOption } from '../../core/schema/option-map.js';

export interface VfsOptions {
  /**
   * Directory holding one directory per volume plus the registry; local or a shared mount.
   * @default `<root>/volumes`
   */
  path: string;
  /**
   * Whether `path` is shared between nodes (NFS, GlusterFS FUSE, ...). Cluster protection runs
   * whatever this says; it decides the scope reported to Docker and the checks at start:
   * `auto` looks for evidence (a network filesystem under `path`, other nodes' records or
   * volumes in the store); `true` declares it (the path must already exist: stowage never
   * creates a stand-in for a missing mount); `false` asserts the store is this node's alone and
   * refuses to start on evidence of the contrary.
   * @default 'auto'
   */
  shared: boolean | 'auto';
}

function parsePath(value: string, key: string): string {
  if (!isAbsolute(value)) throw invalidOption(`${key}=${JSON.stringify(value)} must be an absolute path`);
  const path = resolve(value);
  // The store's own directory (.stowage) and every volume's would sit among the system's.
  if (path === '/') throw invalidOption(`${key}=${JSON.stringify(value)} is the filesystem's root: give the store a directory of its own`);
  return path;
}

const vfsOptions = optionMap('vfs', {
  'vfs.path': parsePath,
  'vfs.shared': (value, key) => value === 'auto' ? 'auto' as const : parseBoolOption(value, key, 'auto, true or false'),
});

export function parseVfsOptions(raw: Record<string, string>, root: string): VfsOptions {
  const given = vfsOptions.parse(raw);
  return { path: given['vfs.path'] ?? parsePath(join(root, 'volumes'), 'vfs.path'), shared: given['vfs.shared'] ?? 'auto' };
}

/** Names an earlier run leaves in a state root (state-root.ts): a root that has them was in use before. */
const EARLIER_RUN = [MOUNTS_FILE, MOUNTS_LOG, INSTANCE_FILE];

/** Whether `path` is `dir` or lies under it (both resolved). */
export function holds(dir: string, path: string): boolean {
  return path === dir || path.startsWith(`${dir}/`);
}

/**
 * Node-local state inside the store would be listed as a volume's directory (a volume of its
 * name could adopt it, and deleting that volume would delete the state), and every node sharing
 * the store could write it. Refused for a new state root; a root already used there (installed
 * before this check) starts with an error in the log, so an upgrade does not stop its volumes.
 * Compared after symlinks are resolved.
 */
export async function assertRootOutsideStore(root: string, path: string, log: Logger): Promise<void> {
  const real = async (p: string) => realpath(p).catch(() => resolve(p));
  const [stateRoot, store] = await Promise.all([real(root), real(path)]);
  if (!holds(store, stateRoot)) return;
  const problem = `the state root ${root} is inside vfs.path ${path}`;
  const used = await Promise.all(EARLIER_RUN.map((name) => access(join(root, name)).then(() => true, () => false)));
  if (!used.includes(true)) throw invalidOption(`${problem}: give the state root a directory outside the store`);
  log.error(`${problem}: a volume of its name could take it over, and other nodes sharing the store can write it; ` +
    'stop this daemon, move the state root outside the store, and start it there');
}