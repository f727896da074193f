import { lstat, opendir, statfs } from 'node:fs/promises';
import { join } from 'node:path';
import type { VolumeUsage } from './backend.js';

/** The filesystem holding `path`: its size and free space for unprivileged writers. */
export async function filesystemSpace(path: string): Promise<{ sizeBytes: number; usedBytes: number; availableBytes: number }> {
  const fs = await statfs(path);
  return {
    sizeBytes: fs.blocks * fs.bsize,
    usedBytes: (fs.blocks - fs.bfree) * fs.bsize,
    availableBytes: fs.bavail * fs.bsize,
  };
}

/**
 * The space a directory's tree takes (allocated blocks, as `du` counts them), hard links counted
 * once, without leaving its filesystem. Entries that vanish meanwhile are skipped: a volume in
 * use changes while it is read.
 */
export async function directoryBytes(root: string): Promise<number> {
  const top = await lstat(root, { bigint: true });
  const seen = new Set<bigint>();
  let total = 0;
  const visit = async (dir: string): Promise<void> => {
    let handle;
    try {
      handle = await opendir(dir);
    } catch {
      return;
    }
    for await (const entry of handle) {
      const path = join(dir, entry.name);
      const st = await lstat(path, { bigint: true }).catch(() => undefined);
      if (!st || st.dev !== top.dev) continue;
      if (st.nlink > 1n) {
        if (seen.has(st.ino)) continue;
        seen.add(st.ino);
      }
      total += Number(st.blocks) * 512;
      if (st.isDirectory()) await visit(path);
    }
  };
  total += Number(top.blocks) * 512;
  await visit(root);
  return total;
}

/**
 * A directory volume's usage: its tree's size, against its size option when it has one, else
 * against its filesystem. (vfs and glusterfs without quota record a size but do not enforce it.)
 */
export async function directoryUsage(path: string, sizeBytes: number | undefined): Promise<VolumeUsage> {
  const [usedBytes, fs] = await Promise.all([directoryBytes(path), filesystemSpace(path)]);
  if (sizeBytes === undefined) return { capacityBytes: fs.sizeBytes, usedBytes, availableBytes: fs.availableBytes };
  return { capacityBytes: sizeBytes, usedBytes, availableBytes: Math.max(0, Math.min(sizeBytes - usedBytes, fs.availableBytes)) };
}
