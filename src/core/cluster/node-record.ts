/** A container on some node that references a volume (running or stopped). */
export interface ContainerRef {
  id: string;
  name: string;
  state: string;
}

/**
 * What each node publishes about itself in the shared directory, rewritten at every heartbeat
 * and whenever its references change. The file's mtime, set by the storage, is the heartbeat.
 */
export interface NodeRecord {
  format: 1;
  nodeId: string;
  version: string;
  host: string;
  pid: number;
  startedAt: string;
  /** This node's clock minus the storage's clock when it wrote the record. */
  clockOffsetMs: number;
  /** Mount IDs and counts per volume on this node. */
  mounts: Record<string, Record<string, number>>;
  /** Containers per volume, when the node could reach its Docker engine. */
  containers: Record<string, ContainerRef[]>;
  docker: { reachable: boolean; error?: string };
}

/** A node as others see it: its record plus the heartbeat age on the shared clock. */
export interface NodeView {
  record: NodeRecord;
  lastHeartbeat: string;
  heartbeatAgeMs: number;
  stale: boolean;
}

export function isNodeRecord(value: unknown): value is NodeRecord {
  const r = value as Partial<NodeRecord> | null;
  return typeof r === 'object' && r !== null && r.format === 1 && typeof r.nodeId === 'string'
    && typeof r.mounts === 'object' && r.mounts !== null && typeof r.containers === 'object' && r.containers !== null;
}

/** Human summary of one node's use of a volume, or undefined when it does not use it. */
export function describeUse(record: NodeRecord, volume: string): string | undefined {
  const mounts = Object.values(record.mounts[volume] ?? {}).reduce((a, b) => a + b, 0);
  const containers = record.containers[volume] ?? [];
  if (mounts === 0 && containers.length === 0) return undefined;
  const parts: string[] = [];
  if (mounts > 0) parts.push(`${mounts} mount(s)`);
  for (const c of containers) parts.push(`container ${c.name} (${c.id.slice(0, 12)}, ${c.state})`);
  return parts.join(', ');
}
