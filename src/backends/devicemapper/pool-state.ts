import { z } from 'zod';
import { readJsonFile, writeFileAtomic } from '../../core/atomic-file.js';
import { ErrorCodes, StowageError, messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import { firstIssue } from '../../core/schema/parse-record.js';
import { volumeRecordSchema } from '../../core/schema/volume-record.js';
import type { DmFilesystem } from './dm-options.js';

/** Thin device ids are 24 bits wide. */
export const MAX_THIN_ID = 2 ** 24 - 1;

/** zod's int() takes safe integers only, as the ids and transaction numbers here need. */
const int = z.number().int();
const filesystem = z.enum(['ext4', 'xfs']) satisfies z.ZodType<DmFilesystem>;

const snapshotEntrySchema = z.object({
  name: z.string(),
  thinId: int,
  /** The pool transaction id the device was created under (see pool-ownership.ts). */
  createdInTx: int.optional(),
  createdAt: z.string(),
});
export type SnapshotEntry = z.infer<typeof snapshotEntrySchema>;

const volumeEntrySchema = z.object({
  record: volumeRecordSchema,
  thinId: int,
  /** The pool transaction id the device was created under (see pool-ownership.ts). */
  createdInTx: int.optional(),
  sectors: int,
  fs: filesystem,
  /** False until the filesystem is made: such an entry is rolled back at the next start. */
  ready: z.boolean(),
  /** Mounted on this node (re-mounted after a reboot). */
  mounted: z.boolean(),
  /** lost+found removed and owner/mode applied (done at the first attach). */
  prepared: z.boolean(),
  snapshots: z.array(snapshotEntrySchema),
});
export type VolumeEntry = z.infer<typeof volumeEntrySchema>;

/** A volume removed with `retain`: its thin device kept and mounted read-only at `path`. */
const retainedEntrySchema = z.object({
  name: z.string(),
  removedAt: z.string(),
  thinId: int,
  createdInTx: int.optional(),
  sectors: int,
  fs: filesystem,
  path: z.string(),
  snapshots: z.array(snapshotEntrySchema),
});
export type RetainedEntry = z.infer<typeof retainedEntrySchema>;

/**
 * A metadata change between its message and the state write that records it (crash recovery).
 * The change moves the pool to `claimTx` before its message and to `doneTx` after it, so a
 * device created by it carries `claimTx`. State written before claims has `fromTx`/`toTx`
 * instead: such a change cannot be proven ours and is never replayed.
 */
const pendingChangeSchema = z.object({
  op: z.enum(['create', 'delete']),
  thinId: int,
  claimTx: int.optional(),
  doneTx: int.optional(),
  /** For a delete: the creation transaction of the device being deleted. */
  createdInTx: int.optional(),
  fromTx: int.optional(),
  toTx: int.optional(),
});
export type PendingChange = z.infer<typeof pendingChangeSchema>;

const poolInfoSchema = z.object({
  name: z.string(),
  dataDevice: z.string().optional(),
  metadataDevice: z.string().optional(),
  blockSectors: int,
  /** True when stowage created the pool (zeroed its metadata); false for an adopted pool. */
  createdByStowage: z.boolean(),
  createdAt: z.string(),
});
export type PoolInfo = z.infer<typeof poolInfoSchema>;

const poolStateSchema = z.object({
  format: z.literal(1),
  writtenBy: z.string(),
  writtenAt: z.string(),
  pool: poolInfoSchema,
  /** The pool's transaction id after stowage's last committed change. */
  transactionId: int,
  /** Ids found taken by someone else ("File exists"): skipped, never reused. */
  foreignIds: z.array(int),
  /**
   * No thin id below this is handed out again: ids are allocated upwards, so an id a stale or
   * copied state file may still name never comes back. Absent in state written before it.
   */
  nextThinId: int.optional(),
  pending: pendingChangeSchema.optional(),
  volumes: z.record(z.string(), volumeEntrySchema),
  retained: z.array(retainedEntrySchema),
});
export type PoolStateFile = z.infer<typeof poolStateSchema>;

export function emptyState(pool: PoolInfo, transactionId: number): PoolStateFile {
  return { format: 1, writtenBy: '', writtenAt: '', pool, transactionId, foreignIds: [], volumes: {}, retained: [] };
}

/** Every thin id this state refers to. */
export function usedIds(state: PoolStateFile): Set<number> {
  const ids = new Set<number>(state.foreignIds);
  for (const v of Object.values(state.volumes)) {
    ids.add(v.thinId);
    for (const s of v.snapshots) ids.add(s.thinId);
  }
  for (const r of state.retained) {
    ids.add(r.thinId);
    for (const s of r.snapshots) ids.add(s.thinId);
  }
  if (state.pending) ids.add(state.pending.thinId);
  return ids;
}

/** The next id to hand out: at or above the high-water mark, above every id the state names. */
export function nextFreeId(state: PoolStateFile): number {
  const used = usedIds(state);
  let id = Math.max(state.nextThinId ?? 0, ...[...used].map((u) => u + 1));
  while (used.has(id)) id += 1;
  if (id > MAX_THIN_ID) {
    throw new StowageError(ErrorCodes.STORAGE_FULL, `pool ${state.pool.name} has handed out every thin device id (up to ${MAX_THIN_ID}); ` +
      'ids are never reused, so make a new pool for new volumes');
  }
  return id;
}

function corrupt(path: string, why: string): StowageError {
  return new StowageError(ErrorCodes.STATE_CORRUPT,
    `devicemapper pool state ${path} ${why}; restore it from a backup or move it aside and adopt the pool again`);
}

/** Today's sentence for each part of the file, with zod's detail for the first problem. */
function describeIssue(error: z.ZodError): string {
  const { path: [top, key], where, message } = firstIssue(error);
  const detail = ` (${message}${where})`;
  if (top === 'nextThinId') return `has a malformed nextThinId${detail}`;
  if (top === 'volumes' && key !== undefined) return `has a malformed entry for volume ${String(key)}${detail}`;
  if (top === 'retained' && key !== undefined) return `has a malformed retained entry${detail}`;
  if (top === 'pending') return `has a malformed pending change${detail}`;
  return `is not in the expected format${detail}`;
}

export async function loadState(fs: FsPort, path: string): Promise<PoolStateFile | undefined> {
  let data: unknown;
  try {
    data = await readJsonFile(fs, path);
  } catch (err) {
    throw corrupt(path, `cannot be read (${messageOf(err)})`);
  }
  if (data === undefined) return undefined;
  const checked = poolStateSchema.safeParse(data);
  if (!checked.success) throw corrupt(path, describeIssue(checked.error));
  for (const [name, entry] of Object.entries(checked.data.volumes)) {
    if (entry.record.name !== name) throw corrupt(path, `has a malformed entry for volume ${name} (its record names ${entry.record.name})`);
  }
  // The file as written, not zod's copy without unknown keys: what a later version added
  // survives this version's next save.
  return data as PoolStateFile;
}

export async function saveState(fs: FsPort, path: string, state: PoolStateFile, nodeId: string): Promise<void> {
  state.writtenBy = nodeId;
  state.writtenAt = new Date().toISOString();
  try {
    await writeFileAtomic(fs, path, JSON.stringify(state, null, 1));
  } catch (err) {
    throw new StowageError(ErrorCodes.INTERNAL, `cannot save devicemapper pool state to ${path}: ${messageOf(err)}`,
      { cause: err });
  }
}
