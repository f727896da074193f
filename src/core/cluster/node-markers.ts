import { join } from 'node:path';
import { errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import type { Logger } from '../logger.js';
import type { LocalMounts } from './cluster.js';
import { createMarker } from './layout-settle.js';

/**
 * This node's mount markers (`mounts/<node>/<volume>` in the shared store): the cluster-wide sign
 * that a volume is mounted here, which other nodes read before they remove it.
 */
export class NodeMarkers {
  /** Volumes whose marker this node created and has not removed. */
  private readonly marked = new Set<string>();
  /** Volumes whose marker a mount made before counting itself (see markAhead): kept by sync. */
  private readonly ahead = new Map<string, number>();
  /** Unlinks in flight, so a mount that marks the volume meanwhile waits for them first. */
  private readonly unlinking = new Map<string, Promise<void>>();

  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly nodeId: string,
    private readonly log: Logger,
  ) {}

  async markMounted(volume: string): Promise<void> {
    // A heartbeat may be removing a leftover marker of this volume: made before that unlink lands, ours would go with it.
    await this.unlinking.get(volume);
    if (this.marked.has(volume)) return;
    const path = join(this.dir, volume);
    try {
      await createMarker(this.fs, path);
    } catch (err) {
      // Someone removed this node's marker directory (a forget run against a live node by hand).
      if (errnoCode(err) !== 'ENOENT') throw err;
      await this.fs.mkdir(this.dir, { recursive: true });
      await createMarker(this.fs, path);
    }
    this.marked.add(volume);
  }

  /**
   * Marks the volume for a mount not yet counted in the mount table: until `doneAhead`, a
   * heartbeat's sync keeps the marker as if the volume were mounted.
   */
  async markAhead(volume: string): Promise<void> {
    this.ahead.set(volume, (this.ahead.get(volume) ?? 0) + 1);
    await this.markMounted(volume);
  }

  doneAhead(volume: string): void {
    const left = (this.ahead.get(volume) ?? 1) - 1;
    if (left > 0) this.ahead.set(volume, left);
    else this.ahead.delete(volume);
  }

  async markUnmounted(volume: string): Promise<void> {
    this.marked.delete(volume);
    await this.removeFile(volume);
  }

  /**
   * Makes the markers match the mount table: at start (`create`), markers are created for every
   * mounted volume and others removed; at a heartbeat, markers of volumes with no mount are
   * removed (an unlink that failed at the last unmount), and a mounted volume's marker that has
   * vanished is written again: a `forget` run while this node was silent (paused, cut off)
   * deletes them, and without them another node would delete the volume under its mounts.
   * Counts are read right before each step, so a mount or unmount running meanwhile is never
   * undone (a marker written again for a volume unmounted meanwhile goes at the next heartbeat).
   */
  async sync(mounts: LocalMounts, create: boolean): Promise<void> {
    const present = new Set(await this.fs.readdir(this.dir).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return [] as string[];
      throw err;
    }));
    const mountedNow = (volume: string) => mounts.count(volume) > 0 || this.ahead.has(volume);
    for (const volume of present) {
      if (volume.startsWith('.') || mountedNow(volume)) continue;
      this.marked.delete(volume);
      await this.removeFile(volume);
    }
    if (create) {
      for (const volume of mounts.mountedVolumes()) {
        if (mountedNow(volume)) await this.markMounted(volume);
      }
      return;
    }
    // The volumes this node has marked, not its whole mount table: a heartbeat stays per volume.
    for (const volume of [...this.marked]) {
      if (present.has(volume) || !mountedNow(volume)) continue;
      this.marked.delete(volume);
      await this.markMounted(volume);
      this.log.warn(`the mount marker of volume ${volume} on node ${this.nodeId} had vanished from the shared store (forgotten ` +
        'while this node was silent?); written again, so that other nodes see the volume in use here');
    }
  }

  private async removeFile(volume: string): Promise<void> {
    const unlink = this.fs.unlink(join(this.dir, volume)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    const settled = unlink.then(() => undefined, () => undefined);
    this.unlinking.set(volume, settled);
    try {
      await unlink;
    } finally {
      if (this.unlinking.get(volume) === settled) this.unlinking.delete(volume);
    }
  }
}
