/**
 * Files with several names in a backup: the first name met is read, the later ones link to it,
 * but only when what was read there is the very file the walk saw at the later name. The same
 * for symlinks, FIFOs and devices with several names, whose "read" is their entry.
 */
import type { BigIntStats } from 'node:fs';
import { metadata, inodeNumber } from './entry-stat.js';
import type { Entry } from './format.js';
import type { OpenDir } from './walk.js';

/** What a later name checks before it links to `path`: the inode and ctime read there, only. */
interface LinkTarget {
  path: string;
  ino: Entry['ino'];
  ctimeNs: Entry['ctimeNs'];
}

export class LinkedNames {
  /** By device and inode: the name later ones link to (a tree of hardlinks keeps one small record per inode). */
  private readonly byInode = new Map<string, Promise<LinkTarget | undefined>>();

  /**
   * The entry of a non-directory at `path`: `read` reads it, through `dir` held open until then.
   * A later name of a file already met becomes a link to what its first name held, if that was
   * this very file as the walk saw it here: same inode and ctime. A first name replaced (or left
   * out) before it was read, or an inode number freed and given to a new file during the walk,
   * would otherwise give this name another file's content, or drop it: it is then read itself,
   * and the names after it link to it.
   */
  entry(path: string, stat: BigIntStats, dir: OpenDir | undefined, read: (dir: OpenDir | undefined) => Promise<Entry | undefined>): Promise<Entry | undefined> {
    if (stat.nlink <= 1n) return read(dir);
    const inode = `${stat.dev}:${stat.ino}`;
    const first = this.byInode.get(inode);
    if (first === undefined) {
      const own = read(dir);
      this.remember(inode, own.then((entry) => targetOf(path, entry)));
      return own;
    }
    const outcome = first.then(async (linked) => {
      if (linked && linked.ino === inodeNumber(stat.ino) && linked.ctimeNs === stat.ctimeNs.toString()) {
        dir?.release();
        const link: Entry = { path, type: 'hardlink', ...metadata(stat), size: Number(stat.size), target: linked.path };
        return { own: link, linked };
      }
      const own = await read(dir);
      return { own, linked: targetOf(path, own) ?? linked };
    });
    this.remember(inode, outcome.then(({ linked }) => linked));
    return outcome.then(({ own }) => own);
  }

  private remember(inode: string, target: Promise<LinkTarget | undefined>): void {
    // A failed read is taken where its entry is awaited; here it must not count as unhandled.
    target.catch(() => {});
    this.byInode.set(inode, target);
  }
}

function targetOf(path: string, entry: Entry | undefined): LinkTarget | undefined {
  return entry ? { path, ino: entry.ino, ctimeNs: entry.ctimeNs } : undefined;
}
