import { join } from 'node:path';
import { z } from 'zod';
import { isTempName, readJsonFile, writeFileAtomic } from '../atomic-file.js';
import { describeCause, errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import type { Logger } from '../logger.js';
import { isValidVolumeName } from '../names.js';

const MarkerSchema = z.object({
  volume: z.string(),
  url: z.string(),
  startedAt: z.string(),
  /**
   * Which volume of that name the restore created (incarnationOf its record): a volume of the
   * same name made later is another one. Missing in markers of versions before it was written.
   */
  incarnation: z.string().optional(),
});
export type RestoreMarker = z.infer<typeof MarkerSchema>;

/** What recovery needs of the volume manager, for one marker's volume. */
export interface RecoveryOps {
  /** The incarnation of the volume of that name now, undefined when there is none. */
  incarnation(volume: string): Promise<string | undefined>;
  /** Removes the half-restored volume, which has the marker's incarnation. */
  remove(volume: string): Promise<void>;
}

/**
 * Restores in progress on this node, one marker file each under `<root>/restoring/` (mode 0700):
 * written under the name's locks right before the restore's new volume is made, naming the
 * incarnation the create gives it (so it never names a volume that was there already, and a
 * daemon killed at any step after the marker finds it at its next start); cleared once the
 * restore finished, or once its volume was removed (by the restore's own clean-up or any later
 * remove of the name). A marker whose volume never came to be is dropped at the next start.
 *
 * A marker that stays while the daemon runs is a failed restore whose clean-up failed too (a full
 * disk): its volume holds partial data, and mounts of it are refused (see `partial`). A marker
 * found when the daemon starts is also a restore the daemon did not live to finish (kill -9, power
 * loss). Either way the volume is removed at start, but only while it is still the volume the
 * restore created: a volume of that name made since is someone's data and is never touched.
 *
 * This process is the only writer of the directory (the root lock), so the markers on disk are
 * mirrored in memory from the start's recovery on: mounts and Get ask the mirror, not the disk.
 */
export class RestoreJournal {
  private readonly dir: string;
  /** The markers on disk, by volume name (see the class comment). */
  private readonly markers = new Map<string, RestoreMarker>();

  constructor(private readonly fs: FsPort, root: string) {
    this.dir = join(root, 'restoring');
  }

  private file(volume: string): string {
    // Volume names are single safe path components (validateVolumeName ran before any create).
    return join(this.dir, `${volume}.json`);
  }

  /** Marks the restore of `volume`, whose new volume has `incarnation` (see incarnationOf). */
  async begin(volume: string, url: string, incarnation: string): Promise<void> {
    await this.fs.mkdir(this.dir, { recursive: true, mode: 0o700 });
    const marker: RestoreMarker = { volume, url, startedAt: new Date().toISOString(), incarnation };
    await writeFileAtomic(this.fs, this.file(volume), JSON.stringify(marker));
    this.markers.set(volume, marker);
  }

  /** Clears the marker of `volume`, if there is one (with `incarnation`, only that restore's). */
  async end(volume: string, incarnation?: string): Promise<void> {
    if (incarnation !== undefined && this.markers.get(volume)?.incarnation !== incarnation) return;
    await this.fs.unlink(this.file(volume)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    this.markers.delete(volume);
  }

  /**
   * The volume of that name was removed: its marker goes, if it has one. Asks the mirror first,
   * so that a remove of a volume no restore marked makes no file system call.
   */
  async removed(volume: string): Promise<void> {
    if (this.markers.has(volume)) await this.end(volume);
  }

  /**
   * The marker of a restore of this very volume (of that incarnation) that is on disk: one that
   * runs, or one that failed and whose volume could not be removed. Undefined for any other.
   */
  partial(volume: string, incarnation: string): RestoreMarker | undefined {
    const marker = this.markers.get(volume);
    return marker?.incarnation === incarnation ? marker : undefined;
  }

  /**
   * The markers left, skipping (and naming in `log`) any that cannot be read, and removing the
   * temporary files of markers being written when a previous run was killed. Only at start: this
   * process is the directory's only writer, and writes no marker before recovery ends.
   */
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
      if (isTempName(name)) {
        // A marker a killed daemon was writing: its restore had not begun (the create comes after).
        await this.fs.unlink(join(this.dir, name)).catch((err: unknown) => log.warn(`restore journal: could not remove ${join(this.dir, name)}: ${describeCause(err)}`));
        continue;
      }
      if (!name.endsWith('.json')) continue;
      const parsed = MarkerSchema.safeParse(await readJsonFile(this.fs, join(this.dir, name)).catch(() => undefined));
      if (parsed.success && isValidVolumeName(parsed.data.volume) && `${parsed.data.volume}.json` === name) markers.push(parsed.data);
      else log.warn(`restore journal: skipped unreadable marker ${join(this.dir, name)}`);
    }
    return markers;
  }

  /**
   * At start, for every marker a previous run left: removes, through `ops`, the volume its
   * restore created if that volume is still there, then the marker. A volume of that name that is
   * another incarnation (made after the restore's volume was removed) is left alone, and so is
   * a volume named by a marker without an incarnation (see below). A removal that fails keeps the
   * marker, so mounts of that volume stay refused and the next start tries again.
   */
  async recover(ops: RecoveryOps, log: Logger): Promise<void> {
    await this.tighten();
    this.markers.clear();
    for (const marker of await this.pending(log)) {
      const what = `its restore from ${marker.url}, started ${marker.startedAt},`;
      try {
        const current = await ops.incarnation(marker.volume);
        if (marker.incarnation === undefined) {
          // A marker of an earlier version names no incarnation, so it cannot tell the restore's
          // volume from one made later under that name (the user removed the half-restored volume
          // and made a new one). createdAt cannot tell either: it is read from the shared store's
          // clock, startedAt from this node's, and the two may disagree by more than the gap
          // between the two creates. Removing is irreversible, leaving a volume is not: it stays.
          if (current !== undefined) {
            log.error(`volume ${marker.volume} may hold partial data: ${what} did not finish (recorded by an earlier version, ` +
              `which did not note which volume of that name it made); it was left as it is: check its data, and remove it if it is the half-restored one`);
          } else {
            log.info(`restore journal: dropped the marker of ${marker.volume} (${what} did not finish; the volume is gone)`);
          }
          await this.end(marker.volume);
          continue;
        }
        if (current === marker.incarnation) {
          await ops.remove(marker.volume);
          await this.end(marker.volume);
          log.warn(`removed volume ${marker.volume}: ${what} was interrupted or failed (the daemon stopped during it, or removing its volume failed)`);
        } else {
          await this.end(marker.volume);
          log.info(`restore journal: dropped the marker of ${marker.volume} (${what} did not finish, and its volume is gone` +
            `${current === undefined ? '' : `; the volume ${marker.volume} now there was made later (${current}) and is left alone`})`);
        }
      } catch (err) {
        this.markers.set(marker.volume, marker);
        log.error(`volume ${marker.volume} may be left half-restored: ${what} did not finish, and cleaning up after it failed: ` +
          `${describeCause(err)}; mounts of it are refused while it holds partial data: remove it (the next start tries again)`);
      }
    }
  }

  /** A directory an earlier version made with the default mode is made root's only (README, Permissions). */
  private async tighten(): Promise<void> {
    const mode = await this.fs.stat(this.dir).then((s) => s.mode, (err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (mode !== undefined && (mode & 0o777) !== 0o700) await this.fs.chmod(this.dir, 0o700);
  }
}
