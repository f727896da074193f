import { randomBytes } from 'node:crypto';
import { constants } from 'node:fs';
import { link, lstat, mkdir, open, readdir, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { errnoCode, isStorageFull } from '../../core/errors.js';
import { randomHex } from '../../core/random-hex.js';

/** A dot-directory no key can name. */
const RESERVE_DIR = '.reserve';
/**
 * The names puts give their temporaries (`<randomHex(8)>-<pid>`), and the reserve its own: a
 * sweep unlinks nothing else, whoever put it there (a user's `.tmp` in a directory that became a
 * repository).
 */
export const TEMP_NAME = /^[0-9a-f]{16}-\d+$/;
const RESERVE_FILE = 'space';
/** Room for the few lock objects (a few hundred bytes, a block each) that deleting backups writes. */
export const RESERVE_BYTES = 1024 * 1024;

async function isRealDir(path: string): Promise<boolean> {
  return lstat(path).then((st) => st.isDirectory(), () => false);
}

/** Whether an error is the storage being full. */
export function isFull(err: unknown): boolean {
  return isStorageFull(err);
}

/**
 * Space a vfs repository holds back for the day its disk is full. Freeing space in a repository
 * means deleting backups, and a delete (like every repository operation) must first write a lock
 * object: on a full disk that write fails, and the only way out would be deleting files by hand.
 * So the repository keeps a file of RESERVE_BYTES (`.reserve/space`, random bytes so that a
 * compressing filesystem cannot shrink it) that is given up when a lock object finds no room, and
 * made again at the first write after space was freed. Data objects never spend it: a backup that
 * fills the disk fails as before, and the reserve is still there for the delete that follows.
 */
export class SpaceReserve {
  /**
   * Whether this process saw or made the reserve (`present`), or found no room to make it
   * (`no-room`: not tried again before objects are deleted), since it last gave it up or deleted.
   */
  private state: 'unknown' | 'present' | 'no-room' = 'unknown';

  constructor(private readonly root: string, private readonly durable: boolean) {}

  /** Makes the reserve if it is not there, when there is room; never fails the caller's write. */
  async keep(): Promise<void> {
    if (this.state !== 'unknown') return;
    // A repository whose root is not a real directory is refused by the store's own checks.
    if (!(await isRealDir(this.root))) return;
    const file = join(this.root, RESERVE_DIR, RESERVE_FILE);
    const reserveDir = await lstat(join(this.root, RESERVE_DIR)).catch(() => undefined);
    if (reserveDir && !reserveDir.isDirectory()) {
      this.state = 'no-room';
      return;
    }
    const known = reserveDir ? await lstat(file).catch(() => undefined) : undefined;
    if (known?.isFile() && known.size === RESERVE_BYTES) {
      this.state = 'present';
      return;
    }
    // Something else under the name (a planted symlink, a short file) is left alone: it is not
    // unlinked unless it is a file (spend), and a reserve is not made beside it.
    if (known) {
      this.state = 'no-room';
      return;
    }
    this.state = await this.make(file).then((made) => (made ? 'present' : 'no-room'), () => 'no-room');
  }

  /** Objects were deleted: there may be room for a reserve again. */
  spaceFreed(): void {
    this.state = 'unknown';
  }

  /** Gives the reserve up, so a lock object fits; false when there was none to give. */
  async spend(): Promise<boolean> {
    const file = join(this.root, RESERVE_DIR, RESERVE_FILE);
    this.state = 'unknown';
    // Never through a symlink planted for the root or `.reserve`: the unlink would land outside.
    if (!(await isRealDir(this.root)) || !(await isRealDir(join(this.root, RESERVE_DIR)))) return false;
    const known = await lstat(file).catch(() => undefined);
    if (!known?.isFile()) return false;
    return unlink(file).then(() => true, (err: unknown) => errnoCode(err) === 'ENOENT' ? false : Promise.reject(err));
  }

  /** Unlinks temporary files (plain files other than the reserve) a killed `make` left, older than `olderThanMs`. */
  async sweep(olderThanMs: number): Promise<number> {
    const dir = join(this.root, RESERVE_DIR);
    if (!(await isRealDir(this.root)) || !(await isRealDir(dir))) return 0;
    const cutoff = Date.now() - olderThanMs;
    let removed = 0;
    for (const name of await readdir(dir)) {
      if (name === RESERVE_FILE || !TEMP_NAME.test(name)) continue;
      const st = await lstat(join(dir, name)).catch(() => undefined);
      if (!st?.isFile() || st.mtimeMs > cutoff) continue;
      await unlink(join(dir, name)).catch((err: unknown) => { if (errnoCode(err) !== 'ENOENT') throw err; });
      removed += 1;
    }
    return removed;
  }

  private async make(file: string): Promise<boolean> {
    const dir = join(this.root, RESERVE_DIR);
    await mkdir(dir, { mode: 0o700 }).catch((err: unknown) => { if (errnoCode(err) !== 'EEXIST') throw err; });
    if (!(await lstat(dir)).isDirectory()) return false;
    const temp = join(dir, `${randomHex(8)}-${process.pid}`);
    const handle = await open(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      try {
        await handle.writeFile(randomBytes(RESERVE_BYTES));
        if (this.durable) await handle.sync();
      } finally {
        await handle.close();
      }
      await link(temp, file).catch((err: unknown) => { if (errnoCode(err) !== 'EEXIST') throw err; });
      return true;
    } finally {
      await unlink(temp).catch(() => undefined);
    }
  }
}
