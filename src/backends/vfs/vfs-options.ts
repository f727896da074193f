import { join, isAbsolute, resolve } from 'node:path';
import { ErrorCodes, StowageError } from '../../core/errors.js';

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

const KEYS = ['vfs.path', 'vfs.shared'];

export function parseVfsOptions(raw: Record<string, string>, root: string): VfsOptions {
  for (const key of Object.keys(raw)) {
    if (!KEYS.includes(key)) {
      throw new StowageError(ErrorCodes.INVALID_OPTION,
        `unknown vfs option ${JSON.stringify(key)}; known options: ${KEYS.join(', ')}`);
    }
  }
  const path = raw['vfs.path'] ?? join(root, 'volumes');
  if (!isAbsolute(path)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `vfs.path=${JSON.stringify(path)} must be an absolute path`);
  }
  const sharedRaw = raw['vfs.shared'] ?? 'auto';
  if (!/^(true|false|auto)$/.test(sharedRaw)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `vfs.shared=${JSON.stringify(sharedRaw)}: expected auto, true or false`);
  }
  return { path: resolve(path), shared: sharedRaw === 'auto' ? 'auto' : sharedRaw === 'true' };
}
