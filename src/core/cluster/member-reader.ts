import { constants } from 'node:fs';
import { dirname, join } from 'node:path';
import type { Clock } from '../clock.js';
import { isoTime } from '../clock.js';
import { errnoCode, isGoneOrStale, messageOf } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { openRegularOn } from '../local-fs.js';
import { MEMBERS_DIR, NotNodeDir, inNodeDir, type NodeDirCalls } from './node-dir.js';
import type { Logger } from '../logger.js';
import { isValidNodeId, isValidVolumeName } from '../names.js';
import { parseRecordText } from '../schema/parse-record.js';
import {
  CLUSTER_LAYOUT, clusterPaths, nodeRecordSchema, type InvalidNodeRecord, type NodeRecord, type NodeView,
} from './node-record.js';

/** A node record is a few KiB even with many mounts; anything far larger is not one. */
export const MAX_RECORD_BYTES = 4 * 1024 * 1024;
/** Whether an invalid entry, as `read` names them, belongs to `nodeId`'s record or markers. */
export function entryOfNode(file: string, nodeId: string): boolean {
  return file === `${nodeId}.json` || file === `${CLUSTER_LAYOUT.mounts}/${nodeId}` || file.startsWith(`${CLUSTER_LAYOUT.mounts}/${nodeId}/`);
}

const unknownMounts = (unreadable: ReadonlyMap<string, string>, id: string) => {
  const problem = unreadable.get(id);
  return problem === undefined ? {} : { markersUnreadable: problem };
};

/** How long a record readdir lists may answer ENOENT before it counts as invalid (see readListedRecord). */
const RECORD_REOPEN_MS = 3_000;

/**
 * Reads what every node published in the shared cluster directory: the records in `members/`
 * and the markers in `mounts/`. Another machine wrote all of it: names are checked, records
 * parsed with their schema, symlinks refused, and whatever is invalid is reported (once per file
 * in the log) and skipped.
 */
export class MemberReader {
  private readonly paths: ReturnType<typeof clusterPaths>;
  /** Files already reported as invalid, so each is logged once rather than every heartbeat. */
  private readonly reported = new Set<string>();

  constructor(
    private readonly fs: FsPort,
    dir: string,
    private readonly clock: Pick<Clock, 'now'>,
    private readonly staleAfterMs: number,
    private readonly log: Logger,
  ) {
    this.paths = clusterPaths(dir);
  }

  /**
   * `except`: a node whose record and markers are not read (nor reported): this node's own,
   * when the caller knows its own state better than its last published record does.
   */
  async read(options: { except?: string } = {}): Promise<{ views: NodeView[]; invalid: InvalidNodeRecord[] }> {
    // Listed and read through a descriptor: refused, not followed, where a symlink took the place of members/ or a directory above it.
    return inNodeDir(this.fs, this.paths.members, (dir) => this.readIn(dir, options.except), MEMBERS_DIR);
  }

  private async readIn(dir: NodeDirCalls, except: string | undefined): Promise<{ views: NodeView[]; invalid: InvalidNodeRecord[] }> {
    const files = await dir.names();
    const now = this.clock.now();
    const views: NodeView[] = [];
    const invalid: InvalidNodeRecord[] = [];
    const { markers, unreadable } = await this.readMarkers(invalid, except);
    for (const file of files) {
      if (file.startsWith('.')) continue; // temp files of writers in progress
      const id = file.endsWith('.json') ? file.slice(0, -'.json'.length) : '';
      if (except !== undefined && id === except) continue;
      try {
        if (!isValidNodeId(id)) throw new Error('the file name is not <node id>.json');
        const read = await this.readListedRecord(dir, file);
        if (!read) continue;
        const record: NodeRecord = parseRecordText(nodeRecordSchema, read.text, `node record ${file}`);
        if (record.nodeId !== id) throw new Error(`it names node ${record.nodeId}, not ${id}`);
        const age = Math.max(0, now - read.st.mtimeMs);
        views.push({ record, mounted: markers.get(id) ?? [], ...unknownMounts(unreadable, id), lastHeartbeat: isoTime(read.st.mtimeMs),
          heartbeatAgeMs: age, stale: age > this.staleAfterMs });
        markers.delete(id);
        unreadable.delete(id);
      } catch (err) {
        this.invalidEntry(invalid, file.slice(0, 200), errnoCode(err) === 'ELOOP' ? 'a symbolic link, not a record' : messageOf(err));
      }
    }
    // Markers of a node without a valid record: a node that stopped before it ever published
    // (or whose record was deleted by hand). They still count, as a node that stopped; so does
    // a marker directory that cannot be read, which may hide any volume.
    for (const id of unreadable.keys()) if (!markers.has(id)) markers.set(id, []);
    for (const [id, mounted] of markers) {
      if (mounted.length === 0 && !unreadable.has(id)) continue;
      views.push({
        record: { format: 2, nodeId: id, version: 'unknown', host: 'unknown', pid: 0, startedAt: '', clockOffsetMs: 0, containers: {},
          docker: { reachable: false, error: 'no node record' } },
        mounted, ...unknownMounts(unreadable, id), lastHeartbeat: 'never', heartbeatAgeMs: Number.POSITIVE_INFINITY, stale: true,
      });
    }
    return { views: views.sort((a, b) => a.record.nodeId.localeCompare(b.record.nodeId)), invalid };
  }

