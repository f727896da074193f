import { join } from 'node:path';
import { messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import type { CheckedDirs } from '../../core/safe-path.js';
import type { Intent, IntentCalls, Journal } from './journal.js';
import type { VolumeRegistry } from './registry.js';
import { dataPathOf, dataStateAt, type StoreLayout } from './store-layout.js';

/** What intent recovery works on: the vfs backend's own store, registry and journal. */
export interface IntentRecoveryDeps {
  fs: FsPort;
  log: Logger;
  nodeId: string;
  journal: Journal;
  registry: VolumeRegistry;
  layout: StoreLayout;
  /** `vfs.path`: the store, holding one data directory per volume. */
  storePath: string;
  /** Read at each use: the store's device changes when its filesystem is mounted again. */
  dirs: CheckedDirs;
  /** Deletes in the background what stowage moved to `deleting/`. */
  purge: (path: string) => void;
}

/**
 * Crash recovery for the vfs backend's two multi-step operations, create and remove: reads the
 * intent record (see journal.ts) an interrupted one left, and rolls the create back or finishes
 * the remove. Runs at start for this node's own intents, and before each create or remove of a
 * name for any node's.
 */
export class IntentRecovery {
  constructor(private readonly deps: IntentRecoveryDeps) {}

  /** Undoes a create that did not reach its registry entry: only an empty directory it made goes. */
  async rollBackCreate(name: string, madeDir: boolean): Promise<void> {
    const { fs, registry, storePath, dirs } = this.deps;
    if (!madeDir || await registry.get(name)) return;
    const dataDir = join(storePath, name);
    const state = await dataStateAt(fs, dataDir, name, dirs.device).catch(() => 'data' as const);
    if (state === 'empty') await fs.rmdir(dataDir).catch(() => undefined);
  }

  /**
   * Finishes or rolls back what an interrupted create or remove of `name` left behind; `journal`
   * is the journal directory as the caller's operation opened it.
   */
  async recover(name: string, journal: IntentCalls = this.deps.journal): Promise<void> {
    const { log } = this.deps;
    const intent = await journal.read(name);
    if (!intent) return;
    if (intent === 'torn') {
      log.warn(`discarding an unreadable intent record for volume ${name}`);
    } else {
      await this.replay(intent);
    }
    await journal.clear(name);
  }

  private async replay(intent: Intent): Promise<void> {
    const { fs, log, registry, layout, storePath, purge } = this.deps;
    const { name } = intent;
    if (intent.op === 'create') {
      const done = await registry.get(name);
      if (!done) log.warn(`rolling back the interrupted create of volume ${name}`);
      await this.rollBackCreate(name, intent.makesDir);
      return;
    }
    const entry = await registry.get(name);
    const target = join(layout.meta, intent.target);
    const moved = await fs.lstat(target).then(() => true, () => false);
    if (entry && entry.record.createdAt === intent.createdAt && entry.record.createdBy === intent.createdBy) {
      const dataLeft = await fs.lstat(dataPathOf(storePath, entry)).then(() => true, () => false);
      if (moved || !dataLeft) {
        log.warn(`finishing the interrupted remove of volume ${name}`);
        await registry.delete(name);
      }
    }
    // The crash may have come between the unlink and the new epoch other nodes' Lists rely on.
    await registry.bumpEpoch();
    if (moved && intent.target.startsWith('deleting/')) purge(target);
  }

  /** At start: recovers this node's interrupted operations, and any whose intent record is unreadable. */
  async recoverOwnIntents(): Promise<void> {
    const { journal, log, nodeId } = this.deps;
    for (const name of await journal.names()) {
      try {
        const intent = await journal.read(name);
        // Another node's intent may be an operation in progress, and so may an unreadable one
        // written moments ago (see Journal.record); a create or remove of the name settles both.
        const mine = intent !== 'torn' && intent?.nodeId === nodeId;
        if (mine || (intent === 'torn' && await journal.settled(name, Date.now()))) await this.recover(name);
      } catch (err) {
        log.error(`could not recover the interrupted operation on volume ${name}: ${messageOf(err)}`);
      }
    }
  }
}
