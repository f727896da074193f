import { randomBytes } from 'node:crypto';
import { basename, dirname, join } from 'node:path';
import { errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';

/**
 * Files of the cluster directory that are rewritten all the time (node records at every
 * heartbeat and mount, locks at every create, remove and mount) are written WITHOUT fsync: a
 * lock that survives a power loss would only block, and a node record is rewritten seconds
 * later. Atomicity (rename, link) is kept; durability is not needed.
 * Temp names start with a dot, so no reader mistakes them for records.
 */
function tempFor(path: string): string {
  return join(dirname(path), `.${basename(path)}.tmp-${randomBytes(6).toString('hex')}`);
}

export async function replaceFile(fs: FsPort, path: string, data: string): Promise<void> {
  const temp = tempFor(path);
  try {
    await fs.writeFile(temp, data, { flag: 'wx', mode: 0o644 });
    await fs.rename(temp, path);
  } catch (err) {
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** Creates `path` only if absent (a hard link is exclusive on NFS and GlusterFS too); false if it existed. */
export async function createExclusive(fs: FsPort, path: string, data: string): Promise<boolean> {
  const temp = tempFor(path);
  await fs.writeFile(temp, data, { flag: 'wx', mode: 0o644 });
  try {
    await fs.link(temp, path);
    return true;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    await fs.unlink(temp).catch(() => undefined);
  }
}
