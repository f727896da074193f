import { VfsBlobStore } from '../../backup-targets/vfs/vfs-blob-store.js';
import { ErrorCodes, StowageError } from '../errors.js';
import { randomHex } from '../random-hex.js';
import { formatBackupUrl } from './backup-url.js';
import { listAll, VolumeNameSchema } from './index.js';

/** What a remove did with snapshots it kept as backups (RepositorySnapshots.retainAll, deleteAll). */
export interface RetainedSnapshots {
  /** How many snapshot names were kept. */
  snapshots: number;
  /** How many backups were kept (one per snapshot, and any a snapshot interrupted before its name left). */
  backups: number;
  /** The repository and the name they are kept under, as a backup URL (`stowage backup list --dest URL`). */
  url: string;
  /**
   * True when they are not the removed volume's but an earlier volume's of the same name: taken
   * on another node while that one was being removed, they finished after it. A remove that
   * deletes a volume's snapshots keeps those, since nobody asked to delete them.
   */
  ofEarlierVolume?: boolean;
}

/** A removal's stamp: UTC time to the second, then random hex (see removalStamp). */
const STAMP = '[A-Za-z0-9_-]{1,40}';
const RETAINED_MARK = '..removed-';
const RETAINED_KEY = new RegExp(`\\.\\.removed-${STAMP}$`);
const VALID_STAMP = new RegExp(`^${STAMP}$`);

/**
 * A stamp for one removal, unique and sortable by time: it names a retained data directory
 * (`NAME@STAMP`) and the key its snapshots are kept under.
 */
export function removalStamp(): string {
  return new Date().toISOString().replace(/[-:]/g, '').replace(/\.\d+Z$/, 'Z') + '-' + randomHex(3);
}

/** Whether a repository's volume name is one retainedSnapshotsKey makes. */
export function isRetainedSnapshotsKey(volume: string): boolean {
  return VolumeNameSchema.safeParse(volume).success && RETAINED_KEY.test(volume);
}

/**
 * The name a removed volume's kept snapshots go under: the volume's name (cut to fit), then
 * `..removed-` and the removal's stamp. No volume can have it (volume names never hold ".."), so
 * a new volume never sees them; the repository's own name rule (VolumeNameSchema) allows it.
 */
export function retainedSnapshotsKey(volume: string, stamp: string): string {
  if (!VALID_STAMP.test(stamp)) throw new StowageError(ErrorCodes.INTERNAL, `removal stamp ${JSON.stringify(stamp)} is not valid`);
  const key = `${volume.slice(0, 128 - RETAINED_MARK.length - stamp.length)}${RETAINED_MARK}${stamp}`;
  return VolumeNameSchema.parse(key);
}

/** The kept snapshots in the snapshot repository at `dir`, as "N backup(s) of M removed volume(s) at URL"; undefined when none. */
export async function keptSummaryOf(dir: string): Promise<string | undefined> {
  const volumes = new Set<string>();
  let backups = 0;
  for await (const { key } of listAll(new VfsBlobStore(dir), 'backups/')) {
    const volume = key.split('/')[1];
    if (volume === undefined || !isRetainedSnapshotsKey(volume)) continue;
    volumes.add(volume);
    backups += 1;
  }
  if (backups === 0) return undefined;
  return `${backups} backup(s) of ${volumes.size} removed volume(s) at ${formatBackupUrl({ target: { scheme: 'vfs', path: dir } })}`;
}
