import type { RetainedSnapshots } from './backup/retained-snapshots.js';
import type { VolumeRecord } from './backend.js';
import { ErrorCodes, StowageError } from './errors.js';
import { isValidMountId } from './names.js';
import { formatSize, sameDefiningOptions, type VolumeOptions } from './options.js';

export type RemovePolicy = 'delete' | 'retain';

export interface ManagerConfig {
  nodeId: string;
  /** What `remove` does with data when the caller does not say: delete it, or move it aside. */
  onRemove: RemovePolicy;
  /**
   * A mount record of a volume that no live container on this node uses is dropped once it is
   * this old (a container may be starting right now). @default 60000
   */
  mountGraceMs?: number;
  /** How often mount records are reconciled with the local engine. @default 60000 */
  reconcileMs?: number;
}

export interface VolumeInfo extends VolumeRecord {
  backend: string;
  /** Path on this node while the volume is mounted here. */
  mountpoint?: string;
  /** Mounts on this node, all IDs together. */
  mountCount: number;
  status: Record<string, string>;
}

export interface BriefVolume {
  name: string;
  createdAt: string;
  mountpoint?: string;
}

export interface CreateResult {
  volume: VolumeInfo;
  /** False when an identical volume already existed (create is idempotent). */
  created: boolean;
  /**
   * A restore's: what it could not bring back as the backup has it (an extended attribute the
   * volume's file system refuses), at most 20 and then how many more; also in the log.
   */
  warnings?: string[];
}

export interface RemoveResult {
  name: string;
  retainedAt?: string;
  /** Where snapshots the remove kept are: a retained volume's, or an earlier volume's of the name (vfs, glusterfs; see RemoveOutcome). */
  snapshotsKept?: RetainedSnapshots;
}


export function validateMountId(id: unknown): string {
  if (!isValidMountId(id)) {
    throw new StowageError(ErrorCodes.INVALID_REQUEST, 'a mount needs an ID (a non-empty string of at most 256 characters, no control characters, not __proto__)');
  }
  return id;
}

export function describeOptions(options: VolumeOptions): string {
  const parts: string[] = [];
  if (options.size !== undefined) parts.push(`size=${formatSize(options.size)}`);
  if (options.uid !== undefined) parts.push(`uid=${options.uid}`);
  if (options.gid !== undefined) parts.push(`gid=${options.gid}`);
  if (options.mode !== undefined) parts.push(`mode=${options.mode.toString(8)}`);
  for (const [key, value] of Object.entries(options.backend ?? {})) parts.push(`${key}=${value}`);
  return parts.length > 0 ? parts.join(', ') : 'no options';
}

export function sameOrConflict(existing: VolumeRecord, options: VolumeOptions): VolumeRecord {
  if (sameDefiningOptions(existing.options, options)) return existing;
  throw new StowageError(ErrorCodes.VOLUME_EXISTS,
    `volume ${existing.name} already exists with different options (${describeOptions(existing.options)}); ` +
    `remove it first or create it with the same options`, { volume: existing.name });
}