import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { writeFileAtomic } from '../atomic-file.js';
import { ErrorCodes, StowageError } from '../errors.js';
import { readFileNoFollow } from '../safe-path.js';
import type { FsPort } from '../fs-port.js';
import type { NodeView } from './node-record.js';

export const INSTANCE_FILE = 'node-instance';
const INSTANCE = /^[0-9a-f]{32}$/;

/**
 * The state root's own random id, made at its first start and kept: it tells this node's
 * earlier runs (same root, which the root lock now holds) from another daemon that was given the
 * same node id, on another machine or another root.
 */
export async function rootInstance(fs: FsPort, root: string): Promise<string> {
  const path = join(root, INSTANCE_FILE);
  const text = await readFileNoFollow(fs, path);
  const kept = text?.trim();
  if (kept !== undefined && INSTANCE.test(kept)) return kept;
  const made = randomBytes(16).toString('hex');
  await writeFileAtomic(fs, path, `${made}\n`, { durable: true });
  return made;
}

const seconds = (ms: number) => `${Math.round(ms / 1000)} s`;

/**
 * Refuses to start as `nodeId` while another daemon heartbeats under that id: its record names
 * another instance and is fresh. Two daemons under one id would take each other's mount
 * markers for their own, and a remove on one would delete what the other has mounted. A record
 * without an instance (written by a version before it) is taken as this node's own.
 */
export function assertNodeIdFree(views: readonly NodeView[], nodeId: string, instance: string, staleAfterMs: number): void {
  const other = views.find((view) => view.record.nodeId === nodeId && !view.stale
    && view.record.instance !== undefined && view.record.instance !== instance);
  if (!other) return;
  const { host, pid } = other.record;
  throw new StowageError(ErrorCodes.INVALID_OPTION,
    `node id ${nodeId} is in use on this store by another stowage daemon (host ${host}, pid ${pid}, last heartbeat ${seconds(other.heartbeatAgeMs)} ago): ` +
    `every node sharing a store needs its own node id. If that daemon has stopped, this one starts once its last heartbeat is more than ${seconds(staleAfterMs)} old`,
    { node: nodeId });
}
