import type * as fsp from 'node:fs/promises';

/**
 * The slice of `node:fs/promises` stowage uses. Production passes the real module; unit and
 * conformance tests pass memfs's `promises` so error paths can be exercised without a disk.
 */
export type FsPort = Pick<
  typeof fsp,
  | 'mkdir' | 'readFile' | 'writeFile' | 'rename' | 'rm' | 'rmdir' | 'readdir' | 'stat' | 'lstat'
  | 'open' | 'chmod' | 'chown' | 'lchown' | 'link' | 'unlink' | 'access' | 'utimes'
>;
