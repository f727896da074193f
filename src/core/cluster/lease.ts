import { performance } from 'node:perf_hooks';
import { ErrorCodes, StowageError } from '../errors.js';

/**
 * Proof, while it holds, that this node still owns a volume name's cluster lock. The core hands
 * it to the backend with each create and remove; whoever is about to destroy, move or stop
 * anything asks it first, so a node whose lock lapsed (renewals failing, a stalled process)
 * stops before its next destructive step instead of undoing what another node made meanwhile.
 */
export interface Lease {
  /** Aborted once the lock is lost (for calls that can be cancelled). */
  readonly signal: AbortSignal;
  /**
   * Throws E_BACKEND_UNAVAILABLE unless the lock is still certainly held. Call it right before
   * each destructive step, naming the step; `kept` says what stays as it is (default: nothing
   * was deleted), `cause` is the failure that led to the step (an undo's reason).
   */
  assertHeld(step: string, details?: { kept?: string; cause?: unknown }): void;
}

/** The lease of a node-local store, where no other node can take the name: never lost. */
export const LOCAL_LEASE: Lease = {
  signal: new AbortController().signal,
  assertHeld: () => undefined,
};

/**
 * A lease that expires by this process's own clocks: `ttlMs - marginMs` after the start of the
 * last renewal that landed. Both the monotonic and the wall clock are asked and the larger lapse
 * counts, so a process that was paused (SIGSTOP, a blocked event loop, a suspended VM) notices on
 * waking, before its next step, even before its renewal timer had a chance to run.
 */
export class LockLease implements Lease {
  private readonly controller = new AbortController();
  private renewedMono: number;
  private renewedWall: number;
  private lostBecause?: string;
  /** Why the last renewal attempt failed, for the message once time runs out. */
  lastFailure?: string;

  constructor(
    private readonly volume: string,
    private readonly ttlMs: number,
    private readonly marginMs: number,
    started: { mono: number; wall: number },
    private readonly onLost?: (message: string) => void,
  ) {
    this.renewedMono = started.mono;
    this.renewedWall = started.wall;
  }

  static stamp(): { mono: number; wall: number } {
    return { mono: performance.now(), wall: Date.now() };
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }

  /** Milliseconds since the last renewal that landed, by whichever clock moved more. */
  sinceRenewal(): number {
    return Math.max(performance.now() - this.renewedMono, Date.now() - this.renewedWall);
  }

  /** True while held; notices (and records) a lapse by time. */
  held(): boolean {
    if (this.lostBecause !== undefined) return false;
    if (this.sinceRenewal() > this.ttlMs - this.marginMs) {
      this.lose(this.lastFailure ?? 'no renewal landed in time');
    }
    return this.lostBecause === undefined;
  }

  /** A renewal that started at `started` landed: the lock file's expiry is now later than the lease's. */
  renewed(started: { mono: number; wall: number }): void {
    if (this.lostBecause !== undefined) return;
    this.renewedMono = Math.max(this.renewedMono, started.mono);
    this.renewedWall = Math.max(this.renewedWall, started.wall);
    this.lastFailure = undefined;
  }

  lose(reason: string): void {
    if (this.lostBecause !== undefined) return;
    this.lostBecause = reason;
    this.onLost?.(`lost the cluster lock on volume ${this.volume}: ${reason}`);
    this.controller.abort(new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `lost the cluster lock on volume ${this.volume}: ${reason}`,
      { volume: this.volume }));
  }

  assertHeld(step: string, details: { kept?: string; cause?: unknown } = {}): void {
    if (this.held()) return;
    const lapse = this.sinceRenewal() / 1000;
    const seconds = lapse < 10 ? lapse.toFixed(1) : String(Math.round(lapse));
    throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE,
      `lost the cluster lock on volume ${this.volume} (could not renew for ${seconds} s: ${this.lostBecause}): ` +
      `stopped before ${step}; ${details.kept ?? 'nothing was deleted'}; try again`,
      { volume: this.volume, cause: details.cause });
  }
}
