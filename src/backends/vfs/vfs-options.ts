import { join, isAbsolute, resolve } from 'node:path';
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
  const path = given['vfs.path'] ?? parsePath(join(root, 'volumes'), 'vfs.path');
  // Node-local state inside the store would be listed as a volume's directory, and written by
  // every node sharing it.
  const stateRoot = resolve(root);
  if (stateRoot === path || stateRoot.startsWith(`${path}/`)) {
    throw invalidOption(`the state root ${stateRoot} is inside vfs.path ${path}: give the state root a directory outside the store`);
  }
  return { path, shared: given['vfs.shared'] ?? 'auto' };
}
