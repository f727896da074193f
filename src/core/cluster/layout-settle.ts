import { constants } from 'node:fs';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { isoTime, type SharedClock } from '../clock.js';
import { ErrorCodes, StowageError, errnoCode, messageOf } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { openRegularOn } from '../local-fs.js';
import type { Logger } from '../logger.js';
import { isValidNodeId } from '../names.js';
import { parseRecordText } from '../schema/parse-record.js';
import { MAX_RECORD_BYTES } from './member-reader.js';
import { MEMBERS_DIR, NotNodeDir, inNodeDir } from './node-dir.js';
import { clusterPaths, legacyNodeRecordSchema, type LegacyNodeRecord } from './node-record.js';

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/** What the `nodes` file of layout 2 says to whoever finds it. */
const LAYOUT_NOTE = 'stowage cluster layout 2: node records are in members/, mount markers in mounts/<node>/<volume>. ' +
  'This file stops daemons of layout 1 (which kept a nodes/ directory) from starting beside newer ones.\n';

/** What settling the cluster directory's layout needs to know of the node doing it. */
export interface LayoutContext {
  fs: FsPort;
  /** The cluster directory (members/, mounts/, locks/, nodes). */
  dir: string;
  nodeId: string;
  clock: SharedClock;
  staleAfterMs: number;
  log: Logger;
}

/**
 * Moves a layout-1 directory (`nodes/`, records holding the mounts) out of the way and leaves
 * the `nodes` file in its place, so a daemon of layout 1 fails at start instead of running
 * blind to this node's markers. A format-1 record with a recent heartbeat is a live daemon of
 * layout 1: this node refuses to start beside it. Stale ones are migrated: their mounts become
 * markers and their record a format-2 record with the same heartbeat, so a remove stays refused
 * until the node is forgotten, as before.
 */
export async function settleLayout(ctx: LayoutContext): Promise<void> {
  const paths = clusterPaths(ctx.dir);
  for (let attempt = 0; attempt < 5; attempt += 1) {
    const st = await ctx.fs.lstat(paths.legacyNodes).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (st?.isFile()) return;
    if (!st) {
      try {
        const handle = await ctx.fs.open(paths.legacyNodes, 'wx', 0o600);
        try {
          await handle.writeFile(LAYOUT_NOTE);
        } finally {
          await handle.close();
        }
        return;
      } catch (err) {
        if (errnoCode(err) === 'EEXIST') continue;
        throw err;
      }
    }
    if (!st.isDirectory()) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `${paths.legacyNodes} is neither the layout-2 marker file nor a layout-1 directory; move it aside and start again`);
    }
    await migrateLegacy(ctx, paths);
    const aside = `${paths.legacyNodes}.layout1-${isoTime(Date.now()).replace(/[-:.]/g, '')}`;
    try {
      await ctx.fs.rename(paths.legacyNodes, aside);
      ctx.log.warn(`moved the layout-1 node records aside to ${aside}; daemons older than layout 2 cannot start on this cluster any more`);
    } catch (err) {
      // Another node of layout 2 moved it first.
      if (errnoCode(err) !== 'ENOENT') throw err;
    }
  }
  throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `cannot settle the cluster layout at ${paths.legacyNodes}: it keeps changing`);
}

