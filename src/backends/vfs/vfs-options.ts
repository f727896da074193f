import { join, isAbsolute, resolve } from 'node:path';
import { ErrorCodes, StowageError } from '../../core/errors.js';

export interface VfsOptions {
  /**
   * Directory holding one directory per volume plus the registry; local or a shared mount.
   * @default `<root>/volumes`
   */
  path: string;
  /**
   * Declares `path` shared between nodes (NFS, GlusterFS FUSE, ...): scope becomes `global`
   * and the path must already exist (stowage never creates a stand-in for a missing mount).
   * @default false
   */
  shared: boolean;
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
  const sharedRaw = raw['vfs.shared'] ?? 'false';
  if (!/^(true|false)$/.test(sharedRaw)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `vfs.shared=${JSON.stringify(sharedRaw)}: expected true or false`);
  }
  return { path: resolve(path), shared: sharedRaw === 'true' };
}
