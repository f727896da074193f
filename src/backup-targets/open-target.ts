import { stat } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { BlobStore } from '../core/backup/index.js';
import { ErrorCodes, StowageError } from '../core/errors.js';
import type { BackupTarget } from '../core/backup/backup-url.js';
import { S3BlobStore } from './s3/s3-blob-store.js';
import { VfsBlobStore } from './vfs/vfs-blob-store.js';

/**
 * The BlobStore for a parsed target: one entry per scheme of backup-url.ts. A new target (S3)
 * adds its scheme's syntax there and its store here.
 */
export function openTarget(target: BackupTarget, options: { signal?: AbortSignal } = {}): BlobStore {
  switch (target.scheme) {
    case 'vfs':
      return new VfsBlobStore(target.path);
    case 's3':
      // A cancelled job's requests to a dead server end at once (a file system call cannot be aborted).
      return new S3BlobStore(target, { signal: options.signal });
  }
}

/**
 * Checks that a repository can be made at `target` before a backup starts: a vfs repository's
 * directory is created on first write, but its parent must exist (no mkdir -p of a typo).
 */
export async function assertTargetReachable(target: BackupTarget, options: { signal?: AbortSignal } = {}): Promise<void> {
  switch (target.scheme) {
    case 'vfs': {
      const parent = dirname(target.path);
      const found = await stat(parent).catch(() => undefined);
      if (!found?.isDirectory()) {
        throw new StowageError(ErrorCodes.INVALID_REQUEST,
          `cannot keep a backup repository at ${target.path}: ${parent} does not exist or is not a directory (is the backup filesystem mounted?)`);
      }
      return;
    }
    case 's3':
      await new S3BlobStore(target, { signal: options.signal }).assertReachable();
  }
}
