import { z } from 'zod';
import type { FsPort } from './fs-port.js';
import { ErrorCodes, StowageError, describeCause, isStowageError, messageOf } from './errors.js';
import { MountFiles, type StoredVolumeMounts } from './mount-log.js';
import { isValidMountId, isValidVolumeName } from './names.js';

/** One Docker mount ID of a volume on this node (not a kernel mount: see proc-mounts.ts). */
export interface MountIdCount {
  /** How many times this ID is mounted right now (Docker can mount one ID twice, e.g. `docker cp`). */
  count: number;
  /** When this ID was first mounted. */
  since: string;
  /** When this ID was last mounted; reconciliation waits a grace period after it. */
  last?: string;
}

const entrySchema = z.object({
  count: z.number().int().positive(),
  since: z.string(),
  last: z.string().optional(),
}) satisfies z.ZodType<MountIdCount>;

interface VolumeMounts {
  /** Identity of the volume these mounts belong to (its createdAt and createdBy). */
  incarnation?: string;
  ids: Map<string, MountIdCount>;
}

/** What identifies one life of a volume: a removed and re-created volume has another. */
export function incarnationOf(record: { createdAt: string; createdBy: string }): string {
  return `${record.createdAt}/${record.createdBy}`;
}

/** A mount record as `stowage mounts` shows it. */
export interface MountRecordView {
  volume: string;
  id: string;
  count: number;
  since: string;
  last: string;
}

/**
 * Mount reference counts of this node, by volume and mount ID, persisted under the node's
 * state root so a restarted daemon still knows which IDs Docker may unmount.
 */
export class MountTable {
  private volumes = new Map<string, VolumeMounts>();
  private readonly files: MountFiles;
  private writing: Promise<void> = Promise.resolve();
  /** Volumes changed since the last save. */
  private readonly dirty = new Set<string>();
  /** Bumped on every change; lets callers reuse answers derived from the table. */
  version = 0;
  /** Entries skipped at load because they were invalid, for the log. */
  readonly skipped: string[] = [];

  constructor(fs: FsPort, root: string, nodeId: string) {
    this.files = new MountFiles(fs, root, nodeId);
  }

