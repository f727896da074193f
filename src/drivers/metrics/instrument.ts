import { RESTORE_OPTION, type BackupService, type JobProgress, type ProgressOptions } from '../../core/backup/service-contract.js';
import { ErrorCodes, isStowageError } from '../../core/errors.js';
import { withLogContext, type LogFields, type Logger } from '../../core/logger.js';
import { isValidVolumeName } from '../../core/names.js';
import type { VolumeManager } from '../../core/volume-manager.js';
import type { StowageMetrics } from './metrics.js';

/** The VolumeManager's entry points and their `operation` label; the first argument of each is the volume. */
const MANAGER_OPERATIONS = {
  create: 'create',
  remove: 'remove',
  mount: 'mount',
  unmount: 'unmount',
  get: 'get',
  list: 'list',
  listBrief: 'list',
  createSnapshot: 'snapshot_create',
  deleteSnapshot: 'snapshot_delete',
  listSnapshots: 'snapshot_list',
  readLiveVolume: 'read_live',
  release: 'release',
  mountByHand: 'hand_mount',
  unmountByHand: 'hand_unmount',
} as const satisfies Partial<Record<keyof VolumeManager, string>>;

const BACKUP_OPERATIONS = {
  createBackup: 'backup_create',
  deleteBackup: 'backup_delete',
  verifyBackup: 'backup_verify',
  listBackups: 'backup_list',
  inspectBackup: 'backup_inspect',
} as const satisfies Partial<Record<keyof BackupService, string>>;

/**
 * Reads Docker repeats all the time and that log next to nothing: run without log fields, which
 * cost a Get about a fifth of its CPU in the core (5 of 24 µs, measured in-process). Their
 * failures are still logged with their fields.
 */
const QUIET_OPERATIONS = new Set(['get', 'list', 'snapshot_list', 'backup_list', 'backup_inspect']);

function codeOf(err: unknown): string {
  return isStowageError(err) ? err.code : ErrorCodes.INTERNAL;
}

/** A ProgressOptions argument that also tells `seen` each progress. */
function watchProgress(options: unknown, seen: (p: JobProgress) => void): ProgressOptions {
  const given = (typeof options === 'object' && options !== null ? options : {}) as ProgressOptions;
  return { ...given, onProgress: (p) => { seen(p); given.onProgress?.(p); } };
}

type Method = (...args: unknown[]) => Promise<unknown>;

/**
 * Replaces `target[method]` on the instance with one that runs it with `operation` and its
 * volume as log fields (every line logged meanwhile carries them), times it, and tells `done`.
 */
type Done = (seconds: number, args: unknown[], outcome: { value?: unknown; error?: unknown }, fields: LogFields) => void;

function wrap(target: object, method: string, operation: string | ((args: unknown[]) => string), done: Done,
  prepare?: (args: unknown[]) => unknown[]): void {
  const original = (target as Record<string, Method>)[method]!;
  Object.defineProperty(target, method, {
    configurable: true,
    writable: true,
    value: function instrumented(this: unknown, ...given: unknown[]): Promise<unknown> {
      const args = prepare ? prepare(given) : given;
      const fields: LogFields = { operation: typeof operation === 'string' ? operation : operation(args) };
      if (isValidVolumeName(args[0])) fields.volume = args[0];
      const started = performance.now();
      const elapsed = () => (performance.now() - started) / 1000;
      const run = QUIET_OPERATIONS.has(fields.operation as string) ? original.apply(target, args) : withLogContext(fields, () => original.apply(target, args));
      return run.then(
        (value) => { done(elapsed(), args, { value }, fields); return value; },
        (error: unknown) => { done(elapsed(), args, { error }, fields); throw error; },
      );
    },
  });
}

/**
 * Instruments the daemon's operations at their one entry point, the VolumeManager and the
 * BackupService, whatever the backend: log fields (`operation`, `volume`) for every line logged
 * during an operation, and, with `metrics`, its duration, its error code, and backup and restore
 * counts and bytes. Failures are logged at debug with their code (the shells report them).
 */
export function instrumentOperations(manager: VolumeManager, backups: BackupService | undefined, log: Logger, metrics?: StowageMetrics): void {
  const ended = (operation: string): Done => (seconds, _args, outcome, fields) => {
    const code = outcome.error === undefined ? undefined : codeOf(outcome.error);
    metrics?.observe(operation, seconds, code);
    if (code !== undefined) log.debug?.(`${operation} failed`, { ...fields, code, durationMs: Math.round(seconds * 1000) });
  };
  for (const [method, operation] of Object.entries(MANAGER_OPERATIONS)) {
    if (method !== 'create') wrap(manager, method, operation, ended(operation));
  }
  // A create with the backup option restores: counted as a restore, with the bytes it wrote.
  const restored = new WeakMap<unknown[], number>();
  const restoring = (args: unknown[]) => typeof args[1] === 'object' && args[1] !== null && Object.hasOwn(args[1], RESTORE_OPTION);
  wrap(manager, 'create', (args) => (restoring(args) ? 'restore' : 'create'), (seconds, args, outcome, fields) => {
    ended(restoring(args) ? 'restore' : 'create')(seconds, args, outcome, fields);
    if (restoring(args)) metrics?.restoreDone(outcome.error === undefined, restored.get(args) ?? 0);
  }, (args) => {
    if (!restoring(args)) return args;
    const prepared = [args[0], args[1]];
    prepared[2] = watchProgress(args[2], (p) => { restored.set(prepared, p.bytes); });
    return prepared;
  });
  if (!backups) return;
  for (const [method, operation] of Object.entries(BACKUP_OPERATIONS)) {
    if (method === 'createBackup') continue;
    wrap(backups, method, operation, ended(operation));
  }
  wrap(backups, 'createBackup', 'backup_create', (seconds, args, outcome, fields) => {
    ended('backup_create')(seconds, args, outcome, fields);
    const stats = (outcome.value as { stats?: { bytes: number; newStoredBytes: number } } | undefined)?.stats;
    metrics?.backupDone(outcome.error === undefined, stats?.bytes ?? 0, stats?.newStoredBytes ?? 0);
  });
}
