import { join } from 'node:path';
import { z } from 'zod';
import { ErrorCodes, StowageError } from '../errors.js';
import type { ContainerRef } from '../container-references.js';
import { isValidMountId, isValidNodeId, isValidVolumeName } from '../names.js';

export type { ContainerRef } from '../container-references.js';

const volumeName = z.string().refine(isValidVolumeName, 'not a valid volume name');

/**
 * Layout 2 of the shared cluster directory:
 * - `members/<node>.json`: each node's record (format 2), rewritten at every heartbeat; its
 *   mtime, set by the storage, is the heartbeat;
 * - `mounts/<node>/<volume>`: an empty marker per volume the node mounts, created (O_EXCL)
 *   before the node's first mount of the volume answers and unlinked after its last unmount;
 * - `nodes`: a regular file where layout 1 kept a directory of format-1 records holding the
 *   mounts. A daemon of layout 1 makes that directory at start (`mkdir -p`) and fails on the
 *   file, so it never runs beside nodes whose mounts it cannot see.
 */
export const CLUSTER_LAYOUT = { members: 'members', mounts: 'mounts', legacyNodes: 'nodes' } as const;

export function clusterPaths(dir: string): { members: string; mounts: string; legacyNodes: string; locks: string } {
  return {
    members: join(dir, CLUSTER_LAYOUT.members),
    mounts: join(dir, CLUSTER_LAYOUT.mounts),
    legacyNodes: join(dir, CLUSTER_LAYOUT.legacyNodes),
    locks: join(dir, 'locks'),
  };
}

const containersSchema = z.record(volumeName, z.array(z.object({
  id: z.string().max(128),
  name: z.string().max(256),
  state: z.string().max(32),
})));

const commonFields = {
  nodeId: z.string().refine(isValidNodeId, 'not a valid node id'),
  version: z.string().max(100),
  host: z.string().max(255),
  pid: z.number().int(),
  startedAt: z.string().max(64),
  /** The writer's state root's id (node-instance.ts); absent in records of versions before it. */
  instance: z.string().regex(/^[0-9a-f]{32}$/).optional(),
  /** This node's clock minus the storage's clock when it wrote the record. */
  clockOffsetMs: z.number().finite(),
  /** Containers per volume, when the node could reach its Docker engine. */
  containers: containersSchema,
  // Records of early versions may lack it. The default has no `configured`, so such a record is
  // taken at its word (see containersUnknown), as those versions were.
  docker: z.object({
    reachable: z.boolean(),
    error: z.string().max(2000).optional(),
    /** Whether the node watches an engine at all; absent in records of versions before it. */
    configured: z.boolean().optional(),
    /** When the engine last listed the containers above; absent while it never has. */
    listedAt: z.string().max(64).optional(),
  }).default({ reachable: false, error: 'not reported' }),
};

/**
 * What each node publishes about itself in `members/`, rewritten at every heartbeat. Its mounts
 * are marker files instead (see CLUSTER_LAYOUT). Another machine wrote it: everything in it is
 * checked here before anyone uses it.
 */
export const nodeRecordSchema = z.object({ format: z.literal(2), ...commonFields });

/** A record of layout 1 (`nodes/<node>.json`), which also held the node's mounts; read only to migrate. */
export const legacyNodeRecordSchema = z.object({
  format: z.literal(1),
  ...commonFields,
  /** Mount IDs and counts per volume on that node. */
  mounts: z.record(volumeName, z.record(z.string().refine(isValidMountId, 'not a valid mount id'), z.number().int().nonnegative())),
});

export type NodeRecord = z.infer<typeof nodeRecordSchema>;
export type LegacyNodeRecord = z.infer<typeof legacyNodeRecordSchema>;

/** A node as others see it: its record, the volumes it mounts, and the heartbeat age on the shared clock. */
export interface NodeView {
  record: NodeRecord;
  /** Volumes with a mount marker of this node. */
  mounted: string[];
  /**
   * Why its marker directory could not be read (a symlink or a file where it should be): which
   * volumes it mounts is unknown, so it counts as mounting every volume; absent when read.
   */
  markersUnreadable?: string;
  lastHeartbeat: string;
  heartbeatAgeMs: number;
  stale: boolean;
}

/** A file in the members directory that is not a valid node record: skipped, and shown as such. */
export interface InvalidNodeRecord {
  file: string;
  problem: string;
}

/**
 * Human summary of one node's use of a volume, or undefined when it does not use it. `mounts`
 * is a count for this node, `true` for another node (its marker says mounted, not how often).
 */
export function describeUse(
  use: { mounts: number | boolean; containers: Record<string, ContainerRef[]>; markersUnreadable?: string }, volume: string,
): string | undefined {
  const containers: ContainerRef[] = use.containers[volume] ?? [];
  if (!use.mounts && containers.length === 0 && use.markersUnreadable === undefined) return undefined;
  const parts: string[] = [];
  if (use.markersUnreadable !== undefined) parts.push(`mounts unknown (${use.markersUnreadable})`);
  if (use.mounts === true) parts.push('mounted');
  else if (use.mounts) parts.push(`${use.mounts} mount(s)`);
  for (const c of containers) parts.push(`container ${c.name} (${c.id.slice(0, 12)}, ${c.state})`);
  return parts.join(', ');
}

/**
 * True when the node watches a Docker engine that has not listed its containers since the
 * node's daemon started: any of them may reference any volume. Records of versions before
 * `configured` existed are taken at their word, as those versions did.
 */
export const containersUnknown = (node: NodeView): boolean => node.record.docker.configured === true && node.record.docker.listedAt === undefined;

/** `forget` of a node whose record does not parse: not read, so neither known stale nor known to be stowage's to delete. */
export function invalidRecordNotForgotten(nodeId: string, invalid: InvalidNodeRecord, clusterDir: string): StowageError {
  return new StowageError(ErrorCodes.INVALID_REQUEST,
    `the record of node ${nodeId} (${invalid.file}) is not valid (${invalid.problem}), so it is not forgotten: whether that node ` +
    `still runs cannot be read from it. If no stowage daemon runs as ${nodeId}, delete that file in the cluster directory ${clusterDir} by hand`,
    { node: nodeId });
}
