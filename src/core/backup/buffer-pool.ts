/**
 * A fixed number of equal buffers, reused: a reader waits for one to come back instead of
 * allocating, so the buffers in use bound a backup's memory whatever the volume's size.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  private inUse = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly count: number, private readonly size: number) {}

  async take(): Promise<Buffer> {
    while (this.inUse >= this.count) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.inUse += 1;
    return this.free.pop() ?? Buffer.allocUnsafe(this.size);
  }

  give(buffer: Buffer): void {
    this.inUse -= 1;
    this.free.push(buffer);
    this.waiting.shift()?.();
  }
}
