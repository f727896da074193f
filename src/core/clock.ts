/** Where times that several nodes compare come from. */
export interface Clock {
  /** Milliseconds since the epoch on the cluster's clock. */
  now(): number;
  /** This node's clock minus the cluster's clock, in ms (0 for a node on its own). */
  readonly localOffsetMs: number;
}

/**
 * The shared storage's clock: after writing a file there, its mtime is the storage's idea of
 * "now". Nodes whose own clocks disagree still agree on these times. Without a shared
 * directory the local clock is used.
 */
export class SharedClock implements Clock {
  private offsetMs = 0;

  now(): number {
    return Date.now() - this.offsetMs;
  }

  get localOffsetMs(): number {
    return this.offsetMs;
  }

  /**
   * Learns the offset from a file written to shared storage between local times `before` and
   * `after`: its mtime is the storage's clock at that moment.
   */
  observe(before: number, after: number, mtimeMs: number): number {
    this.offsetMs = Math.round((before + after) / 2 - mtimeMs);
    return this.offsetMs;
  }
}

export function isoTime(ms: number): string {
  return new Date(ms).toISOString();
}
