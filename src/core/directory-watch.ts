import { statSync, watch, type FSWatcher } from 'node:fs';
import type { Logger } from './logger.js';
import { messageOf } from './errors.js';

/**
 * Counts the changes the kernel reports (inotify, through `fs.watch`) in one directory of a local
 * filesystem: an entry created, removed, renamed, written or re-stamped there, by any process on
 * this host, through any path or mount of it.
 *
 * The kernel queues an event before the system call that made the change returns. So once the
 * events that were ready when a request arrived have been delivered, a count equal to one taken
 * earlier proves nothing changed in between, which a directory's times cannot prove within their
 * clock tick. A request's handler may run before the event loop delivered events that became
 * ready in the same turn: `drained()` waits until that turn is over.
 *
 * Lost events cannot fool it: the kernel only drops events when its queue is full, and the full
 * queue is delivered first, so the count moves anyway. When the watch cannot start (no inotify,
 * out of watches) or fails later, `mark` answers undefined and callers fall back to what they did
 * without it.
 */
export class DirectoryWatch {
  private changes = 0;
  private watcher?: FSWatcher;
  /** The directory watched: inotify follows the inode, not the path. */
  private watched?: { dev: number; ino: number };

  private constructor(readonly dir: string) {}

  static start(dir: string, log: Logger): DirectoryWatch {
    const result = new DirectoryWatch(dir);
    let before: { dev: number; ino: number } | undefined;
    try {
      before = statSync(dir);
      // Not persistent: a watch must not keep the process alive.
      const watcher = watch(dir, { persistent: false }, () => { result.changes += 1; });
      watcher.on('error', (err: unknown) => {
        log.debug?.(`stopped watching ${dir}: ${messageOf(err)}`);
        result.close();
      });
      result.watcher = watcher;
      // The path named the same directory before and after: that is the one watched.
      const after = statSync(dir);
      if (before.dev === after.dev && before.ino === after.ino) result.watched = { dev: after.dev, ino: after.ino };
      else result.close();
    } catch (err) {
      result.close();
      // Not tried again for the same directory: a List must not pay for a failing watch each time.
      if (before) result.watched = { dev: before.dev, ino: before.ino };
      log.debug?.(`cannot watch ${dir} (${messageOf(err)}); its listings rely on its times alone`);
    }
    return result;
  }

  /**
   * Whether this watch was started for the directory `stat` describes, running or not. After
   * the directory was replaced under its path, it was not: start another.
   */
  isFor(stat: { dev: number; ino: number }): boolean {
    return this.watched?.dev === stat.dev && this.watched.ino === stat.ino;
  }

  /**
   * The count now, events not yet delivered left out; undefined when not watching. Taken before
   * a read, it can only make a later `unchangedSince` answer false too often, never true wrongly.
   */
  count(): number | undefined {
    return this.watcher ? this.changes : undefined;
  }

  /** The count after delivering every event that was ready; undefined when not watching. */
  async mark(): Promise<number | undefined> {
    if (!this.watcher) return undefined;
    await drained();
    return this.watcher ? this.changes : undefined;
  }

  /** True when the watch ran all along and delivered no event since `mark` returned `since`. */
  async unchangedSince(since: number | undefined): Promise<boolean> {
    if (since === undefined || !this.watcher) return false;
    await drained();
    return this.watcher !== undefined && this.changes === since;
  }

  close(): void {
    this.watcher?.close();
    this.watcher = undefined;
  }
}

/** Resolves in the event loop's check phase: every I/O callback of the current turn has run. */
function drained(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}
