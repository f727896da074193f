import { join } from 'node:path';
import { z } from 'zod';
import { isTempName, readJsonFile, writeFileAtomic } from '../atomic-file.js';
import { describeCause, errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import type { Logger } from '../logger.js';
import { isValidVolumeName } from '../names.js';

/** The mount id a restore mounts its new volume under; a record with it outlives a killed daemon. */
export const RESTORE_MOUNT_PREFIX = 'stowage-restore-';

const MarkerSchema = z.object({ volume: z.string(), url: z.string(), startedAt: z.string() });
export type RestoreMarker = z.infer<typeof MarkerSchema>;

/**
 * Restores in progress on this node, one marker file each under `<root>/restoring/`: written
 * once the restore's new volume exists (never before, so a marker never names a volume that was
 * there already), cleared once the restore finished or its volume was removed again. A marker
 * still there when the daemon starts is a restore the daemon did not live to finish (kill -9,
 * power loss): its half-restored volume is removed then, so no volume ever shows part of a backup.
 */
export class RestoreJournal {
  private readonly dir: string;

  constructor(private readonly fs: FsPort, root: string) {
    this.dir = join(root, 'restoring');
  }

  private file(volume: string): string {
    // Volume names are single safe path components (validateVolumeName ran before any create).
    return join(this.dir, `${volume}.json`);
  }

  async begin(volume: string, url: string): Promise<void> {
    await this.fs.mkdir(this.dir, { recursive: true });
    const marker: RestoreMarker = { volume, url, startedAt: new Date().toISOString() };
    await writeFileAtomic(this.fs, this.file(volume), JSON.stringify(marker));
  }

  async end(volume: string): Promise<void> {
    await this.fs.unlink(this.file(volume)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  /** The markers left, skipping (and naming in `log`) any that cannot be read. */
  async pending(log: Logger): Promise<RestoreMarker[]> {
    let names: string[];
    try {
      names = await this.fs.readdir(this.dir);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return [];
      throw err;
    }
    const markers: RestoreMarker[] = [];
    for (const name of names.sort()) {
      if (isTempName(name) || !name.endsWith('.json')) continue;
      const parsed = MarkerSchema.safeParse(await readJsonFile(this.fs, join(this.dir, name)).catch(() => undefined));
      if (parsed.success && isValidVolumeName(parsed.data.volume) && `${parsed.data.volume}.json` === name) markers.push(parsed.data);
      else log.warn(`restore journal: skipped unreadable marker ${join(this.dir, name)}`);
    }
    return markers;
  }

  /**
   * Removes, through `removeVolume`, the volume of every restore a previous run left unfinished,
   * then its marker. A removal that fails keeps the marker, so the next start tries again.
   */
  async recover(removeVolume: (volume: string) => Promise<void>, log: Logger): Promise<void> {
    for (const marker of await this.pending(log)) {
      try {
        await removeVolume(marker.volume);
        await this.end(marker.volume);
        log.warn(`removed volume ${marker.volume}: its restore from ${marker.url}, started ${marker.startedAt}, was interrupted (the daemon stopped during it)`);
      } catch (err) {
        log.error(`volume ${marker.volume} is left half-restored from ${marker.url} (its restore was interrupted) and removing it failed: ` +
          `${describeCause(err)}; remove it by hand before using it`);
      }
    }
  }
}
