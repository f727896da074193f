/** A container on some node that references a volume (running or stopped). */
export interface ContainerRef {
  id: string;
  name: string;
  state: string;
}

export interface ContainerScan {
  reachable: boolean;
  error?: string;
  /** Containers per volume of our driver. */
  byVolume: Record<string, ContainerRef[]>;
}

/** Container states in which the engine holds the container's volume mounts. */
export const LIVE_STATES: ReadonlySet<string> = new Set(['running', 'paused', 'restarting']);

/**
 * The port for "which containers on this node reference which of our volumes": the cluster
 * publishes it, remove checks it, release and mount reconciliation ask it. The local container
 * engine answers (the Docker adapter in src/drivers/docker-engine is bound to it in the container).
 */
export interface ContainerReferences {
  /** False when there is no engine to ask: then nothing is ever reconciled against it. */
  readonly configured: boolean;
  /** Never rejects: an engine that cannot be asked is reported as `reachable: false` with the reason. */
  scan(): Promise<ContainerScan>;
  /**
   * Pauses a running container (its processes are frozen until unpause), for a consistent
   * snapshot; absent where the engine cannot.
   */
  pause?(id: string): Promise<void>;
  unpause?(id: string): Promise<void>;
  /** Calls `listener` whenever a container changes (created, started, stopped, removed). */
  onEvent(listener: () => void): void;
  /**
   * A number that changes with every container event and every loss or (re)connection of the
   * event stream; undefined while no stream is connected. Two equal readings mean the engine
   * reported no container change between them, so a scan started at the first is still its answer.
   * Absent where the engine has no event stream: then every check scans.
   */
  changeMark?(): number | undefined;
  /** Stops watching; no listener is called afterwards. */
  stop(): void;
}

/** A node without a container engine: nothing references anything, and it says why. */
export const NO_CONTAINER_REFERENCES: ContainerReferences = {
  configured: false,
  scan: async () => ({ reachable: false, error: 'no container engine is configured', byVolume: {} }),
  onEvent: () => undefined,
  stop: () => undefined,
};
