import { chmod, lchown, readdir, rmdir } from 'node:fs/promises';
import { join } from 'node:path';
import { openTarget } from '../../backup-targets/open-target.js';
import { ErrorCodes, StowageError, describeCause, isStowageError, messageOf } from '../errors.js';
import type { Logger } from '../logger.js';
import { randomHex } from '../random-hex.js';
import type { CreateResult } from '../volume-types.js';
import { parseOneBackupUrl } from './backup-url.js';
import { isBlockBackup } from './block-format.js';
import { restoreBlockVolume } from './block-restore.js';
import type { BlockSupport } from './block-support.js';
import { RESTORE_MOUNT_PREFIX } from '../mount-kinds.js';
import { Repository, restoreTree } from './index.js';
import { RESTORE_OPTION, type ProgressOptions } from './service-contract.js';

/** What a restore needs of the volume manager: the ordinary operations, so every check applies. */
export interface RestoreHost {
  /**
   * Creates the volume; `mark` runs under the name's locks right before a new volume is made,
   * with the incarnation it will have (the restore marks it there), so a daemon killed at any
   * step after finds the mark at its next start; when the create fails, the marks are cleared.
   */
  create(name: string, options: Record<string, unknown>, mark?: (incarnation: string) => Promise<void>): Promise<CreateResult>;
  /** `incarnation`: only that volume of the name, the one this restore made. */
  mount(name: string, mountId: string, incarnation?: string): Promise<string>;
  unmount(name: string, mountId: string): Promise<void>;
  /** `incarnation`: only that volume of the name; another one is left alone (VOLUME_NOT_FOUND). */
  remove(name: string, request: { retain?: boolean; incarnation?: string }): Promise<unknown>;
  log(): Logger;
  /** The backend's block access, for block backups (devicemapper); undefined elsewhere. */
  blocks?: () => BlockSupport | undefined;
  /**
   * Marks the restore in progress (naming the new volume's incarnation), so that a daemon killed
   * during it removes that volume, and no other of its name, at its next start, and so that no
   * node mounts it meanwhile; `end` clears the marks of that incarnation once the restore
   * finished (or its volume is gone), and leaves those of any other restore of the name.
   */
  journal?: RestoreMarks;
}

/** See RestoreHost.journal. */
export interface RestoreMarks {
  begin(name: string, url: string, incarnation: string): Promise<void>;
  end(name: string, incarnation: string): Promise<void>;
}

/**
 * Splits `-o backup=URL` off create options: undefined when the create is an ordinary one.
 * Leaves anything that is not a plain object to the option parser, which reports it.
 */
export function takeRestoreOption(raw: unknown): { url: string; options: Record<string, unknown> } | undefined {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !Object.hasOwn(raw, RESTORE_OPTION)) return undefined;
  const { [RESTORE_OPTION]: url, ...options } = raw as Record<string, unknown>;
  if (typeof url !== 'string') throw new StowageError(ErrorCodes.INVALID_OPTION, `option ${RESTORE_OPTION} must be a backup URL`);
  return { url, options };
}

/**
 * Creates volume `name` and restores the backup at `url` into it: create, mount under an
 * internal mount id (so cluster protection sees the volume in use and no remove runs under the
 * restore), restore, unmount. On any failure the new volume is removed again, never retained,
 * and the error says why (the missing or corrupt chunk, by name).
 */
export async function restoreVolume(host: RestoreHost, name: string, url: string, options: Record<string, unknown>, progress: ProgressOptions = {}): Promise<CreateResult> {
  const source = parseOneBackupUrl(url);
  if ('adopt' in options) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `options ${RESTORE_OPTION} and adopt exclude each other: a restore makes a new, empty volume`, { volume: name });
  }
  // Before anything is made: a backup that is not there fails the create and changes nothing.
  const repo = await Repository.open(openTarget(source.target, { signal: progress.signal }));
  const record = await repo.readBackupRecord(source.volume, source.backup);
  if (isBlockBackup(record)) return restoreBlockVolume(host, name, url, repo, record, options, progress);
  let journaled: string | undefined;
  const created = await host.create(name, options, async (incarnation) => {
    journaled = incarnation;
    await host.journal?.begin(name, url, incarnation);
  });
  if (!created.created) {
    throw new StowageError(ErrorCodes.VOLUME_EXISTS,
      `volume ${name} already exists; a restore makes a new volume: choose another name, or remove ${name} first`, { volume: name });
  }
  const mountId = `${RESTORE_MOUNT_PREFIX}${randomHex(8)}`;
  let mounted = false;
  try {
    progress.signal?.throwIfAborted();
    const path = await host.mount(name, mountId, journaled);
    mounted = true;
    await clearFreshFilesystem(path, name);
    const totals = { totalFiles: record.stats.files, totalBytes: record.stats.bytes };
    progress.onProgress?.({ phase: 'restore', files: 0, bytes: 0, ...totals });
    const warnings = new RestoreWarnings(host.log(), name);
    // What was written, for the log: the record's counts are another machine's word.
    const restored = await restoreTree(repo, source.volume, source.backup, path, {
      onWarning: warnings.add,
      onProgress: (p) => {
        // Aborting fails the restore here; the volume is then removed like any failed restore.
        progress.signal?.throwIfAborted();
        progress.onProgress?.({ phase: 'restore', files: p.files, bytes: p.bytes, ...totals });
      },
    });
    await applyGivenOwnership(path, created.volume.options);
    mounted = false;
    await host.unmount(name, mountId);
    if (journaled !== undefined) await host.journal?.end(name, journaled);
    host.log().info(`restored volume ${name} from ${url} (${restored.files} files, ${restored.bytes} bytes)`);
    return warnings.on(created);
  } catch (err) {
    return failedRestore(host, name, url, err, journaled, async () => {
      if (mounted) await host.unmount(name, mountId);
    });
  }
}

