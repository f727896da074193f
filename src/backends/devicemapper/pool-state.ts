import type { VolumeRecord } from '../../core/backend.js';
import { readJsonFile, writeFileAtomic } from '../../core/atomic-file.js';
import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { DmFilesystem } from './dm-options.js';

/** Thin device ids are 24 bits wide. */
export const MAX_THIN_ID = 2 ** 24 - 1;

export interface SnapshotEntry {
  name: string;
  thinId: number;
  /** The pool transaction id the device was created under (see pool-ownership.ts). */
  createdInTx?: number;
  createdAt: string;
}

export interface VolumeEntry {
  record: VolumeRecord;
  thinId: number;
  /** The pool transaction id the device was created under (see pool-ownership.ts). */
  createdInTx?: number;
  sectors: number;
  fs: DmFilesystem;
  /** False until the filesystem is made: such an entry is rolled back at the next start. */
  ready: boolean;
  /** Mounted on this node (re-mounted after a reboot). */
  mounted: boolean;
  /** lost+found removed and owner/mode applied (done at the first attach). */
  prepared: boolean;
  snapshots: SnapshotEntry[];
}

/** A volume removed with `retain`: its thin device kept and mounted read-only at `path`. */
export interface RetainedEntry {
  name: string;
  removedAt: string;
  thinId: number;
  createdInTx?: number;
  sectors: number;
  fs: DmFilesystem;
  path: string;
  snapshots: SnapshotEntry[];
}

/**
 * A metadata change between its message and the state write that records it (crash recovery).
 * The change moves the pool to `claimTx` before its message and to `doneTx` after it, so a
 * device created by it carries `claimTx`. State written before claims has `fromTx`/`toTx`
 * instead: such a change cannot be proven ours and is never replayed.
 */
export interface PendingChange {
  op: 'create' | 'delete';
  thinId: number;
  claimTx?: number;
  doneTx?: number;
  /** For a delete: the creation transaction of the device being deleted. */
  createdInTx?: number;
  fromTx?: number;
  toTx?: number;
}

export interface PoolInfo {
  name: string;
  dataDevice?: string;
  metadataDevice?: string;
  blockSectors: number;
  /** True when stowage created the pool (zeroed its metadata); false for an adopted pool. */
  createdByStowage: boolean;
  createdAt: string;
}

export interface PoolStateFile {
  format: 1;
  writtenBy: string;
  writtenAt: string;
  pool: PoolInfo;
  /** The pool's transaction id after stowage's last committed change. */
  transactionId: number;
  /** Ids found taken by someone else ("File exists"): skipped, never reused. */
  foreignIds: number[];
  /**
   * No thin id below this is handed out again: ids are allocated upwards, so an id a stale or
   * copied state file may still name never comes back. Absent in state written before it.
   */
  nextThinId?: number;
  pending?: PendingChange;
  volumes: Record<string, VolumeEntry>;
  retained: RetainedEntry[];
}

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

export async function loadState(fs: FsPort, path: string): Promise<PoolStateFile | undefined> {
  let data: unknown;
  try {
    data = await readJsonFile(fs, path);
  } catch (err) {
    throw corrupt(path, `cannot be read (${(err as Error).message})`);
  }
  if (data === undefined) return undefined;
  const state = data as Partial<PoolStateFile>;
  if (state.format !== 1 || typeof state.pool?.name !== 'string' || !Number.isInteger(state.transactionId)
    || typeof state.volumes !== 'object' || state.volumes === null || !Array.isArray(state.retained)
    || !Array.isArray(state.foreignIds)) {
    throw corrupt(path, 'is not in the expected format');
  }
  const optionalInt = (v: unknown) => v === undefined || Number.isSafeInteger(v);
  if (!optionalInt(state.nextThinId)) throw corrupt(path, 'has a malformed nextThinId');
  for (const [name, entry] of Object.entries(state.volumes)) {
    if (entry?.record?.name !== name || !Number.isInteger(entry.thinId) || !Number.isInteger(entry.sectors)
      || !Array.isArray(entry.snapshots) || !optionalInt(entry.createdInTx)
      || !entry.snapshots.every((s) => Number.isInteger(s?.thinId) && optionalInt(s.createdInTx))) {
      throw corrupt(path, `has a malformed entry for volume ${name}`);
    }
  }
  for (const retained of state.retained) {
    if (!Number.isInteger(retained?.thinId) || typeof retained.path !== 'string' || !optionalInt(retained.createdInTx)
      || !Array.isArray(retained.snapshots)) {
      throw corrupt(path, 'has a malformed retained entry');
    }
  }
  const pending = state.pending;
  if (pending !== undefined && (!Number.isInteger(pending?.thinId) || !['create', 'delete'].includes(pending.op)
    || ![pending.claimTx, pending.doneTx, pending.createdInTx, pending.fromTx, pending.toTx].every(optionalInt))) {
    throw corrupt(path, 'has a malformed pending change');
  }
  return state as PoolStateFile;
}

export async function saveState(fs: FsPort, path: string, state: PoolStateFile, nodeId: string): Promise<void> {
  state.writtenBy = nodeId;
  state.writtenAt = new Date().toISOString();
  try {
    await writeFileAtomic(fs, path, JSON.stringify(state, null, 1));
  } catch (err) {
    throw new StowageError(ErrorCodes.INTERNAL, `cannot save devicemapper pool state to ${path}: ${(err as Error).message}`,
      { cause: err });
  }
}
