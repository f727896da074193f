import { join } from 'node:path';
import { replacedStoreMessage, storeVerdict, type StoreFound } from '../../../backends/vfs/store-at-start.js';
import {
  localSharedStoreProblem, newStoreRisk, nodeStateSchema, readRecord, storeLayout, storeMarkerSchema, unmountedFstabProblem,
} from '../../../backends/vfs/store-layout.js';
import { errnoCode, messageOf } from '../../../core/errors.js';
import { fail, ok, skip, warn, type CheckResult, type DoctorContext } from './check.js';
import type { StorePlan } from './store-plan.js';

/** Doctor run without the daemon's rights sees EACCES where the daemon would read the file. */
const orAsRoot = (err: unknown, advice: string): string =>
  errnoCode(err) === 'EACCES' || errnoCode(err) === 'EPERM' ? 'run doctor as root, as the daemon runs' : advice;

export interface StoreState {
  result: CheckResult;
  /** Why the checks that read the store (sharing, space) have no store to look at, when they have none. */
  absent?: string;
}

/**
 * vfs: the store at `vfs.path` against this node's memory of it (`<root>/vfs-store.json`), judged
 * by the daemon's own start-up decision (store-at-start.ts): fail where it refuses to start, warn
 * where it warns. An empty mount point reads as a directory without a store, not as a store.
 */
export async function storeCheck(ctx: DoctorContext, plan: StorePlan): Promise<StoreState | undefined> {
  if (plan.backend !== 'vfs') return undefined;
  const { storePath: path, shared } = plan;
  const nodeStatePath = join(ctx.settings.root, 'vfs-store.json');
  const absent = `no stowage store at ${path} (see the store check)`;
  const isDir = await ctx.fs.stat(path).then((s) => s.isDirectory(), () => false);
  let remembered: StoreFound['remembered'];
  try {
    remembered = await readRecord(ctx.fs, nodeStateSchema, nodeStatePath, 'node state');
  } catch (err) {
    return {
      result: fail('store', `this node's memory of its store cannot be read: ${messageOf(err)}`,
        orAsRoot(err, `the daemon refuses to start so: remove ${nodeStatePath} (the daemon writes it again)`)),
      absent: isDir ? undefined : absent,
    };
  }
  let store: StoreFound['store'] = 'no directory';
  if (isDir) {
    const meta = storeLayout(path).meta;
    const metaStat = await ctx.fs.lstat(meta).catch(() => undefined);
    if (metaStat && !metaStat.isDirectory()) {
      return { result: fail('store', `${meta} is not a directory (a symbolic link or a file)`, 'the daemon refuses to start on it: move it away') };
    }
    try {
      const marker = await readRecord(ctx.fs, storeMarkerSchema, join(meta, 'store.json'), 'store marker');
      store = marker ? { storeId: marker.storeId } : 'no marker';
    } catch (err) {
      return { result: fail('store', messageOf(err), orAsRoot(err, 'the daemon refuses to start on it: check what is mounted there, or restore the marker')) };
    }
  }
  const verdict = storeVerdict({ path, shared, store, remembered, nodeStatePath });
  // The daemon that runs started on some store; a different one there now (or none) stops its volume operations.
  const running = ctx.daemon && ctx.daemon.info['vfs.path'] === path ? ctx.daemon.info.storeId : undefined;
  const nowThere = typeof store === 'object' ? store.storeId : undefined;
  if (verdict.kind === 'refuse') {
    const risk = await newStoreRisk(ctx.fs, path);
    const fstab = risk.unmounted !== undefined ? `; it lies under ${risk.unmounted}, a mount point in /etc/fstab that is not mounted` : '';
    const daemon = ctx.daemon ? 'the running daemon refuses every volume operation, and would not start again' : 'the daemon refuses to start';
    return { result: fail('store', `${verdict.problem}${fstab} (${daemon})`, verdict.remedy), absent };
  }
  if (typeof running === 'string' && running !== '' && running !== nowThere) {
    return {
      result: fail('store', `the running daemon started on stowage store ${running}, but ${path} now holds ` +
        `${nowThere ? `store ${nowThere}` : 'no stowage store'}: it refuses every volume operation`,
      'check what is mounted there and mount the store again, then restart stowage'),
      absent: nowThere ? undefined : absent,
    };
  }
  if (verdict.kind === 'open') {
    if (verdict.replaces) {
      return { result: warn('store', `${replacedStoreMessage(path, verdict.storeId, verdict.replaces)} (the daemon starts on it, and logs this)`,
        `if ${path} should hold store ${verdict.replaces}, check what is mounted there; if the change is meant, nothing to do: ` +
        `the daemon remembers store ${verdict.storeId} once it starts`) };
    }
    const before = remembered?.storeId === verdict.storeId && remembered.path === path ? ', the one this node used before'
      : remembered?.path && remembered.path !== path ? ` (this node used vfs.path ${remembered.path} before)` : '';
    return { result: ok('store', `stowage store ${verdict.storeId} at ${path}${before}`) };
  }
  return newStore(ctx, path, verdict.makesPath, verdict.checkShared, absent);
}

/** No store at `path` yet: the daemon makes one, unless the mount table says the store's filesystem is missing. */
async function newStore(ctx: DoctorContext, path: string, makesPath: boolean, declaredShared: boolean, absent: string): Promise<StoreState> {
  if (makesPath && await ctx.fs.lstat(path).then(() => true, () => false)) {
    return { result: fail('store', `vfs.path ${path} is not a directory (the daemon refuses to start)`, 'give vfs.path a directory'), absent };
  }
  const risk = await newStoreRisk(ctx.fs, path);
  const where = makesPath ? `vfs.path ${path} does not exist yet` : `vfs.path ${path} holds no stowage store yet`;
  if (risk.unmounted !== undefined) {
    if (declaredShared) {
      return { result: fail('store', `${unmountedFstabProblem(path, risk.unmounted)} (the daemon refuses to start)`, `mount it (mount ${risk.unmounted}), then start stowage`), absent };
    }
    return {
      result: warn('store', `${where} and lies under ${risk.unmounted}, a mount point in /etc/fstab that is not mounted: ` +
        'the daemon makes a new store there, on the filesystem below it', `mount ${risk.unmounted} before starting stowage ` +
        '(declared vfs.shared=true, the daemon refuses to start without it)'),
      absent,
    };
  }
  if (declaredShared && risk.localDir !== undefined) {
    return { result: warn('store', localSharedStoreProblem(path, risk.localDir), `if a shared filesystem belongs there, mount it before starting stowage`) };
  }
  return { result: skip('store', `${where}: the daemon makes ${makesPath ? 'it, with a new store,' : 'a new store there'} at start`), absent: makesPath ? absent : undefined };
}
