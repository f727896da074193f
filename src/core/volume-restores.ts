import type { Backend } from './backend.js';
import type { KeyedMutex } from './keyed-mutex.js';
import type { Logger } from './logger.js';
import type { MountTable } from './mount-table.js';
import { RESTORE_MOUNT_PREFIX, type RestoreJournal } from './backup/restore-journal.js';
import { restoreVolume, type RestoreHost } from './backup/restore-volume.js';
import type { ProgressOptions } from './backup/service-contract.js';
import type { CreateResult } from './volume-types.js';

/** What restores need of the volume manager: its ordinary operations, so every check applies. */
export interface RestoreOps extends Omit<RestoreHost, 'journal' | 'log'> {
  backend: Backend;
  locks: KeyedMutex;
  mounts: MountTable;
  log: Logger;
  journal?: RestoreJournal;
  /** Drops mount records (whole ids) of a volume; the caller holds its lock. */
  dropMounts(name: string, ids: string[], why: string): Promise<void>;
}

/** Creates volumes by restoring a backup into them, and cleans up after a restore a killed daemon left. */
export class VolumeRestores {
  private readonly host: RestoreHost;
  /** Restores running per volume name (a second one of a name fails on the existing volume). */
  private readonly running = new Map<string, number>();

  constructor(private readonly ops: RestoreOps) {
    const { journal } = ops;
    this.host = {
      create: (name, options) => ops.create(name, options),
      mount: (name, id) => ops.mount(name, id),
      unmount: (name, id) => ops.unmount(name, id),
      remove: (name, request) => ops.remove(name, request),
      log: () => ops.log,
      blocks: () => ops.blocks?.(),
      journal: {
        begin: async (name, url) => journal?.begin(name, url),
        end: async (name) => journal?.end(name),
      },
    };
  }

  /** See backup/restore-volume.ts. */
  async restore(name: string, url: string, options: Record<string, unknown>, progress?: ProgressOptions): Promise<CreateResult> {
    this.running.set(name, (this.running.get(name) ?? 0) + 1);
    try {
      return await restoreVolume(this.host, name, url, options, progress);
    } finally {
      const left = (this.running.get(name) ?? 1) - 1;
      if (left > 0) this.running.set(name, left);
      else this.running.delete(name);
    }
  }

  /**
   * Whether a restore of this name runs in this process: its volume is listed from the moment
   * it exists, but holds partial data until the restore ends, so nothing else may mount it.
   */
  isRestoring(name: string): boolean {
    return this.running.has(name);
  }

  /** At start: every restore the journal says was running when the daemon died leaves no volume. */
  async recover(): Promise<void> {
    await this.ops.journal?.recover((name) => this.removeInterrupted(name), this.ops.log);
  }

  /** A restore a killed daemon left unfinished: its mount records go, then the volume (see RestoreJournal). */
  private async removeInterrupted(name: string): Promise<void> {
    const { locks, mounts, backend } = this.ops;
    await locks.run(name, async () => {
      const ids = Object.keys(mounts.ids(name)).filter((id) => id.startsWith(RESTORE_MOUNT_PREFIX));
      if (ids.length > 0) await this.ops.dropMounts(name, ids, 'its restore was interrupted');
    });
    if (await backend.get(name)) await this.ops.remove(name, { retain: false });
  }
}
