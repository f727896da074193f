import type { BlobStore } from '../core/backup/index.js';
import type { BackupTarget } from '../core/backup/backup-url.js';
import { VfsBlobStore } from './vfs/vfs-blob-store.js';

/**
 * The BlobStore for a parsed target: one entry per scheme of backup-url.ts. A new target (S3)
 * adds its scheme's syntax there and its store here.
 */
export function openTarget(target: BackupTarget): BlobStore {
  switch (target.scheme) {
    case 'vfs':
      return new VfsBlobStore(target.path);
  }
}
