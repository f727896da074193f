import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import type { SharedClock } from '../clock.js';
import { ErrorCodes, StowageError } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import { processExists } from '../process-exists.js';
import { readFileNoFollow } from '../safe-path.js';
import { parseRecordText } from '../schema/parse-record.js';
import { nodeRecordSchema, type NodeRecord, type NodeView } from './node-record.js';

export const INSTANCE_FILE = 'node-instance';
const INSTANCE = /^[0-9a-f]{32}$/;

/**
 * The state root's own random id, kept from its first start: it tells this node's earlier runs
 * (same root, which the root lock now holds) from another daemon given the same node id, on
 * another machine or another root. `kept` is undefined when the root has none yet, or one that
 * is not an id (damaged): `make` then writes a new one, once the start is allowed.
 */
export async function rootInstance(fs: FsPort, root: string): Promise<{ kept?: string; make: () => Promise<string> }> {
  const path = join(root, INSTANCE_FILE);
  const kept = (await readFileNoFollow(fs, path))?.trim();
  if (kept !== undefined && INSTANCE.test(kept)) return { kept, make: async () => kept };
  return {
    make: async () => {
      const made = randomBytes(16).toString('hex');
      await writeFileAtomic(fs, path, `${made}\n`, { durable: true });
      return made;
    },
  };
}

/**
 * Sets the shared clock from a file written in `dir` now (a name readers skip), so that the
 * ages of the records there are measured on the storage's clock, whatever this machine's says.
 */
export async function learnStorageClock(fs: FsPort, dir: string, clock: SharedClock): Promise<void> {
  const probe = join(dir, `.clock-probe-${randomBytes(6).toString('hex')}`);
  const before = Date.now();
  await writeFileAtomic(fs, probe, '', { durable: false });
  try {
    clock.observe(before, Date.now(), (await fs.stat(probe)).mtimeMs);
  } finally {
    await fs.unlink(probe).catch(() => undefined);
  }
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/** A record this machine wrote from a process that is gone: one of this node's earlier runs, whatever root it had. */
function deadRunHere(record: NodeRecord): boolean {
  return record.host === hostname() && record.pid > 0 && record.pid !== process.pid && !processExists(record.pid);
}

/**
 * Refuses to start as `nodeId` while another daemon heartbeats under that id: its record is fresh
 * (on the storage's clock) and names another instance. Two daemons under one id would take each
 * other's mount markers for their own, and a remove on one would delete what the other has
 * mounted. Taken as this node's own: a record without an instance (a version before it), one of
 * this root's instance, and one this machine wrote from a process that no longer runs (a root
 * whose id was lost).
 */
export function assertNodeIdFree(views: readonly NodeView[], nodeId: string, instance: string | undefined, staleAfterMs: number): void {
  const other = views.find((view) => view.record.nodeId === nodeId && !view.stale
    && view.record.instance !== undefined && view.record.instance !== instance && !deadRunHere(view.record));
  if (!other) return;
  throw new StowageError(ErrorCodes.INVALID_OPTION, sharedIdMessage(nodeId, other.record) +
    `: every node sharing a store needs its own node id. If that daemon has stopped, this one starts once its last heartbeat (${seconds(other.heartbeatAgeMs)} ago) is more than ${seconds(staleAfterMs)} old`,
  { node: nodeId });
}

function sharedIdMessage(nodeId: string, record: NodeRecord): string {
  return `node id ${nodeId} is in use on this store by another stowage daemon (host ${record.host}, pid ${record.pid})`;
}

/**
 * This node's record as it is on the store now, read before this daemon writes it again: another
 * instance's content there means another daemon writes under this node id (both started at the
 * same moment, or past the start check). Undefined when it is this daemon's own, or unreadable.
 */
export async function recordOfAnotherInstance(fs: FsPort, file: string, instance: string): Promise<string | undefined> {
  const text = await readFileNoFollow(fs, file).catch(() => undefined);
  if (text === undefined) return undefined;
  let record: NodeRecord;
  try {
    record = parseRecordText(nodeRecordSchema, text, `node record ${file}`);
  } catch {
    return undefined;
  }
  if (record.instance === undefined || record.instance === instance) return undefined;
  return `${sharedIdMessage(record.nodeId, record)}, which rewrites this node's record: two daemons under one node id take each other's mounts ` +
    'for their own, and a remove on either deletes what the other has mounted; stop one of them and give it its own node id';
}