async function migrateLegacy(ctx: LayoutContext, paths: ReturnType<typeof clusterPaths>): Promise<void> {
  const dir = paths.legacyNodes;
  const now = ctx.clock.now();
  for (const file of await ctx.fs.readdir(dir)) {
    if (file.startsWith('.') || !file.endsWith('.json')) continue;
    const id = file.slice(0, -'.json'.length);
    let record: LegacyNodeRecord;
    let mtimeMs: number;
    try {
      if (!isValidNodeId(id)) throw new Error('the file name is not <node id>.json');
      const opened = await openRegularOn(ctx.fs, join(dir, file), constants.O_RDONLY | constants.O_NONBLOCK);
      if ('notRegular' in opened) throw new Error('not a record file');
      const handle = opened;
      try {
        const st = await handle.stat();
        if (st.size > MAX_RECORD_BYTES) throw new Error('not a record file');
        mtimeMs = st.mtimeMs;
        record = parseRecordText(legacyNodeRecordSchema, await handle.readFile('utf8'), `node record ${file}`);
      } finally {
        await handle.close();
      }
      if (record.nodeId !== id) throw new Error(`it names node ${record.nodeId}, not ${id}`);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') continue;
      ctx.log.warn(`not migrating layout-1 node record ${JSON.stringify(file.slice(0, 200))}: ${messageOf(err)}`);
      continue;
    }
    // This node's own record of an earlier run: its mounts come back from its mount table.
    if (id === ctx.nodeId) continue;
    const age = Math.max(0, now - mtimeMs);
    if (age <= ctx.staleAfterMs) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
        `node ${id} runs stowage ${record.version}, which keeps its mounts in ${dir}/${file} (layout 1; heartbeat ${seconds(age)} ago). ` +
        `This version cannot run beside it: upgrade or stop stowage on node ${id} first; this node can start once ` +
        `that record is stale (${seconds(ctx.staleAfterMs)} after its last heartbeat)`);
    }
    const used = Object.entries(record.mounts).filter(([, ids]) => Object.values(ids).some((n) => n > 0)).map(([volume]) => volume);
    await markStale(ctx, join(paths.mounts, id), used);
    const target = join(paths.members, file);
    const { mounts: _mounts, ...rest } = record;
    await writeFileAtomic(ctx.fs, target, JSON.stringify({ ...rest, format: 2 }), { durable: false });
    // The heartbeat it had: migrating must not make a stopped node look alive.
    await ctx.fs.utimes(target, mtimeMs / 1000, mtimeMs / 1000);
    ctx.log.warn(`migrated the layout-1 record of stale node ${id}${used.length > 0 ? ` with mounts of ${used.join(', ')}` : ''}; ` +
      `forget node ${id} once it is gone for good`);
  }
}

/** Writes a migrated node's markers, never through what another machine put in place of its directory. */
async function markStale(ctx: LayoutContext, markers: string, volumes: readonly string[]): Promise<void> {
  await ctx.fs.mkdir(markers, { recursive: true }).catch((err: unknown) => {
    if (errnoCode(err) !== 'EEXIST') throw err;
  });
  const exists = (err: unknown) => {
    if (errnoCode(err) !== 'EEXIST') throw err;
  };
  await inNodeDir(ctx.fs, markers, async (dir) => {
    for (const volume of volumes) await dir.create(volume).catch(exists);
  }).catch((err: unknown) => {
    if (!(err instanceof NotNodeDir)) throw err;
    throw new StowageError(ErrorCodes.STATE_CORRUPT, `${err.message}. Move it away by hand (what it leads to is not stowage's), then start again`);
  });
}

/**
 * Deletes what a node published in the cluster directory: its mount markers first, then its
 * record, so a crash in between leaves a record to forget again, never a record without markers
 * it had. Files already gone are fine. Another machine may have put anything at `mounts/<node>`:
 * what is not a directory there (a planted symlink, a file) goes as itself, by an unlink, which
 * never follows it, and what it leads to stays. Inside, the names are reached through the
 * directory's descriptor (node-dir.ts); a symlink goes as itself, and a directory is refused,
 * never emptied: the record stays, so that forget can run again once it is moved away.
 */
export async function deleteNodeFiles(fs: FsPort, dir: string, nodeId: string): Promise<void> {
  const paths = clusterPaths(dir);
  const gone = (err: unknown) => {
    if (errnoCode(err) !== 'ENOENT') throw err;
  };
  const markers = join(paths.mounts, nodeId);
  try {
    const dirs: string[] = [];
    await inNodeDir(fs, markers, async (calls) => {
      for (const name of await calls.names()) {
        await calls.unlink(name).catch((err: unknown) => (errnoCode(err) === 'EISDIR' ? dirs.push(name) : gone(err)));
      }
    });
    if (dirs.length > 0) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `${dirs.map((name) => join(markers, name)).join(', ')}: a directory, not a mount ` +
        `marker; stowage does not delete into it, and node ${nodeId} stays known. Move it away by hand, then forget node ${nodeId} again`,
      { node: nodeId });
    }
    // rmdir never follows a symlink swapped in meanwhile (ENOTDIR).
    await fs.rmdir(markers).catch(gone);
  } catch (err) {
    if (err instanceof NotNodeDir) await fs.unlink(markers).catch(gone);
    else gone(err);
  }
  // Through a descriptor: refused when `members` (or a directory above it) is a symlink, even one swapped in meanwhile.
  await inNodeDir(fs, paths.members, (calls) => calls.unlink(`${nodeId}.json`), MEMBERS_DIR).catch(gone);
}
