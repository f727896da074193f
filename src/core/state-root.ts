import * as fsp from 'node:fs/promises';
import { ErrorCodes, StowageError, errnoCode } from './errors.js';
import type { Logger } from './logger.js';
import { MOUNTS_FILE, MOUNTS_LOG } from './mount-log.js';
import { INSTANCE_FILE } from './cluster/node-instance.js';

/**
 * Names only a stowage daemon leaves in its state root (the lock, the mount records): a
 * directory holding one of them was stowage's before. `lost+found` is what a filesystem made
 * for the root brings along.
 */
const STATE_NAMES = new Set(['daemon.lock', MOUNTS_FILE, MOUNTS_LOG, INSTANCE_FILE]);
const BROUGHT_BY_MKFS = 'lost+found';

/**
 * Makes the state root, or takes an existing one, before anything is written in it. Node-local
 * state names volumes and mounts, so the root is made 0700, and an existing root that is
 * stowage's (empty, or holding its state) is tightened to 0700. A directory that already held
 * other things (a mistyped `--root /var/lib`) keeps its mode: tightening it would lock every
 * other user out of what it holds. That is said in the log.
 */
export async function prepareStateRoot(root: string, log?: Logger): Promise<void> {
  const before = await fsp.stat(root).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  });
  if (!before) {
    await fsp.mkdir(root, { recursive: true, mode: 0o700 });
    // The process's umask never adds bits, but a directory made between the two calls might have others.
    await fsp.chmod(root, 0o700);
    return;
  }
  if (!before.isDirectory()) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `the state root ${root} is not a directory`);
  }
  if ((before.mode & 0o077) === 0) return;
  const names = await fsp.readdir(root);
  const ours = names.every((n) => n === BROUGHT_BY_MKFS) || names.some((n) => STATE_NAMES.has(n));
  if (ours) {
    await fsp.chmod(root, 0o700);
    return;
  }
  const shown = names.filter((n) => n !== BROUGHT_BY_MKFS).slice(0, 3).map((n) => JSON.stringify(n)).join(', ');
  log?.warn(`the state root ${root} already held other things (${shown}${names.length > 3 ? ', ...' : ''}) and has mode ` +
    `${(before.mode & 0o777).toString(8)}: its mode is left as it is, so local users can read the volume names and mount ` +
    'records stowage keeps there; give stowage a directory of its own');
}
