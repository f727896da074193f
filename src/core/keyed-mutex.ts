/**
 * Runs tasks for the same key one after another, and tasks for different keys concurrently.
 * Docker may send Mount and Unmount for one volume at the same moment.
 */
export class KeyedMutex {
  private readonly tails = new Map<string, Promise<unknown>>();

  run<T>(key: string, task: () => Promise<T>): Promise<T> {
    const previous = this.tails.get(key) ?? Promise.resolve();
    const result = previous.then(task, task);
    const tail = result.then(() => undefined, () => undefined);
    this.tails.set(key, tail);
    void tail.then(() => {
      if (this.tails.get(key) === tail) this.tails.delete(key);
    });
    return result;
  }

  /** Number of keys with queued or running work; used by tests and diagnostics. */
  get busyKeys(): number {
    return this.tails.size;
  }
}