/** WARNINGS_KEPT at most in a restore's answer: the log has them all. */
const WARNINGS_KEPT = 20;

/** What a restore could not bring back as the backup has it: logged, and kept for its answer. */
export class RestoreWarnings {
  private readonly kept: string[] = [];
  private more = 0;

  constructor(private readonly log: Logger, private readonly volume: string) {}

  readonly add = (message: string): void => {
    this.log.warn(`restoring volume ${this.volume}: ${message}`);
    if (this.kept.length < WARNINGS_KEPT) this.kept.push(message);
    else this.more += 1;
  };

  /** The restore's answer, with the warnings when there were any. */
  on(result: CreateResult): CreateResult {
    if (this.kept.length === 0) return result;
    return { ...result, warnings: this.more > 0 ? [...this.kept, `... and ${this.more} more (in the log)`] : [...this.kept] };
  }
}

/**
 * `uid`, `gid` and `mode` given with the restore apply to the volume's root as on any new
 * volume: the user asked for them, over what the backup's root had.
 */
async function applyGivenOwnership(path: string, options: { uid?: number; gid?: number; mode?: number }): Promise<void> {
  if (options.uid !== undefined || options.gid !== undefined) await lchown(path, options.uid ?? -1, options.gid ?? -1);
  if (options.mode !== undefined) await chmod(path, options.mode);
}

/**
 * A new filesystem may hold its own entries (ext4's empty lost+found); a restore writes into an
 * empty directory only, so an empty lost+found goes (the backup brings its own if it had one).
 */
async function clearFreshFilesystem(path: string, name: string): Promise<void> {
  const names = await readdir(path);
  if (names.length === 1 && names[0] === 'lost+found') {
    const inside = await readdir(join(path, 'lost+found'));
    if (inside.length === 0) await rmdir(join(path, 'lost+found'));
  }
  if ((await readdir(path)).length > 0) {
    throw new StowageError(ErrorCodes.DATA_CONFLICT, `the new volume ${name} is not empty (${names.slice(0, 5).join(', ')}); a restore writes into an empty volume only`, { volume: name });
  }
}

/**
 * After a restore failed: the new volume is removed (after `release`, e.g. its unmount), then its
 * journal marker, only once the volume is gone (the remove clears it too). A marker left keeps
 * mounts of the half-restored volume refused until it is removed, and makes the next start try
 * the removal again; the error says whether the removal worked.
 */
export async function failedRestore(host: RestoreHost, name: string, url: string, err: unknown, journaled: string | undefined,
  release: () => Promise<void> = async () => {}): Promise<never> {
  let gone = false;
  const undo = await (async () => {
    await release();
    // Only the volume this restore made: one of the name made since (after a forced remove
    // elsewhere) is someone else's.
    await host.remove(name, { retain: false, incarnation: journaled }).catch((e: unknown) => {
      if (!isStowageError(e, ErrorCodes.VOLUME_NOT_FOUND)) throw e;
      gone = true;
    });
    if (journaled !== undefined) await host.journal?.end(name, journaled);
  })().then(() => undefined, (e: unknown) => e);
  if (undo !== undefined) host.log().error(`could not remove volume ${name} after its failed restore: ${describeCause(undo)}`);
  const code = isStowageError(err) ? err.code : ErrorCodes.INTERNAL;
  throw new StowageError(code,
    `restoring volume ${name} from ${url} failed: ${messageOf(err)}; ` +
    (undo === undefined ? (gone ? 'the volume it made is gone already (removed meanwhile)' : 'the volume was removed again')
      : `removing the half-restored volume failed too (${messageOf(undo)}): it holds partial data and cannot be mounted`),
    { volume: name, cause: err, remedies: undo === undefined ? [] : [{ action: 'remove-volume', volume: name }] });
}
