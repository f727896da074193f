import { ErrorCodes, StowageError } from '../errors.js';
import { LOCAL_LEASE, type Lease } from './lease.js';
import type { InvalidNodeRecord, NodeView } from './node-record.js';
import type { RestoreClaims } from './restore-claims.js';

export interface ClusterSettings {
  /** How often a node rewrites its record (its heartbeat). @default 5000 */
  heartbeatMs: number;
  /** A node whose record is older than this is stale. @default 30000 */
  staleAfterMs: number;
  /** Clock offsets beyond this are reported. @default 2000 */
  skewWarnMs: number;
  /**
   * Lifetime of a volume name's lock file; the holder renews it every third of it, and stops
   * before its next destructive step once no renewal landed for four fifths of it. @default 30000
   */
  lockTtlMs: number;
  /** How long a create or remove waits for another node's lock on the same name. @default 20000 */
  lockWaitMs: number;
  /** This daemon's version, published in its node record. */
  version: string;
  /**
   * The node-local state root, which keeps this node's instance id (node-instance.ts): without
   * it, another daemon started under the same node id is not detected.
   */
  stateRoot?: string;
}

export const DEFAULT_CLUSTER_SETTINGS: Omit<ClusterSettings, 'version'> = {
  heartbeatMs: 5_000,
  staleAfterMs: 30_000,
  skewWarnMs: 2_000,
  lockTtlMs: 30_000,
  lockWaitMs: 20_000,
};

/**
 * This node's mounts, read live from the mount table at each question: per volume, not as a copy
 * of the whole table, so a heartbeat's marker check and a Get's mount count do not grow with the
 * number of volumes mounted here.
 */
export interface LocalMounts {
  /** Volumes with mount records on this node. */
  mountedVolumes(): string[];
  /** Mounts of `volume` on this node, all mount IDs together (0: none). */
  count(volume: string): number;
}


/**
 * Cross-node coordination for volumes on shared storage. For `local` backends the no-op
 * LocalCluster stands in, so the core calls the same methods either way.
 */
export interface Cluster {
  readonly enabled: boolean;
  start(mounts: LocalMounts): Promise<void>;
  stop(): Promise<void>;
  /**
   * Runs `task` holding the cluster-wide lock of a volume name. The lease tells the task whether
   * it still holds the lock: it is asked before every destructive step (see Lease).
   */
  withLock<T>(name: string, task: (lease: Lease) => Promise<T>): Promise<T>;
  /**
   * Runs a mount of a volume name (`task`) so that no remove on another node can run through it:
   * the node's marker is made first, and the name's lock taken only when a remove may be running
   * (see mount-lock.ts). The task must count the mount before it resolves.
   */
  withMountLock<T>(name: string, task: (lease: Lease) => Promise<T>): Promise<T>;
  /**
   * Throws E_VOLUME_IN_USE naming nodes and containers that still reference the volume; with
   * `force`, only for a mount on a node that is alive (forced-remove.ts).
   */
  assertRemovable(name: string, options: { force: boolean }): Promise<void>;
  /** How other nodes use the volume now (mounts, containers), one line per node; empty when none does. */
  usesElsewhere(name: string): Promise<string[]>;
  /** Status entries about the volume's use across nodes, from the last refresh (cheap). */
  usage(name: string): Record<string, string>;
  /**
   * The volume's first mount on this node: creates its marker, visible to every node when the
   * promise resolves (a remove elsewhere is refused from then on); rejects when it cannot be made.
   */
  markMounted(volume: string): Promise<void>;
  /** The volume's last mount on this node ended: removes its marker. */
  markUnmounted(volume: string): Promise<void>;
  /**
   * Restores claimed for every node sharing the storage (see RestoreClaims); absent where no
   * other node can see a volume. Claims are made and dropped under the name's cluster lock.
   */
  readonly restoreClaims?: RestoreClaims;
  nodes(): Promise<NodeView[]>;
  /** Files of the nodes directory skipped at the last refresh because they are not valid records. */
  invalidNodes(): InvalidNodeRecord[];
  forget(nodeId: string): Promise<void>;
  info(): Record<string, string>;
}

export class LocalCluster implements Cluster {
  readonly enabled = false;
  async start(): Promise<void> {}
  async stop(): Promise<void> {}
  withLock<T>(_name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    return task(LOCAL_LEASE);
  }
  withMountLock<T>(_name: string, task: (lease: Lease) => Promise<T>): Promise<T> {
    return task(LOCAL_LEASE);
  }
  async assertRemovable(): Promise<void> {}
  async usesElsewhere(): Promise<string[]> {
    return [];
  }
  usage(): Record<string, string> {
    return {};
  }
  async markMounted(): Promise<void> {}
  async markUnmounted(): Promise<void> {}
  async nodes(): Promise<NodeView[]> {
    return [];
  }
  invalidNodes(): InvalidNodeRecord[] {
    return [];
  }
  async forget(): Promise<void> {
    throw new StowageError(ErrorCodes.NOT_SUPPORTED, 'this daemon\'s backend is node-local: there are no other nodes to forget');
  }
  info(): Record<string, string> {
    return { cluster: 'off (the backend\'s scope is local)' };
  }
}
