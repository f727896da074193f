import { basename, dirname, join } from 'node:path';
import { ErrorCodes, StowageError, errnoCode } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import type { Logger } from '../logger.js';
import type { LocalMounts } from './cluster.js';
import { NotNodeDir, inNodeDir, openCheckedDir, type NodeDirCalls } from './node-dir.js';

/**
 * This node's mount markers (`mounts/<node>/<volume>` in the shared store): the cluster-wide sign
 * that a volume is mounted here, which other nodes read before they remove it. Every call goes
 * through the directory opened without following a symlink (node-dir.ts): another machine can
 * replace it by a link while this node is stopped or running, and the sync's unlinks of leftover
 * markers would then delete whatever files the link leads to.
 */
export class NodeMarkers {
  /** Volumes whose marker this node created and has not removed. */
  private readonly marked = new Set<string>();
  /** Volumes whose marker a mount made before counting itself (see markAhead): kept by sync. */
  private readonly ahead = new Map<string, number>();
  /** Unlinks in flight, so a mount that marks the volume meanwhile waits for them first. */
  private readonly unlinking = new Map<string, Promise<void>>();
  /** Names in the directory that are directories, reported once rather than at every heartbeat. */
  private readonly reported = new Set<string>();

  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly nodeId: string,
    private readonly log: Logger,
    /** Throws when the store was replaced since the start: its marker directory is then not made again. */
    private readonly storeGuard?: () => Promise<void>,
  ) {}

  async markMounted(volume: string): Promise<void> {
    // A heartbeat may be removing a leftover marker of this volume: made before that unlink lands, ours would go with it.
    await this.unlinking.get(volume);
    if (this.marked.has(volume)) return;
    try {
      await this.create(volume);
    } catch (err) {
      // Someone removed this node's marker directory (a forget run against a live node by hand).
      if (errnoCode(err) !== 'ENOENT') throw err;
      await this.storeGuard?.();
      await this.makeDir();
      await this.create(volume);
    }
    this.marked.add(volume);
  }

  /**
   * Makes the directory if there is none and refuses to go on when something else is there: at
   * start, before anything is written in it, so a node whose directory became a link refuses to
   * start instead of deleting and writing where it leads.
   */
  async prepare(): Promise<void> {
    await this.makeDir();
    await this.inDir(async () => undefined);
  }

  /**
   * Makes this node's directory in `mounts/` reached through a checked descriptor, never by a
   * path a symlink swapped in for `mounts/` or above could lead out of the store; and never
   * `mounts/` itself: a store whose cluster directory is gone (unmounted, say) gets nothing made.
   */
  private async makeDir(): Promise<void> {
    const parent = await openCheckedDir(this.fs, dirname(this.dir), 'the directory of mount markers of every node');
    try {
      await this.fs.mkdir(join(parent.base, basename(this.dir))).catch((err: unknown) => {
        if (errnoCode(err) !== 'EEXIST') throw err;
      });
    } finally {
      await parent.close();
    }
  }

  /** The directory's calls; anything but a directory there is said as this node's problem, with the way out. */
  private inDir<T>(task: (dir: NodeDirCalls) => Promise<T>): Promise<T> {
    return inNodeDir(this.fs, this.dir, task).catch((err: unknown) => {
      if (!(err instanceof NotNodeDir)) throw err;
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `${this.dir}, where node ${this.nodeId} keeps its mount markers, is ${err.found}, ` +
        'not a directory; stowage neither follows nor deletes through it. Move it away by hand (what it leads to is not ' +
        'stowage\'s): stowage makes a new one at its next start or mount', { node: this.nodeId });
    });
  }

  /** An existing name is a marker already, whatever it is: readers count names, and nothing there is followed. */
  private create(volume: string): Promise<void> {
    return this.inDir((dir) => dir.create(volume)).catch((err: unknown) => {
      if (errnoCode(err) !== 'EEXIST') throw err;
    });
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
    const present = new Set(await this.inDir((dir) => dir.names()).catch((err: unknown) => {
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
    const unlink = this.inDir((dir) => dir.unlink(volume)).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return;
      // A directory planted under a volume's name stays, and still reads as that volume's marker
      // (the safe side): emptying it would delete what another machine put there.
      if (errnoCode(err) !== 'EISDIR') throw err;
      if (this.reported.has(volume)) return;
      this.reported.add(volume);
      this.log.warn(`${this.dir}/${volume} is a directory, not a mount marker: left as it is, it makes volume ${volume} read as ` +
        `mounted on node ${this.nodeId}; remove it by hand once that volume is not mounted here`);
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