  /** Reads the records a previous run saved, then starts a fresh snapshot and log from them. */
  async load(): Promise<void> {
    const path = this.files.snapshotPath;
    let volumes: Record<string, StoredVolumeMounts>;
    let skippedLines: string[];
    try {
      ({ volumes, skipped: skippedLines } = await this.files.read());
    } catch (err) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, isStowageError(err)
        ? `${messageOf(err)}; fix or move the file aside and restart`
        : `mount records in ${path} cannot be read (${describeCause(err)}); fix or move the file aside and restart`, { cause: err });
    }
    this.volumes.clear();
    this.skipped.length = 0;
    for (const [volume, { incarnation, ids }] of Object.entries(volumes)) {
      if (!isValidVolumeName(volume)) {
        this.skipped.push(`volume ${JSON.stringify(String(volume).slice(0, 80))}: not a valid volume name`);
        continue;
      }
      const entries = new Map<string, MountIdCount>();
      for (const [id, raw] of Object.entries(ids)) {
        const entry = entrySchema.safeParse(raw);
        if (!isValidMountId(id) || !entry.success) {
          this.skipped.push(`volume ${volume}, mount id ${JSON.stringify(id.slice(0, 80))}: invalid record`);
          continue;
        }
        entries.set(id, entry.data);
      }
      if (entries.size > 0) this.volumes.set(volume, { incarnation, ids: entries });
    }
    this.skipped.push(...skippedLines);
    // A fresh snapshot and log; if the disk refuses now, the next save tries again.
    await this.files.snapshot(this.stored()).catch(() => { this.files.needsSnapshot = true; });
  }

  /** Closes the log (the daemon stops). */
  close(): Promise<void> {
    return this.files.close();
  }

  private stored(): Record<string, StoredVolumeMounts> {
    return Object.fromEntries([...this.volumes.keys()].map((volume) => [volume, this.storedOf(volume)!]));
  }

  private storedOf(volume: string): StoredVolumeMounts | undefined {
    const mounts = this.volumes.get(volume);
    if (!mounts) return undefined;
    return { ...(mounts.incarnation === undefined ? {} : { incarnation: mounts.incarnation }), ids: Object.fromEntries(mounts.ids) };
  }

  /** Total mounts of a volume on this node. */
  count(volume: string): number {
    let total = 0;
    for (const entry of this.volumes.get(volume)?.ids.values() ?? []) total += entry.count;
    return total;
  }

  ids(volume: string): Record<string, number> {
    const result: Record<string, number> = {};
    for (const [id, entry] of this.volumes.get(volume)?.ids ?? []) result[id] = entry.count;
    return result;
  }

  incarnation(volume: string): string | undefined {
    return this.volumes.get(volume)?.incarnation;
  }

  records(): MountRecordView[] {
    const rows: MountRecordView[] = [];
    for (const [volume, { ids }] of this.volumes) {
      for (const [id, e] of ids) rows.push({ volume, id, count: e.count, since: e.since, last: e.last ?? e.since });
    }
    return rows.sort((a, b) => a.volume.localeCompare(b.volume) || a.id.localeCompare(b.id));
  }

  /** Entries of a volume, for reconciliation. */
  entries(volume: string): Array<[string, MountIdCount]> {
    return [...this.volumes.get(volume)?.ids ?? []];
  }

  mountedVolumes(): string[] {
    return [...this.volumes.keys()];
  }

  has(volume: string, id: string): boolean {
    return this.volumes.get(volume)?.ids.has(id) ?? false;
  }

  /** Returns the volume's total count after the increment. */
  increment(volume: string, id: string, now: string, incarnation?: string): number {
    let mounts = this.volumes.get(volume);
    if (!mounts) {
      mounts = { incarnation, ids: new Map() };
      this.volumes.set(volume, mounts);
    }
    if (incarnation !== undefined) mounts.incarnation = incarnation;
    const entry = mounts.ids.get(id);
    if (entry) {
      entry.count += 1;
      entry.last = now;
    } else {
      mounts.ids.set(id, { count: 1, since: now, last: now });
    }
    this.changed(volume);
    return this.count(volume);
  }

  /** Returns the volume's total count after the decrement; unknown IDs change nothing. */
  decrement(volume: string, id: string): number {
    const mounts = this.volumes.get(volume);
    const entry = mounts?.ids.get(id);
    if (mounts && entry) {
      entry.count -= 1;
      if (entry.count <= 0) mounts.ids.delete(id);
      if (mounts.ids.size === 0) this.volumes.delete(volume);
      this.changed(volume);
    }
    return this.count(volume);
  }

  /** Drops one ID whatever its count; returns the volume's remaining total. */
  drop(volume: string, id: string): number {
    const mounts = this.volumes.get(volume);
    if (mounts?.ids.delete(id)) {
      if (mounts.ids.size === 0) this.volumes.delete(volume);
      this.changed(volume);
    }
    return this.count(volume);
  }

  /** Puts back entries taken by `drop` (whose detach then failed), with the volume's incarnation. */
  putBack(volume: string, entries: Array<[string, MountIdCount]>, incarnation: string | undefined): void {
    if (entries.length === 0) return;
    let mounts = this.volumes.get(volume);
    if (!mounts) {
      mounts = { incarnation, ids: new Map() };
      this.volumes.set(volume, mounts);
    }
    for (const [id, entry] of entries) mounts.ids.set(id, { ...entry });
    this.changed(volume);
  }

  forget(volume: string): void {
    if (this.volumes.delete(volume)) this.changed(volume);
  }

  private changed(volume: string): void {
    this.dirty.add(volume);
    this.version += 1;
  }

  /**
   * Saves the changes: one appended line per changed volume, or a new snapshot once the log has
   * grown well past the table. Concurrent callers share writes: each caller's change is saved
   * when its promise resolves, and at most one write runs at a time.
   */
  persist(): Promise<void> {
    const next = this.writing.then(async () => {
      if (this.dirty.size === 0 && !this.files.needsSnapshot) return;
      const changed = [...this.dirty];
      this.dirty.clear();
      try {
        if (this.files.needsSnapshot || this.files.linesSinceSnapshot + changed.length > Math.max(1024, 4 * this.volumes.size)) {
          await this.files.snapshot(this.stored());
        } else {
          await this.files.append(changed.map((volume) => [volume, this.storedOf(volume) ?? null]));
        }
      } catch (err) {
        for (const volume of changed) this.dirty.add(volume);
        throw new StowageError(ErrorCodes.INTERNAL,
          `cannot save mount records to ${this.files.logPath}: ${describeCause(err)}`, { cause: err });
      }
    });
    this.writing = next.catch(() => undefined);
    return next;
  }
}
