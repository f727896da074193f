import { randomBytes } from 'node:crypto';
import { dirname } from 'node:path';
import type { FsPort } from './fs-port.js';
import { errnoCode } from './errors.js';

function tempPathFor(path: string): string {
  return `${path}.tmp-${process.pid}-${randomBytes(4).toString('hex')}`;
}

/** Identity of a file's content as `stat` reports it; what caches compare. */
export interface FileIdentity {
  ino: number;
  mtimeMs: number;
  size: number;
}

async function writeDurably(fs: FsPort, path: string, data: string): Promise<FileIdentity> {
  const handle = await fs.open(path, 'wx', 0o644);
  try {
    await handle.writeFile(data);
    await handle.sync();
    const { ino, mtimeMs, size } = await handle.stat();
    return { ino, mtimeMs, size };
  } finally {
    await handle.close();
  }
}

async function syncDir(fs: FsPort, dir: string): Promise<void> {
  // Directory fsync makes the rename durable; some filesystems (and memfs) refuse it.
  try {
    const handle = await fs.open(dir, 'r');
    try { await handle.sync(); } finally { await handle.close(); }
  } catch { /* best effort */ }
}

/** Writes a file so readers see either the old or the new content, never a torn one. */
export async function writeFileAtomic(fs: FsPort, path: string, data: string): Promise<void> {
  const temp = tempPathFor(path);
  try {
    await writeDurably(fs, temp, data);
    await fs.rename(temp, path);
  } catch (err) {
    await fs.rm(temp, { force: true }).catch(() => undefined);
    throw err;
  }
  await syncDir(fs, dirname(path));
}

/**
 * Creates `path` with `data` only if it does not exist yet, atomically and exclusively even on
 * shared filesystems (hard links are exclusive on NFS and GlusterFS; O_EXCL on old NFS is not).
 * Returns false when the file already existed, else the new file's identity (a hard link
 * leaves the inode's mtime as it was).
 */
export async function createFileExclusive(fs: FsPort, path: string, data: string): Promise<false | FileIdentity> {
  const temp = tempPathFor(path);
  const identity = await writeDurably(fs, temp, data);
  try {
    await fs.link(temp, path);
    return identity;
  } catch (err) {
    if (errnoCode(err) === 'EEXIST') return false;
    throw err;
  } finally {
    // The content was fsynced before the link; the new directory entry rides the journal.
    await fs.unlink(temp).catch(() => undefined);
  }
}

export async function readJsonFile(fs: FsPort, path: string): Promise<unknown | undefined> {
  let text: string;
  try {
    text = await fs.readFile(path, 'utf8');
  } catch (err) {
    if (errnoCode(err) === 'ENOENT') return undefined;
    throw err;
  }
  return JSON.parse(text) as unknown;
}
