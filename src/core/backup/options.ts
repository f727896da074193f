/** What backup, restore, verify and maintenance share: options, progress, and event-loop turns. */

/** Longest run of synchronous file system calls before the event loop gets a turn. */
export const TURN_MS = 4;

/**
 * Lets the event loop in every TURN_MS while synchronous calls run back to back: timers, lock
 * renewals and finished compressions are not held up by a long tree.
 */
export class Turns {
  private since = performance.now();

  async pause(): Promise<void> {
    if (performance.now() - this.since < TURN_MS) return;
    await new Promise((resolve) => setImmediate(resolve));
    this.since = performance.now();
  }
}

export interface Progress {
  entries: number;
  files: number;
  /** File bytes covered so far (read, or taken from the files cache). */
  bytes: number;
  /** What a whole-repository check will have read when done (it counts chunks, as `entries`, not files). */
  totalEntries?: number;
  totalBytes?: number;
}

export interface CommonOptions {
  /** Who holds the repository lock, for other nodes' messages (default host:pid). */
  owner?: string;
  lockTtlMs?: number;
  /** The clock lock expiry is judged by (default Date.now). */
  now?: () => number;
  onProgress?: (progress: Progress) => void;
  /**
   * Checked right before the step that cannot be undone (a backup's record written, a backup's
   * record deleted): aborted by then, the operation fails there with the signal's reason.
   */
  signal?: AbortSignal;
  /** Told what the operation did differently than asked and why (e.g. reading a read-only repository without a lock). */
  onWarning?: (message: string) => void;
  /**
   * Whether a tree on a local filesystem (statfs: ext4, xfs, btrfs, tmpfs...) is read or written
   * with synchronous calls (default true). A call through libuv's thread pool costs tens of
   * microseconds, the system call itself a few: for a tree of small files that is most of the
   * time. Network filesystems, and directories of another device inside the tree, always take
   * the thread pool, so a hung server stalls only its own calls.
   */
  localFastPath?: boolean;
}
