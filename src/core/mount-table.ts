import { join } from 'node:path';
import type { FsPort } from './fs-port.js';
import { readJsonFile, writeFileAtomic } from './atomic-file.js';
import { ErrorCodes, StowageError } from './errors.js';

interface MountEntry {
  /** How many times this ID is mounted right now (Docker can mount one ID twice, e.g. `docker cp`). */
  count: number;
  since: string;
}

interface MountFile {
  format: 1;
  writtenBy: string;
  writtenAt: string;
  volumes: Record<string, Record<string, MountEntry>>;
}

/**
 * Mount reference counts of this node, by volume and mount ID, persisted under the node's
 * state root so a restarted daemon still knows which IDs Docker may unmount.
 */
export class MountTable {
  private volumes = new Map<string, Map<string, MountEntry>>();
  private readonly path: string;
  private writing: Promise<void> = Promise.resolve();
  private dirty = false;
  /** Bumped on every change; lets callers reuse answers derived from the table. */
  version = 0;

  constructor(private readonly fs: FsPort, root: string, private readonly nodeId: string) {
    this.path = join(root, 'mounts.json');
  }

  async load(): Promise<void> {
    let data: unknown;
    try {
      data = await readJsonFile(this.fs, this.path);
    } catch (err) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT,
        `mount records in ${this.path} cannot be read; fix or move the file aside and restart`, { cause: err });
    }
    this.volumes.clear();
    if (data === undefined) return;
    const file = data as Partial<MountFile>;
    if (typeof file !== 'object' || file === null || typeof file.volumes !== 'object' || file.volumes === null) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT,
        `mount records in ${this.path} are not in the expected format; fix or move the file aside and restart`);
    }
    for (const [volume, ids] of Object.entries(file.volumes)) {
      const entries = new Map<string, MountEntry>();
      for (const [id, entry] of Object.entries(ids)) {
        if (entry && Number.isInteger(entry.count) && entry.count > 0) entries.set(id, entry);
      }
      if (entries.size > 0) this.volumes.set(volume, entries);
    }
  }

  /** Total mounts of a volume on this node. */
  count(volume: string): number {
    let total = 0;
    for (const entry of this.volumes.get(volume)?.values() ?? []) total += entry.count;
    return total;
  }

  ids(volume: string): Record<string, number> {
    const result: Record<string, number> = {};
    for (const [id, entry] of this.volumes.get(volume) ?? []) result[id] = entry.count;
    return result;
  }

  /** Counts per mount ID per volume, for publishing to other nodes. */
  snapshot(): Record<string, Record<string, number>> {
    const result: Record<string, Record<string, number>> = {};
    for (const volume of this.volumes.keys()) result[volume] = this.ids(volume);
    return result;
  }

  mountedVolumes(): string[] {
    return [...this.volumes.keys()];
  }

  has(volume: string, id: string): boolean {
    return this.volumes.get(volume)?.has(id) ?? false;
  }

  /** Returns the volume's total count after the increment. */
  increment(volume: string, id: string, now: string): number {
    let entries = this.volumes.get(volume);
    if (!entries) {
      entries = new Map();
      this.volumes.set(volume, entries);
    }
    const entry = entries.get(id);
    if (entry) entry.count += 1;
    else entries.set(id, { count: 1, since: now });
    this.dirty = true;
    this.version += 1;
    return this.count(volume);
  }

  /** Returns the volume's total count after the decrement; unknown IDs change nothing. */
  decrement(volume: string, id: string): number {
    const entries = this.volumes.get(volume);
    const entry = entries?.get(id);
    if (entries && entry) {
      entry.count -= 1;
      if (entry.count <= 0) entries.delete(id);
      if (entries.size === 0) this.volumes.delete(volume);
      this.dirty = true;
      this.version += 1;
    }
    return this.count(volume);
  }

  forget(volume: string): void {
    if (this.volumes.delete(volume)) {
      this.dirty = true;
      this.version += 1;
    }
  }

  /**
   * Persists the current table. Concurrent callers share writes: each caller's change is on
   * disk when its promise resolves, and at most one write runs at a time.
   */
  persist(): Promise<void> {
    const next = this.writing.then(async () => {
      if (!this.dirty) return;
      this.dirty = false;
      const file: MountFile = {
        format: 1,
        writtenBy: this.nodeId,
        writtenAt: new Date().toISOString(),
        volumes: Object.fromEntries(
          [...this.volumes].map(([volume, ids]) => [volume, Object.fromEntries(ids)]),
        ),
      };
      try {
        await writeFileAtomic(this.fs, this.path, JSON.stringify(file, null, 1));
      } catch (err) {
        this.dirty = true;
        throw new StowageError(ErrorCodes.INTERNAL, `cannot save mount records to ${this.path}`, { cause: err });
      }
    });
    this.writing = next.catch(() => undefined);
    return next;
  }
}
