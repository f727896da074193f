import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { TEMP_PREFIX, writeFileAtomic } from '../atomic-file.js';
import type { SharedClock } from '../clock.js';
import { ErrorCodes, StowageError, errnoCode, messageOf } from '../errors.js';
import type { FsPort } from '../fs-port.js';
import type { Logger } from '../logger.js';
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
  // A temp's name: one left by a kill between the write and the unlink goes with the other temps.
  const probe = join(dir, `${TEMP_PREFIX}clock-probe-${randomBytes(6).toString('hex')}`);
  const before = Date.now();
  await fs.writeFile(probe, '').catch((err: unknown) => {
    throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `cannot write in the store's cluster directory ${dir} (${errnoCode(err) ?? messageOf(err)}): a node writes its record there`);
  });
  try {
    clock.observe(before, Date.now(), (await fs.stat(probe)).mtimeMs);
  } finally {
    await fs.unlink(probe).catch(() => undefined);
  }
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/**
 * Refuses to start as `nodeId` while another daemon heartbeats under that id: its record is fresh
 * (on the storage's clock) and names another instance. Two daemons under one id would take each
 * other's mount markers for their own, and a remove on one would delete what the other has
 * mounted. Taken as this node's own: a record without an instance (a version before it) and one
 * of this root's instance. A root whose id file was lost or damaged cannot tell its own dead run
 * from another daemon (a host name or a pid names no machine: clones share the one, pid
 * namespaces reuse the other), so it waits until that record is stale, as a new root does.
 */
export function assertNodeIdFree(views: readonly NodeView[], nodeId: string, instance: string | undefined, staleAfterMs: number): void {
  const other = views.find((view) => view.record.nodeId === nodeId && !view.stale
    && view.record.instance !== undefined && view.record.instance !== instance);
  if (!other) return;
  throw new StowageError(ErrorCodes.INVALID_OPTION, sharedIdMessage(nodeId, other.record) +
    `: every node sharing a store needs its own node id. If that daemon has stopped, this one starts once its last heartbeat (${seconds(other.heartbeatAgeMs)} ago) is more than ${seconds(staleAfterMs)} old`,
  { node: nodeId });
}

function sharedIdMessage(nodeId: string, record: NodeRecord): string {
  return `node id ${nodeId} is in use on this store by another stowage daemon (host ${record.host}, pid ${record.pid})`;
}

/** How often two daemons under one id are said again while it lasts. */
const SAID_AGAIN_MS = 10 * 60 * 1000;

/**
 * Reads this node's record before each rewrite: another instance's content there is said when
 * first seen, then every ten minutes while it lasts (only a person can stop one of the two).
 */
export function ownRecordWatch(fs: FsPort, file: string, instance: string, log: Logger): () => Promise<void> {
  let saidAt = Number.NEGATIVE_INFINITY;
  return async () => {
    const other = await recordOfAnotherInstance(fs, file, instance);
    if (!other || Date.now() - saidAt < SAID_AGAIN_MS) return;
    saidAt = Date.now();
    log.error(other);
  };
}

/**
 * This node's record as it is on the store now, read before this daemon writes it again: another
 * instance's content there means another daemon writes under this node id (both started at the
 * same moment, or past the start check). Undefined when it is this daemon's own, or unreadable.
 */
async function recordOfAnotherInstance(fs: FsPort, file: string, instance: string): Promise<string | undefined> {
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
