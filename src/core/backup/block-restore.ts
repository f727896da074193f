import { ErrorCodes, StowageError } from '../errors.js';
import { parseSize } from '../options.js';
import type { CreateResult } from '../volume-types.js';
import { restoreBlocks } from './block-backup.js';
import { notAFileBackup } from './block-format.js';
import type { BackupRecord } from './format.js';
import type { Repository } from './repository.js';
import { failedRestore, RestoreWarnings, type RestoreHost } from './restore-volume.js';
import type { ProgressOptions } from './service-contract.js';

/**
 * `-o backup=URL` for a block backup: a new devicemapper volume of the recorded size, its
 * device written with every block that holds data (and zeros where mkfs wrote and the backup
 * holds none), never mounted before it is complete. A backend without block access refuses
 * before anything is made. On any failure the new volume is removed again.
 */
export async function restoreBlockVolume(host: RestoreHost, name: string, url: string, repo: Repository, record: BackupRecord,
  options: Record<string, unknown>, progress: ProgressOptions): Promise<CreateResult> {
  const blocks = host.blocks?.();
  if (!blocks) throw notAFileBackup(record);
  const device = record.device!;
  for (const key of ['uid', 'gid', 'mode'] as const) {
    if (options[key] !== undefined) {
      throw new StowageError(ErrorCodes.INVALID_OPTION, `option ${key}: a block backup restores its filesystem as it was, owner and mode ` +
        `of its root included; leave ${key} out (and change them in the restored volume if need be)`, { volume: name });
    }
  }
  if (options.size !== undefined) {
    const asked = typeof options.size === 'string' ? parseSize(options.size) : options.size;
    if (asked !== device.sizeBytes) {
      throw new StowageError(ErrorCodes.INVALID_OPTION, `option size: a block backup restores into a volume of its device's size, ` +
        `${device.sizeBytes} bytes; leave size out`, { volume: name });
    }
  }
  let journaled: string | undefined;
  const created = await host.create(name, { ...options, size: String(device.sizeBytes) }, async (incarnation) => {
    journaled = incarnation;
    await host.journal?.begin(name, url, incarnation);
  });
  if (!created.created) {
    throw new StowageError(ErrorCodes.VOLUME_EXISTS,
      `volume ${name} already exists; a restore makes a new volume: choose another name, or remove ${name} first`, { volume: name });
  }
  try {
    progress.signal?.throwIfAborted();
    const totals = { totalFiles: 1, totalBytes: record.stats.bytes };
    progress.onProgress?.({ phase: 'restore', files: 0, bytes: 0, ...totals });
    const warnings = new RestoreWarnings(host.log(), name);
    await blocks.writeNewVolume(name, { sizeBytes: device.sizeBytes, filesystem: device.filesystem }, async (path, mapped) => {
      await restoreBlocks(repo, record.volume, record.id, path, {
        mapped, onWarning: warnings.add,
        onProgress: (p) => {
          progress.signal?.throwIfAborted();
          progress.onProgress?.({ phase: 'restore', files: 0, bytes: p.bytes, ...totals });
        },
      });
    });
    if (journaled !== undefined) await host.journal?.end(name, journaled);
    host.log().info(`restored volume ${name} from block backup ${url} (${record.stats.bytes} bytes of data in ${device.sizeBytes})`);
    return warnings.on(created);
  } catch (err) {
    return failedRestore(host, name, url, err, journaled);
  }
}
