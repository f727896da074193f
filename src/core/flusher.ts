import { constants } from 'node:fs';
import type { FileHandle } from 'node:fs/promises';
import type { FsPort } from './fs-port.js';
import { openRegularOn } from './local-fs.js';
import type { Logger } from './logger.js';
import { messageOf } from './errors.js';

type SyncableHandle = Pick<FileHandle, 'sync' | 'close'>;

interface Round {
  files: Map<string, SyncableHandle>;
  dirs: Set<string>;
  done: Promise<void>;
  /** Paths whose flush failed in this round, with the error. */
  failed: Map<string, unknown>;
  /** Someone waits for this round (or it is full): it starts as soon as the previous one ended. */
  urgent: boolean;
  /** Starts the round now, once it is its turn; unset before then and after it started. */
  kick?: () => void;
}

/**
 * How long a round waits for more writes before it starts. One request at a time (the way
 * Docker sends them) would otherwise flush each registry entry alone, and on a journaled
 * filesystem every fsync commits the journal, which holds up the next request's file creations
 * while the commit is written (Create 570-660/s with a round per request, 935-1007/s without
 * flushing at all, on ext4 with a journal). Nobody waits for these rounds but the first mount
 * of a volume, which starts its round at once.
 */
export const FLUSH_DELAY_MS = 50;
/** A round with this many open files starts at once: each holds a descriptor until then. */
export const MAX_ROUND_FILES = 256;

/**
 * Group commit for records that must reach the disk soon, but need not hold up the request that
 * wrote them: a volume's registry entry is on disk before the volume is first mounted (before any
 * data can be written into it), not before its Create answers. Writes queue their open handle
 * (fsynced and closed here) and the directories whose entries changed; one round flushes
 * everything queued meanwhile, so requests share the disk's flushes. A round starts FLUSH_DELAY_MS
 * after its first write (once the previous round ended), or at once when someone waits for it.
 */
export class Flusher {
  private next?: Round;
  private running: Promise<void> = Promise.resolve();
  /** The round that holds (or held, until it ended) each queued path's latest write. */
  private readonly roundOf = new Map<string, Round>();
  /** Paths whose last flush failed, retried by the next `durable` call. */
  private readonly failedPaths = new Map<string, unknown>();

  /**
   * `urgent(path)`: files for which the round starts at once. On a network filesystem a written
   * file's content may reach the server only when it is flushed, while its new name is visible
   * to other nodes at once: those should not wait.
   */
  constructor(
    private readonly fs: FsPort,
    private readonly log: Logger,
    private readonly delayMs = FLUSH_DELAY_MS,
    private readonly urgent: (path: string) => boolean = () => false,
  ) {}

  /** Takes over `handle` (of the file now at `path`): it is fsynced and closed in the next round. */
  file(path: string, handle: SyncableHandle): void {
    const round = this.open();
    const earlier = round.files.get(path);
    // A newer write of the same path in one round: the older handle only needs closing.
    if (earlier) void earlier.close().catch(() => undefined);
    round.files.set(path, handle);
    this.roundOf.set(path, round);
    this.failedPaths.delete(path);
    if (round.files.size >= MAX_ROUND_FILES || this.urgent(path)) this.hurry(round);
  }

  /** Queues an fsync of `dir`, whose entries changed (a file linked, renamed or unlinked there). */
  directory(dir: string): void {
    const round = this.open();
    round.dirs.add(dir);
    this.roundOf.set(dir, round);
    this.failedPaths.delete(dir);
    if (this.urgent(dir)) this.hurry(round);
  }

  /**
   * Resolves once the last write queued for `path` is on disk (at once when none is pending);
   * rejects when flushing it failed.
   */
  async durable(path: string): Promise<void> {
    const round = this.roundOf.get(path);
    if (round) {
      this.hurry(round);
      await round.done;
    }
    if (!this.failedPaths.has(path)) return;
    // Flushing failed before (EIO, a full disk): try again now, and fail the caller if it still does.
    // The file is on storage other machines write too: whatever took its name is never opened
    // unless it is a regular file.
    const opened = await openRegularOn(this.fs, path, constants.O_RDONLY | constants.O_NONBLOCK);
    if ('notRegular' in opened) throw new Error(`cannot flush ${path}: it is not a regular file (${opened.notRegular})`);
    try { await opened.sync(); } finally { await opened.close(); }
    this.failedPaths.delete(path);
  }

  /** Resolves when everything queued so far is on disk or has failed (failures are logged). */
  async drain(): Promise<void> {
    while (this.next) {
      const round = this.next;
      this.hurry(round);
      await round.done;
    }
    await this.running;
  }

  /**
   * Starts the round once the code running now is done: a write queues its file and then its
   * directory, and both must land in the same round (a file flushed without its new name is not
   * durable yet).
   */
  private hurry(round: Round): void {
    round.urgent = true;
    queueMicrotask(() => round.kick?.());
  }

  get pending(): number {
    return this.roundOf.size;
  }

  private open(): Round {
    if (this.next) return this.next;
    let start!: () => void;
    const gate = new Promise<void>((resolve) => { start = resolve; });
    const round: Round = { files: new Map(), dirs: new Set(), failed: new Map(), done: Promise.resolve(), urgent: false };
    round.done = gate.then(() => this.flush(round));
    this.next = round;
    // The round starts after the one running now, and after a short wait (or at once when
    // someone needs it), so every request that wrote meanwhile joins it.
    this.running = this.running.then(() => new Promise<void>((resolve) => {
      let timer: NodeJS.Timeout | undefined;
      const go = () => {
        if (!round.kick) return;
        round.kick = undefined;
        clearTimeout(timer);
        if (this.next === round) this.next = undefined;
        start();
        round.done.then(resolve, resolve);
      };
      round.kick = go;
      if (round.urgent) {
        go();
        return;
      }
      // Unref'd: a pending round never keeps a process alive (a daemon drains at its stop).
      timer = setTimeout(go, this.delayMs);
      timer.unref();
    }));
    return round;
  }

  private async flush(round: Round): Promise<void> {
    // Files first: a directory's fsync then also covers their new names.
    await Promise.all([...round.files].map(async ([path, handle]) => {
      try {
        await handle.sync();
      } catch (err) {
        round.failed.set(path, err);
      } finally {
        await handle.close().catch(() => undefined);
      }
    }));
    await Promise.all([...round.dirs].map(async (dir) => {
      try {
        // O_DIRECTORY: a device that took the directory's name is refused before its driver runs.
        const handle = await this.fs.open(dir, constants.O_RDONLY | constants.O_DIRECTORY);
        try { await handle.sync(); } finally { await handle.close(); }
      } catch (err) {
        // Some filesystems refuse fsync on a directory; the files' own fsyncs still happened.
        if ((err as { code?: unknown }).code !== 'EINVAL') round.failed.set(dir, err);
      }
    }));
    for (const [path, err] of round.failed) {
      this.failedPaths.set(path, err);
      this.log.error(`could not flush ${path} to disk (retried before its volume is next used): ${messageOf(err)}`);
    }
    for (const [path, owner] of this.roundOf) if (owner === round) this.roundOf.delete(path);
  }
}
