/**
 * What a backend with block-level snapshots (devicemapper) offers block backups: a snapshot's
 * device to read, which of its bytes are mapped or changed since another snapshot, and a new
 * volume's device to write. The core never imports a backend; it sees this port only.
 */

/** A byte range of a device. */
export interface ByteRange {
  offsetBytes: number;
  lengthBytes: number;
}

/** A snapshot's device, activated read-only for one reader. */
export interface BlockDevice {
  path: string;
  sizeBytes: number;
  filesystem: string;
  /** Deactivates it (once; later calls do nothing). */
  release(): Promise<void>;
}

export interface BlockSupport {
  /**
   * The snapshot's identity on its pool (name, thin id, creation transaction), or undefined
   * when no such snapshot exists: a name alone may have been deleted and taken again.
   */
  snapshotIdentity(volume: string, snapshot: string): Promise<string | undefined>;
  /** Activates a snapshot's device read-only. */
  openSnapshotDevice(volume: string, snapshot: string): Promise<BlockDevice>;
  /** The byte ranges of the snapshot that are mapped in the pool (the rest reads as zeros). */
  mappedRanges(volume: string, snapshot: string): Promise<ByteRange[]>;
  /** The byte ranges where snapshot `to` differs from snapshot `from` (from thin_delta). */
  changedRanges(volume: string, from: string, to: string): Promise<ByteRange[]>;
  /**
   * Writes the device of `volume`, just created by a restore and never mounted: it must be
   * `sizeBytes` long; it gets `filesystem` as its recorded type. `write` receives the device
   * and the ranges the new device has mapped (what its mkfs wrote: a restore must zero them
   * where the backup holds zeros). Afterwards the volume is used as it is (no first-attach
   * preparation: the filesystem is the backup's).
   */
  writeNewVolume(volume: string, image: { sizeBytes: number; filesystem: string },
    write: (device: string, mapped: ByteRange[]) => Promise<void>): Promise<void>;
}

/** True when any of `ranges` (sorted) overlaps [start, end). */
export function overlaps(ranges: readonly ByteRange[], start: number, end: number): boolean {
  let lo = 0;
  let hi = ranges.length;
  // The first range ending after `start`.
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    const r = ranges[mid]!;
    if (r.offsetBytes + r.lengthBytes <= start) lo = mid + 1;
    else hi = mid;
  }
  const r = ranges[lo];
  return r !== undefined && r.offsetBytes < end;
}

/** Sorts and merges ranges that touch or overlap. */
export function mergeRanges(ranges: readonly ByteRange[]): ByteRange[] {
  const sorted = [...ranges].filter((r) => r.lengthBytes > 0).sort((a, b) => a.offsetBytes - b.offsetBytes);
  const merged: ByteRange[] = [];
  for (const r of sorted) {
    const last = merged.at(-1);
    if (last && last.offsetBytes + last.lengthBytes >= r.offsetBytes) {
      last.lengthBytes = Math.max(last.lengthBytes, r.offsetBytes + r.lengthBytes - last.offsetBytes);
    } else {
      merged.push({ ...r });
    }
  }
  return merged;
}
