import type { FileHandle } from 'node:fs/promises';

/**
 * Objects kept open for range reads, at most, and how long one stays open unused. A restore or
 * verify reads a pack one chunk at a time, and each open costs five calls through the thread
 * pool (the directories' lstat, open, fstat) and a close; objects never change once written,
 * so a descriptor opened and checked once reads them as well later.
 */
const OPEN_FOR_RANGES = 4;
const IDLE_CLOSE_MS = 1_000;

/** An object opened for range reads: `users` reads hold it open. */
interface OpenObject {
  opened: Promise<FileHandle>;
  users: number;
  lastUsed: number;
}

/** A few objects of a store held open between range reads, closed when unused for a while or on request. */
export class OpenObjects {
  private readonly objects = new Map<string, OpenObject>();
  private idleSweep: NodeJS.Timeout | undefined;

  constructor(private readonly open: (key: string) => Promise<FileHandle>) {}

  /** Runs `read` on the object's descriptor, opening it (once, however many ask at the same time). */
  async use<T>(key: string, read: (handle: FileHandle) => Promise<T>): Promise<T> {
    const object = this.objectOf(key);
    object.users += 1;
    try {
      return await read(await object.opened);
    } finally {
      object.users -= 1;
      object.lastUsed = Date.now();
      void this.close(OPEN_FOR_RANGES, Infinity);
    }
  }

  /** Closes every object no read uses now. */
  async closeIdle(): Promise<void> {
    await this.close(0, 0);
  }

  private objectOf(key: string): OpenObject {
    const known = this.objects.get(key);
    if (known) return known;
    const object: OpenObject = { opened: this.open(key), users: 0, lastUsed: Date.now() };
    // A failed open is not kept: the next read tries again, and reports its own failure.
    object.opened.catch(() => { if (this.objects.get(key) === object) this.objects.delete(key); });
    this.objects.set(key, object);
    this.idleSweep ??= setInterval(() => void this.close(Infinity, IDLE_CLOSE_MS), IDLE_CLOSE_MS).unref();
    return object;
  }

  /** Closes unused objects, least recently used first: while more than `keep` are open, and any unused for `idleMs`. */
  private async close(keep: number, idleMs: number): Promise<void> {
    const now = Date.now();
    const closing: Array<Promise<void>> = [];
    const unused = [...this.objects].filter(([, o]) => o.users === 0).sort(([, a], [, b]) => a.lastUsed - b.lastUsed);
    let open = this.objects.size;
    for (const [key, object] of unused) {
      if (open <= keep && now - object.lastUsed < idleMs) break;
      this.objects.delete(key);
      open -= 1;
      closing.push(object.opened.then((handle) => handle.close()).catch(() => undefined));
    }
    if (this.objects.size === 0 && this.idleSweep) {
      clearInterval(this.idleSweep);
      this.idleSweep = undefined;
    }
    await Promise.all(closing);
  }
}