  /**
   * Reads a record readdir just listed. Its writer replaces it by rename at every heartbeat and
   * mount, which never leaves the name missing; but a GlusterFS client that cached the entry
   * answers ENOENT for the replaced file until its cache lapses (about a second), at the open or
   * at the stat or read that follow, or ESTALE once the handle it opened names the replaced
   * file. Skipping the record then would hide that node's containers and mounts from a remove,
   * so either anywhere is retried from the open until the read works or a fresh listing no
   * longer has the name (the node was forgotten); undefined then.
   */
  private async readListedRecord(dir: NodeDirCalls, file: string): Promise<{ text: string; st: { mtimeMs: number } } | undefined> {
    const path = dir.at(file);
    const deadline = Date.now() + RECORD_REOPEN_MS;
    for (;;) {
      try {
        // A symlink planted in the members directory is refused (ELOOP), never read; a FIFO or a
        // device there is never opened (it would hang open(), or run the device's driver here).
        const opened = await openRegularOn(this.fs, path, constants.O_RDONLY | constants.O_NONBLOCK);
        if ('notRegular' in opened) throw new Error('not a regular file');
        const handle = opened;
        try {
          const st = await handle.stat();
          if (st.size > MAX_RECORD_BYTES) throw new Error(`larger than ${MAX_RECORD_BYTES} bytes`);
          return { text: await handle.readFile('utf8'), st: { mtimeMs: Number(st.mtimeMs) } };
        } finally {
          await handle.close();
        }
      } catch (err) {
        if (!isGoneOrStale(err)) throw err;
        if (!(await dir.names()).includes(file)) return undefined;
        if (Date.now() >= deadline) throw new Error(`listed but not found for ${RECORD_REOPEN_MS / 1000} s`);
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
    }
  }

  /**
   * Volumes with a marker, per node directory under `mounts/` (invalid names reported and
   * skipped), and the node directories that could not be read, with why. Each is read through
   * its descriptor (node-dir.ts): a symlink there is never followed, and a node whose directory
   * cannot be read is not taken to mount nothing.
   */
  private async readMarkers(invalid: InvalidNodeRecord[], except: string | undefined):
    Promise<{ markers: Map<string, string[]>; unreadable: Map<string, string> }> {
    const result = new Map<string, string[]>();
    const unreadable = new Map<string, string>();
    // No mounts/ at all (a store no layout-2 daemon has started on yet, or one deleted by hand):
    // no markers, which is what the directory holds.
    const nodes = await inNodeDir(this.fs, this.paths.mounts, (dir) => dir.names()).catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return [] as string[];
      throw err;
    });
    for (const node of nodes) {
      if (node.startsWith('.') || node === except) continue;
      const where = `${CLUSTER_LAYOUT.mounts}/${node.slice(0, 200)}`;
      if (!isValidNodeId(node)) {
        this.invalidEntry(invalid, where, 'not a node id');
        continue;
      }
      let names: string[];
      try {
        names = await inNodeDir(this.fs, join(this.paths.mounts, node), (dir) => dir.names());
      } catch (err) {
        if (errnoCode(err) === 'ENOENT') continue;
        const problem = err instanceof NotNodeDir ? `${err.found}, not a directory of mount markers` : messageOf(err);
        unreadable.set(node, err instanceof NotNodeDir ? `${where} is ${problem}` : `${where}: ${problem}`);
        this.invalidEntry(invalid, where, problem);
        continue;
      }
      const volumes: string[] = [];
      for (const name of names) {
        if (name.startsWith('.')) continue;
        if (isValidVolumeName(name)) volumes.push(name);
        else this.invalidEntry(invalid, `${where}/${String(name).slice(0, 200)}`, 'not a volume name');
      }
      result.set(node, volumes.sort());
    }
    return { markers: result, unreadable };
  }

  private invalidEntry(invalid: InvalidNodeRecord[], file: string, problem: string): void {
    invalid.push({ file, problem });
    if (!this.reported.has(file)) {
      this.reported.add(file);
      this.log.warn(`skipping ${JSON.stringify(file)} in ${dirname(this.paths.members)}: ${problem}`);
    }
  }
}
