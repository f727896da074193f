import { ErrorCodes, StowageError } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { CheckedDirs } from '../../core/safe-path.js';
import { readRecord, storeMarkerSchema } from './store-layout.js';

/**
 * Whether `vfs.path` still holds the store this daemon started on, asked before each operation.
 * A missing marker means the filesystem is gone (unmounted); a new device number means it was
 * mounted again (a GlusterFS client restarted, NFS remounted); a marker that is another file
 * than at the start means the store was deleted and made again, or put back from a copy. In the
 * last two cases the marker is read: the same store goes on, once its directories are checked
 * afresh; another store is refused, since this daemon's records of mounts and volumes belong to
 * the one it started on.
 */
export class StorePresence {
  /** Set by `started`. */
  storeId = '';
  private markerIno = -1;

  constructor(private readonly fs: FsPort, private readonly path: string, private readonly markerPath: string,
    private readonly dirs: CheckedDirs, private readonly checkAfresh: () => Promise<void>) {}

  /** Remembers the store init found or made, and which file its marker is. */
  async started(storeId: string): Promise<void> {
    this.storeId = storeId;
    this.markerIno = (await this.fs.lstat(this.markerPath)).ino;
  }

  async assert(volume?: string): Promise<void> {
    const marker = await this.fs.lstat(this.markerPath).catch(() => undefined);
    if (!marker?.isFile()) throw this.notVisible(volume);
    const { dev } = await this.fs.stat(this.path);
    if (dev !== this.dirs.device || marker.ino !== this.markerIno) await this.follow(dev, marker.ino, volume);
  }

  notVisible(volume?: string): StowageError {
    return new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `stowage store ${this.storeId} is not visible at ${this.path}; is the filesystem still mounted?`, { volume });
  }

  private async follow(dev: number, ino: number, volume?: string): Promise<void> {
    const marker = await readRecord(this.fs, storeMarkerSchema, this.markerPath, 'store marker');
    if (marker?.storeId !== this.storeId) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `${this.path} now holds ${marker ? `stowage store ${marker.storeId}` : 'no stowage store'}, not store ` +
        `${this.storeId} that this daemon started on; check what is mounted there, then restart stowage`, { volume });
    }
    this.dirs.setDevice(dev);
    await this.checkAfresh();
    this.markerIno = ino;
  }
}
