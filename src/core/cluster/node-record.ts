import { z } from 'zod';
import type { ContainerRef } from '../container-references.js';
import { isValidMountId, isValidNodeId, isValidVolumeName } from '../names.js';

export type { ContainerRef } from '../container-references.js';

const volumeName = z.string().refine(isValidVolumeName, 'not a valid volume name');

/**
 * What each node publishes about itself in the shared directory, rewritten at every heartbeat
 * and whenever its mounts change. The file's mtime, set by the storage, is the heartbeat.
 * Another machine wrote it: everything in it is checked here before anyone uses it.
 */
export const nodeRecordSchema = z.object({
  format: z.literal(1),
  nodeId: z.string().refine(isValidNodeId, 'not a valid node id'),
  version: z.string().max(100),
  host: z.string().max(255),
  pid: z.number().int(),
  startedAt: z.string().max(64),
  /** This node's clock minus the storage's clock when it wrote the record. */
  clockOffsetMs: z.number().finite(),
  /** Mount IDs and counts per volume on this node. */
  mounts: z.record(volumeName, z.record(z.string().refine(isValidMountId, 'not a valid mount id'), z.number().int().nonnegative())),
  /** Containers per volume, when the node could reach its Docker engine. */
  containers: z.record(volumeName, z.array(z.object({
    id: z.string().max(128),
    name: z.string().max(256),
    state: z.string().max(32),
  }))),
  // Records of early versions may lack it; it is only shown, so a default is harmless.
  docker: z.object({ reachable: z.boolean(), error: z.string().max(2000).optional() })
    .default({ reachable: false, error: 'not reported' }),
});

export type NodeRecord = z.infer<typeof nodeRecordSchema>;

/** A node as others see it: its record plus the heartbeat age on the shared clock. */
export interface NodeView {
  record: NodeRecord;
  lastHeartbeat: string;
  heartbeatAgeMs: number;
  stale: boolean;
}

/** A file in the nodes directory that is not a valid node record: skipped, and shown as such. */
export interface InvalidNodeRecord {
  file: string;
  problem: string;
}

/** Human summary of one node's use of a volume, or undefined when it does not use it. */
export function describeUse(record: Pick<NodeRecord, 'mounts' | 'containers'>, volume: string): string | undefined {
  const mounts = Object.values(record.mounts[volume] ?? {}).reduce((a, b) => a + b, 0);
  const containers: ContainerRef[] = record.containers[volume] ?? [];
  if (mounts === 0 && containers.length === 0) return undefined;
  const parts: string[] = [];
  if (mounts > 0) parts.push(`${mounts} mount(s)`);
  for (const c of containers) parts.push(`container ${c.name} (${c.id.slice(0, 12)}, ${c.state})`);
  return parts.join(', ');
}
