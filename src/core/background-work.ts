import { describeCause } from './errors.js';
import type { Logger } from './logger.js';

/**
 * Work a backend runs after answering (purges, brick sweeps, a create still making its
 * filesystem). Failures are logged, never thrown: the caller has already been answered.
 * `settle` is what `dispose` and tests wait on.
 */
export class BackgroundWork {
  private readonly running = new Set<Promise<unknown>>();
  private queue: Promise<void> = Promise.resolve();

  constructor(private readonly log: Logger) {}

  /**
   * Starts `task` once the current turn of the event loop has ended, so after the answer of
   * the request that asked for it has been written: a vfs remove's purge (about ten system
   * calls for an empty volume) ran before its answer, and now runs while the caller reads it.
   * A failure is logged as `<failure>: <cause>`.
   */
  start(failure: string, task: () => Promise<void>): Promise<void> {
    return this.track(new Promise<void>((resolve) => setImmediate(resolve)).then(() => this.guarded(failure, task)));
  }

  /** Runs `task` after every task enqueued before it, one at a time. */
  enqueue(failure: string, task: () => Promise<void>): Promise<void> {
    this.queue = this.queue.then(() => this.guarded(failure, task));
    return this.track(this.queue);
  }

  /** Counts a caller's own promise as background work until it ends; returns it unchanged. */
  track<T>(task: Promise<T>): Promise<T> {
    const tracked = task.then(() => undefined, () => undefined).finally(() => this.running.delete(tracked));
    this.running.add(tracked);
    return task;
  }

  /** Waits until nothing runs, including work started while waiting. */
  async settle(): Promise<void> {
    while (this.running.size > 0) await Promise.allSettled([...this.running]);
  }

  private async guarded(failure: string, task: () => Promise<void>): Promise<void> {
    try {
      await task();
    } catch (err) {
      this.log.error(`${failure}: ${describeCause(err)}`);
    }
  }
}
