import { dirname, join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from '../../core/atomic-file.js';
import type { CommandRunner } from '../../core/command-runner.js';
import { errnoCode, messageOf } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';
import { describeLeftMounts, readFileNoFollow, realDirOn, removeTreeOnDevice, type LeftMount } from '../../core/safe-path.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { DELETING_DIR, deletingPathOf, isDeletingEntryName, isOwnBrickPath } from './bricks.js';
import type { GlusterCli } from './gluster-cli.js';
import { GLUSTER_VOLUME_NAME, type BrickRoot } from './glusterfs-options.js';
import { recordedBrickSchema, UUID, type RecordedBrick } from './volume-record.js';

/**
 * The record of one peer's bricks of one gluster volume that stowage deleted: each node cleans
 * the bricks of its own gluster peer (a node can only reach its own disks). One file per
 * (volume id, peer), so nodes never rewrite each other's files.
 *
 * Two kinds, told apart by the file name:
 * - `<id>.<peer>.pending.json`, written before `volume stop`: a remove is under way. It never
 *   leads to deleting a brick. Dropped when the remove fails, and by any sweep that finds its
 *   volume still there (a remove that failed or crashed before the delete: the volume may be
 *   started and written again, and deleted by hand later). One whose volume is gone is a remove
 *   that stopped between `volume delete` and arming, or a crashed remove whose volume someone
 *   deleted by hand later: stowage cannot tell which, so its bricks are left and named in a log.
 * - `<id>.<peer>.json`, armed, written only after this node's own `volume delete` succeeded: the
 *   sweep deletes its bricks.
 * - format 1 (an earlier version's, written before the stop and armed from the start): it may
 *   be a failed remove's, so it is treated as a pending one, never as armed.
 * Why concurrent work is safe: a sweep lists the files before it asks glusterd for the volumes,
 * so an armed file it lists was written after the delete and its volume is never seen live; a
 * sweep only drops pending files, and a remove arms by writing a new file (not by renaming the
 * pending one), so a sweep dropping the pending file of a remove under way costs nothing.
 */
const tombstoneSchema = z.object({
  /** 1: written by an earlier version before `volume stop`, armed from the start; 2: this version's. */
  format: z.union([z.literal(1), z.literal(2)]),
  gluster: z.string().regex(GLUSTER_VOLUME_NAME),
  volumeId: z.string().regex(UUID),
  peer: z.string().regex(UUID),
  bricks: z.array(recordedBrickSchema).max(256),
  deletedAt: z.string().max(64),
  deletedBy: z.string().max(255),
});
type Tombstone = z.infer<typeof tombstoneSchema>;

const TOMBSTONE_FILE = /^([0-9a-f-]{36})\.([0-9a-f-]{36})\.(pending\.)?json$/;
/** How long a pending tombstone whose volume is gone may still be a remove about to arm it. */
const PENDING_GRACE_MS = 60 * 60_000;
const VOLUME_ID_XATTR = 'trusted.glusterfs.volume-id';

function isPending(file: string): boolean {
  return file.endsWith('.pending.json');
}

export interface BrickCleanerConfig {
  roots: readonly BrickRoot[];
  prefix: string;
  timeoutMs: number;
  nodeId: string;
}

/**
 * Removes bricks of deleted gluster volumes, and only those it can prove stowage made for
 * them: recorded at create time, named as stowage names bricks, directly in a configured brick
 * root, a real directory on the root's filesystem, no longer a brick of any gluster volume, and
 * carrying the deleted volume's id in gluster's own `trusted.glusterfs.volume-id` xattr.
 */
export class BrickCleaner {
  readonly dir: string;

  constructor(
    private readonly fs: FsPort,
    private readonly runner: CommandRunner,
    private readonly cli: GlusterCli,
    private readonly log: Logger,
    private readonly config: BrickCleanerConfig,
    /** The state pool's mount point; tombstones live in `<it>/.stowage/glusterfs/tombstones`. */
    private readonly stateRoot: string,
    private readonly localPeer: () => Promise<string>,
  ) {
    this.dir = join(stateRoot, '.stowage', 'glusterfs', 'tombstones');
  }

  /**
   * The tombstone directory, made where missing; each level must be a real directory of the
   * state pool: a symlink planted in shared storage resolves on this machine, outside the pool.
   */
  private async tombstoneDir(create: boolean): Promise<string | undefined> {
    const { dev } = await this.fs.lstat(this.stateRoot);
    let path = this.stateRoot;
    for (const part of ['.stowage', 'glusterfs', 'tombstones']) {
      path = join(path, part);
      if (create) {
        await this.fs.mkdir(path, { mode: 0o755 }).catch((err: unknown) => {
          if (errnoCode(err) !== 'EEXIST') throw err;
        });
      }
      const stat = await this.fs.lstat(path).catch((err: unknown) => {
        if (errnoCode(err) === 'ENOENT') return undefined;
        throw err;
      });
      if (!stat) return undefined;
      await realDirOn(this.fs, path, dev);
    }
    return path;
  }

  /** Writes the pending tombstones of a remove (grouped by peer) before the volume is stopped. */
  journal(gluster: string, volumeId: string, bricks: readonly RecordedBrick[]): Promise<void> {
    return this.write(gluster, volumeId, bricks, true);
  }

  /** Arms the tombstones once this node's `volume delete` of `volumeId` succeeded, then drops the pending ones. */
  async arm(gluster: string, volumeId: string, bricks: readonly RecordedBrick[]): Promise<void> {
    await this.write(gluster, volumeId, bricks, false);
    await this.drop(volumeId, true);
  }

  /** Drops the pending tombstones of a remove that did not delete the volume. */
  disarm(volumeId: string): Promise<void> {
    return this.drop(volumeId, true);
  }

  /** Drops every tombstone of a volume whose bricks are now to be kept (a retaining remove after a failed one). */
  forget(volumeId: string): Promise<void> {
    return this.drop(volumeId, false);
  }

  private async write(gluster: string, volumeId: string, bricks: readonly RecordedBrick[], pending: boolean): Promise<void> {
    await this.tombstoneDir(true);
    for (const peer of new Set(bricks.map((b) => b.peer))) {
      const tombstone: Tombstone = {
        format: 2, gluster, volumeId, peer, bricks: bricks.filter((b) => b.peer === peer),
        deletedAt: new Date().toISOString(), deletedBy: this.config.nodeId,
      };
      await writeFileAtomic(this.fs, join(this.dir, `${volumeId}.${peer}.${pending ? 'pending.' : ''}json`), JSON.stringify(tombstone));
    }
  }

  private async drop(volumeId: string, pendingOnly: boolean): Promise<void> {
    for (const file of await this.tombstoneFiles()) {
      if (!file.startsWith(`${volumeId}.`) || (pendingOnly && !isPending(file))) continue;
      await this.fs.unlink(join(this.dir, file)).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
    }
  }

  private async tombstoneFiles(): Promise<string[]> {
    const dir = await this.tombstoneDir(false);
    return dir === undefined ? [] : (await this.fs.readdir(dir)).filter((f) => TOMBSTONE_FILE.test(f));
  }

  /** For `stowage info`: deleted volumes whose bricks still wait for removal, by peer (armed tombstones of gone volumes only). */
  async pending(): Promise<string> {
    const armed = (await this.tombstoneFiles()).filter((f) => !isPending(f));
    const liveIds = armed.length === 0 ? new Set<string>() : new Set((await this.cli.allVolumes()).map((v) => v.id));
    const byPeer = new Map<string, number>();
    for (const file of armed) {
      const [, volumeId, peer] = TOMBSTONE_FILE.exec(file)!;
      if (liveIds.has(volumeId!)) continue;
      byPeer.set(peer!, (byPeer.get(peer!) ?? 0) + 1);
    }
    if (byPeer.size === 0) return 'none';
    const local = await this.localPeer();
    return [...byPeer].map(([peer, n]) => `${n} volume(s) on peer ${peer}${peer === local ? ' (this one)' : ''}`).join(', ') +
      ` (tombstones in ${this.dir})`;
  }

  /** Cleans this peer's bricks named by armed tombstones; bricks of other peers wait for their own nodes. */
  async sweep(): Promise<void> {
    const local = await this.localPeer();
    // Listed before glusterd is asked (see the tombstone comment): an armed file listed here was written after its delete.
    const files = await this.tombstoneFiles();
    if (files.length === 0) return;
    const volumes = await this.cli.allVolumes();
    const liveIds = new Set(volumes.map((v) => v.id));
    // Any node disarms a tombstone whose volume exists, whichever peer it names (dropping one deletes nothing).
    for (const file of files.filter((f) => TOMBSTONE_FILE.exec(f)![2] !== local && liveIds.has(TOMBSTONE_FILE.exec(f)![1]!))) {
      this.log.warn(`brick tombstone ${join(this.dir, file)} dropped: its gluster volume still exists (a remove that did not finish)`);
      await this.fs.unlink(join(this.dir, file)).catch(() => undefined);
    }
    const mine = files.filter((f) => TOMBSTONE_FILE.exec(f)![2] === local);
    const liveBricks = new Map(volumes.flatMap((v) => v.bricks.map((b) => [b.path, v.name] as const)));
    for (const file of mine) {
      const path = join(this.dir, file);
      let tombstone: Tombstone;
      try {
        const text = await readFileNoFollow(this.fs, path);
        if (text === undefined) continue;
        tombstone = parseRecordText(tombstoneSchema, text, `brick tombstone ${path}`);
        if (`${tombstone.volumeId}.${tombstone.peer}.${isPending(file) ? 'pending.' : ''}json` !== file) {
          throw new Error(`${path} names another volume or peer than its file name`);
        }
      } catch (err) {
        this.log.error(`brick tombstone ${path} left in place: ${messageOf(err)}`);
        continue;
      }
      const bricks = tombstone.bricks.map((b) => `${b.host}:${b.path}`).join(', ');
      if (liveIds.has(tombstone.volumeId)) {
        // A remove that failed or crashed before its delete: the volume may be used again, so its bricks are never deleted.
        this.log.warn(`gluster volume ${tombstone.gluster} still exists after a remove that did not finish ` +
          `(started by ${tombstone.deletedBy} at ${tombstone.deletedAt}); its bricks ${bricks} are no longer marked for deletion`);
        await this.fs.unlink(path).catch(() => undefined);
        continue;
      }
      if (isPending(file) || tombstone.format === 1) {
        if (tombstone.format === 2 && Date.now() - Date.parse(tombstone.deletedAt) < PENDING_GRACE_MS) continue; // a remove may be about to arm it
        this.log.warn(`bricks ${bricks} of deleted gluster volume ${tombstone.gluster} were left in place: a remove ` +
          `(started by ${tombstone.deletedBy} at ${tombstone.deletedAt}) ${tombstone.format === 1 ? 'by an earlier version of stowage marked them before its stop' : 'stopped around its delete'}, ` +
          'and stowage cannot tell whether it deleted the volume or someone did by hand after it failed; ' +
          'delete them by hand once their data is not wanted');
        await this.fs.unlink(path).catch(() => undefined);
        continue;
      }
      let finished = true;
      for (const brick of tombstone.bricks) {
        try {
          await this.clean(tombstone, brick, liveBricks);
        } catch (err) {
          finished = false;
          this.log.error(`could not remove brick ${brick.host}:${brick.path} of deleted gluster volume ${tombstone.gluster} ` +
            `(will retry): ${messageOf(err)}`);
        }
      }
      if (finished) await this.fs.unlink(path).catch(() => undefined);
    }
  }

  /**
   * Moves one brick aside and deletes it (or finishes deleting what an earlier run moved
   * aside), or logs why it stays; throws only for what a retry may fix.
   */
  private async clean(tombstone: Tombstone, brick: RecordedBrick, liveBricks: ReadonlyMap<string, string>): Promise<void> {
    const where = `${brick.host}:${brick.path}`;
    const leave = (why: string) => this.log.warn(`brick ${where} of deleted gluster volume ${tombstone.gluster} was left in place: ${why}`);
    if (!tombstone.gluster.startsWith(this.config.prefix) || !isOwnBrickPath(brick.host, brick.path, this.config.roots, tombstone.gluster)) {
      return leave('it is not a brick directory stowage names, directly in a configured brick root');
    }
    const user = liveBricks.get(brick.path);
    if (user !== undefined) return leave(`it is a brick of gluster volume ${user}`);
    const root = await this.fs.lstat(dirname(brick.path));
    if (!root.isDirectory()) return leave(`${dirname(brick.path)} is not a real directory`);
    const aside = deletingPathOf(brick.path);
    const missing = (err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    };
    let target = brick.path;
    let stat = await this.fs.lstat(brick.path).catch(missing);
    if (!stat) {
      // Moved aside by a run that stopped before the deletion finished; the same checks apply.
      if (await this.deletingArea(dirname(brick.path), root.dev, false) === undefined) return;
      target = aside;
      stat = await this.fs.lstat(aside).catch(missing);
      if (!stat) return;
    }
    if (stat.isSymbolicLink() || !stat.isDirectory()) return leave(`${target} is not a real directory`);
    if (stat.dev !== root.dev) return leave(`${target} is a mount point, not a directory of the brick root`);
    const id = await this.volumeIdOf(target);
    if (id !== tombstone.volumeId) {
      return leave(id === undefined ? `${target} has no readable ${VOLUME_ID_XATTR} (getfattr, from the attr package, reads it)`
        : `the ${VOLUME_ID_XATTR} of ${target} is ${id}, not the deleted volume's ${tombstone.volumeId}`);
    }
    if (target === brick.path) {
      const area = await this.deletingArea(dirname(brick.path), root.dev, true);
      if (area === undefined) return leave(`${join(dirname(brick.path), DELETING_DIR)} is not a real directory of the brick root`);
      await this.fs.rename(brick.path, aside);
    }
    this.warnLeft(aside, await this.removeTree(aside, root.dev));
  }

  /** The volume id gluster stamped on a brick directory, without following a symlink. */
  private async volumeIdOf(path: string): Promise<string | undefined> {
    const result = await this.runner.run('getfattr',
      ['--no-dereference', '--absolute-names', '--encoding=hex', `--name=${VOLUME_ID_XATTR}`, '--', path],
      { timeoutMs: this.config.timeoutMs, allowFailure: true }).catch(() => undefined);
    const hex = result && /trusted\.glusterfs\.volume-id=0x([0-9a-f]{32})\s*$/m.exec(result.stdout)?.[1];
    if (!hex) return undefined;
    return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
  }

  /** `<root>/.stowage-deleting` (made if missing and `create`); undefined unless it is a real directory on `dev`. */
  private async deletingArea(root: string, dev: number, create: boolean): Promise<string | undefined> {
    const area = join(root, DELETING_DIR);
    if (create) {
      await this.fs.mkdir(area, { mode: 0o700 }).catch((err: unknown) => {
        if (errnoCode(err) !== 'EEXIST') throw err;
      });
    }
    const stat = await this.fs.lstat(area).catch(() => undefined);
    return stat && stat.isDirectory() && !stat.isSymbolicLink() && stat.dev === dev ? area : undefined;
  }

  /**
   * Finishes the deletions a previous run started in the `.stowage-deleting` area of each brick
   * root on this host: only entries named as stowage names bricks, only real directories on the
   * root's filesystem, and never through an area that is a symlink or a mount.
   */
  async purgeLeftovers(localRoots: readonly string[]): Promise<void> {
    for (const root of new Set(localRoots)) {
      const area = join(root, DELETING_DIR);
      const [rootStat, areaStat] = await Promise.all([this.fs.lstat(root), this.fs.lstat(area)].map((p) => p.catch(() => undefined)));
      if (!rootStat || !areaStat) continue;
      if (areaStat.isSymbolicLink() || !areaStat.isDirectory() || areaStat.dev !== rootStat.dev) {
        this.log.error(`${area} is ${areaStat.isSymbolicLink() ? 'a symbolic link' : 'not a real directory of the brick root'}; ` +
          'stowage does not follow or purge it');
        continue;
      }
      for (const entry of await this.fs.readdir(area)) {
        const path = join(area, entry);
        const stat = await this.fs.lstat(path).catch(() => undefined);
        if (!stat) continue;
        if (!isDeletingEntryName(entry, this.config.prefix) || stat.isSymbolicLink() || !stat.isDirectory() || stat.dev !== rootStat.dev) {
          this.log.warn(`${path} was left in place: stowage did not put it there (not a brick directory it names, on the brick root's filesystem)`);
          continue;
        }
        try {
          this.warnLeft(path, await this.removeTree(path, rootStat.dev));
        } catch (err) {
          this.log.error(`could not finish deleting brick ${path} (will retry at the next start): ${messageOf(err)}`);
        }
      }
    }
  }

  private warnLeft(brick: string, left: readonly LeftMount[]): void {
    if (left.length === 0) return;
    this.log.warn(`deleting brick ${brick} left ${describeLeftMounts(left)}; nothing mounted there was touched: ` +
      'unmount it, and the next start deletes the rest');
  }

  /**
   * Deletes a moved-aside brick. One daemon's sweeps and start-up purge run one after another,
   * but another daemon on this host with the same brick roots may be deleting the same tree: an
   * entry it removed first ends a walk with ENOENT, so walk again until the tree is gone.
   */
  private async removeTree(path: string, dev: number): Promise<LeftMount[]> {
    for (let attempt = 1; ; attempt += 1) {
      try {
        return await removeTreeOnDevice(this.fs, path, dev);
      } catch (err) {
        if (errnoCode(err) !== 'ENOENT' || attempt >= 5) throw err;
      }
    }
  }
}
