/** When a local directory's times prove its entries unchanged (see VolumeRegistry.readNames). */

/**
 * A directory whose mtime was older than this when stat'ed before a readdir has the same entries
 * for as long as its mtime (and ctime) still read the same: an entry added, removed or renamed
 * after that stat gives it a later mtime. A younger mtime could be shared by a change in the
 * same clock tick as the one seen. How long a tick is depends on the filesystem's timestamps:
 * whole seconds (ext4 with 128-byte inodes, and anything that only keeps milliseconds or less, is
 * treated so), or the kernel's coarse clock, which advances once per scheduler tick (1-10 ms).
 */
const SETTLED_MS = 1_000;
/** For a filesystem whose times carry sub-millisecond digits: five times the longest kernel tick (10 ms at HZ=100). */
const FINE_SETTLED_MS = 50;

/**
 * How old a directory's mtime must be, when stat'ed, before a change in its tick is ruled out.
 * A time with digits below the millisecond comes from a filesystem that keeps nanoseconds and
 * stamps changes from the kernel's clock; one without (a chance of about one in a million for
 * such a filesystem) gets the whole second.
 */
export function settleTimeOf(mtimeMs: number): number {
  return Math.abs(mtimeMs - Math.round(mtimeMs)) > 1e-4 ? FINE_SETTLED_MS : SETTLED_MS;
}
