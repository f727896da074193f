import type { Stats } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import type { VolumeRecord } from '../../core/backend.js';
import { createFileExclusive, overwriteSameSize, readFileNoFollow, writeFileAtomic } from '../../core/atomic-file.js';
import { ErrorCodes, StowageError, errnoCode, isGoneOrStale, messageOf } from '../../core/errors.js';
import type { Flusher } from '../../core/flusher.js';
import type { FsPort } from '../../core/fs-port.js';
import { DirectoryWatch } from '../../core/directory-watch.js';
import { VOLUMES_DIR, withCheckedDir } from '../../core/cluster/node-dir.js';
import { isLocalPath } from '../../core/local-fs.js';
import type { Logger } from '../../core/logger.js';
import { randomHex } from '../../core/random-hex.js';
import { settleTimeOf } from './directory-times.js';
import { parseRegistryEntry, type RegistryEntry } from './registry-entry.js';
import { decodeSnapshot, encodeSnapshot, type Cached } from './registry-snapshot.js';

const sameStrings = (a: readonly string[], b: readonly string[]): boolean => a.length === b.length && a.every((x, i) => x === b[i]);

const SUFFIX = '.json';
/** Saving the cache waits for a quiet moment; a crash only costs the next start some reads. */
const SNAPSHOT_DELAY_MS = 10_000;
const READ_CONCURRENCY = 64;
/**
 * The volume registry kept in the store itself (one file per volume), so every node that sees
 * the store sees the same volumes. Other nodes change it behind our back, so the cache is only
 * an optimisation: `get` re-checks the file's identity on every call (on a local filesystem,
 * unless the directory's watch shows nothing in it changed since), and `list` re-reads the
 * directory on every call (on a local filesystem, unless its times show it unchanged) and only
 * reads files it has not seen.
 */
export class VolumeRegistry {
  private readonly cache = new Map<string, Cached>();
  private dirty = false;
  private askServer = false;
  private saveTimer?: NodeJS.Timeout;
  private saving?: Promise<void>;
  private storeId = '';
  /** Bumped on every cache change, so a remembered List answer is only reused while it is true. */
  private generation = 0;
  private lastListing?: { raw: string[]; generation: number; records: VolumeRecord[]; epoch: string };
  /**
   * The directory as stat saw it just before the last readdir. `settled`: its times were past
   * their clock tick; otherwise `mark` is the count of `watch` taken before that readdir.
   */
  private lastNames?: { dev: number; ino: number; mtimeMs: number; ctimeMs: number; names: string[]; settled: boolean; mark?: number; watch?: DirectoryWatch };
  /** inotify on the directory, on a local filesystem only: see readNames. */
  private watch?: DirectoryWatch;
  /** `watch`'s count right before each cached entry was last checked: unmoved, `get` answers from the cache. */
  private readonly checkedAt = new Map<string, number>();
  /** Epoch the whole cache was last checked against (or a loaded snapshot's). */
  private checkedEpoch?: string;
  /** Entries already reported as invalid, by identity, so a bad file is logged once, not at every List. */
  private readonly reported = new Set<string>();

  /** @param snapshotFile node-local file keeping the cache between runs: the first List after a restart need not read every entry. */
  constructor(
    private readonly fs: FsPort,
    private readonly dir: string,
    private readonly log: Logger,
    private readonly snapshotFile?: string,
    private readonly flusher?: Flusher,
    /** Whether to watch a local registry directory (off in tests of the fallback). */
    private readonly watchLocal = true,
  ) {}

  /** Loads the cache a previous run saved for the same store; anything else is ignored (see registry-snapshot.ts). */
  async loadSnapshot(storeId: string): Promise<void> {
    if (!this.snapshotFile) return;
    try {
      const saved = decodeSnapshot(await this.fs.readFile(this.snapshotFile, 'utf8'), storeId);
      if (saved?.epoch !== undefined) this.checkedEpoch = saved.epoch;
      for (const [name, cached] of saved?.entries ?? []) this.cache.set(name, cached);
      // Saved again in this format soon, so the next start takes the quick way.
      if (saved && !saved.current) this.changed();
    } catch { /* No snapshot or an unreadable one: the cache fills from the store as before. */ }
    this.storeId = storeId;
  }

  /** Writes the cache snapshot if it changed since the last save, after a save in flight (a dispose must not return under one). */
  async saveSnapshot(): Promise<void> {
    clearTimeout(this.saveTimer);
    this.saveTimer = undefined;
    await this.saving;
    if (!this.snapshotFile || !this.dirty) return;
    this.dirty = false;
    this.saving = writeFileAtomic(this.fs, this.snapshotFile, encodeSnapshot(this.storeId, this.checkedEpoch, this.cache)).catch((err: unknown) => {
      this.log.warn(`could not save the registry cache to ${this.snapshotFile}: ${messageOf(err)}`);
    });
    await this.saving;
  }

  private changed(): void {
    this.generation += 1;
    this.dirty = true;
    if (!this.snapshotFile || this.saveTimer) return;
    this.saveTimer = setTimeout(() => void this.saveSnapshot(), SNAPSHOT_DELAY_MS);
    this.saveTimer.unref();
  }

  private fileOf(name: string): string {
    return join(this.dir, name + SUFFIX);
  }

  /** Registers a volume; false when the name is already taken (possibly by another node). */
  async add(entry: RegistryEntry): Promise<boolean> {
    // Entries are made and unlinked, and the epoch written, through a descriptor of the directory: never through a symlink put there.
    const identity = await withCheckedDir(this.fs, this.dir, VOLUMES_DIR, (base) => createFileExclusive(this.fs,
      join(base, entry.record.name + SUFFIX), JSON.stringify(entry, null, 1), { flusher: this.flusher, flushAs: this.fileOf(entry.record.name) }));
    if (!identity) return false;
    this.cache.set(entry.record.name, { entry, ...identity });
    this.changed();
    return true;
  }

  async delete(name: string): Promise<void> {
    await withCheckedDir(this.fs, this.dir, VOLUMES_DIR, async (base) => {
      await this.fs.unlink(join(base, name + SUFFIX)).catch((err: unknown) => {
        if (errnoCode(err) !== 'ENOENT') throw err;
      });
      this.flusher?.directory(this.dir);
      this.checkedAt.delete(name);
      // After the unlink: a List that sees the new epoch can no longer see the old entry. The
      // volume is gone either way; a missed epoch only delays another node noticing a re-create.
      await this.bumpEpochAt(base).catch((err: unknown) => this.log.warn(`could not mark the removal of ${name}: ${messageOf(err)}`));
    });
    this.cache.delete(name);
    this.changed();
  }

  /**
   * "No such volume" makes Docker forget the volume (and make a `local` one at the next `docker run -v`): not said on
   * the word of a lookup by path, which a symlink swapped in for the directory leads elsewhere, but looked up again here.
   */
  private async assertNoEntryFile(name: string): Promise<void> {
    const there = await withCheckedDir(this.fs, this.dir, VOLUMES_DIR, async (base) => {
      const path = join(base, name + SUFFIX);
      const seen = await this.fs.lstat(path).catch((err: unknown) => { if (errnoCode(err) === 'ENOENT') return undefined; throw err; });
      // A network client's cached attributes may still show an entry another node just unlinked: the server decides, as in get.
      return seen !== undefined && (!this.askServer || (await this.onServer(path, seen)) !== undefined);
    });
    if (there) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `registry entry ${this.fileOf(name)} was missing by its path, yet is in the ` +
        'registry\'s directory: something replaced that directory for a moment (a symbolic link?); nothing was changed, try again', { volume: name });
    }
  }

  /**
   * On a store that is not on a local filesystem, a client may answer stat from what it saw a
   * moment ago (GlusterFS's client keeps stat results for about a second), so an entry another
   * node just unlinked, or replaced, still looks as it was here. `get` then also asks the server:
   * lchown to the owner it already has is forwarded to it and does not follow a link, and the
   * kernel retries it with a fresh lookup when its cached handle is stale. Gone there: ENOENT.
   */
  setAskServer(ask: boolean): void {
    this.askServer = ask;
  }

  /** The entry's attributes as the server has them now, or undefined when it is gone. */
  private async onServer(file: string, seen: Stats): Promise<Stats | undefined> {
    try {
      await this.fs.lchown(file, seen.uid, seen.gid);
      return await this.fs.lstat(file);
    } catch (err) {
      if (isGoneOrStale(err)) return undefined;
      throw err;
    }
  }

  /** Resolves once the volume's entry, as last written by this node, is on disk (see Flusher). */
  durable(name: string): Promise<void> {
    return this.flusher?.durable(this.fileOf(name)) ?? Promise.resolve();
  }

  /** The cached entry without touching storage; for decorating an answer `get` just gave. */
  peek(name: string): RegistryEntry | undefined {
    return this.cache.get(name)?.entry;
  }

  /**
   * The entry of `name`, undefined when it has none. `confirmMissing: false` skips the second
   * look (assertNoEntryFile) for a caller to whom a missed entry costs nothing: a create, which
   * registers through the directory's descriptor with O_EXCL anyway.
   */
  async get(name: string, { confirmMissing = true }: { confirmMissing?: boolean } = {}): Promise<RegistryEntry | undefined> {
    const file = this.fileOf(name);
    const checked = this.checkedAt.get(name);
    if (checked !== undefined) {
      const cached = this.cache.get(name);
      // Docker asks Get again and again: on a watched local directory that changed in no way
      // since the entry was checked, the entry is as it was (no lstat: a fifth of a Get's CPU).
      if (cached && await this.watch?.unchangedSince(checked) && this.checkedAt.get(name) === checked) return cached.entry;
      this.checkedAt.delete(name);
    }
    // Before the first List (Docker may Get first): watch a local directory from now on.
    if (this.watchLocal && !this.watch && isLocalPath(this.fs, this.dir)) this.watch = DirectoryWatch.start(this.dir, this.log);
    const count = this.watch?.count();
    let stat: Stats;
    try {
      stat = await this.fs.lstat(file);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        if (confirmMissing) await this.assertNoEntryFile(name);
        this.cache.delete(name);
        return undefined;
      }
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `cannot read registry entry ${file}: ${messageOf(err)}`,
        { volume: name, cause: err });
    }
    if (this.askServer && stat.isFile()) {
      const fresh = await this.onServer(file, stat);
      if (!fresh) {
        if (confirmMissing) await this.assertNoEntryFile(name);
        if (this.cache.delete(name)) this.changed();
        return undefined;
      }
      stat = fresh;
    }
    const cached = this.cache.get(name);
    if (cached && cached.mtimeMs === stat.mtimeMs && cached.ino === stat.ino && cached.size === stat.size) {
      if (count !== undefined) this.checkedAt.set(name, count);
      return cached.entry;
    }
    let entry: RegistryEntry | undefined;
    try {
      entry = await this.read(name);
    } catch (err) {
      // A replaced entry that is now invalid must not keep answering with the old record.
      if (this.cache.delete(name)) this.changed();
      throw err;
    }
    if (!entry) {
      // Gone between the lstat and the read, or the read went through a symlink swapped in meanwhile.
      if (confirmMissing) await this.assertNoEntryFile(name);
      if (this.cache.delete(name)) this.changed();
    } else {
      this.cache.set(name, { entry, mtimeMs: stat.mtimeMs, ino: stat.ino, size: stat.size });
      this.changed();
      if (count !== undefined) this.checkedAt.set(name, count);
    }
    return entry;
  }

  /**
   * Every removal writes a new epoch after unlinking the entry. A name can only come back with
   * another record after a removal, so while the epoch and the names are as the last List saw
   * them, cached entries are current and only new names need reading (coarse directory
   * timestamps cannot fool this, and one small read replaces a stat per entry).
   */
  private get epochFile(): string { return join(this.dir, '.epoch'); }

  async bumpEpoch(): Promise<void> {
    await withCheckedDir(this.fs, this.dir, VOLUMES_DIR, (base) => this.bumpEpochAt(base));
  }

  /** `base`: the registry's directory as withCheckedDir opened it. */
  private async bumpEpochAt(base: string): Promise<void> {
    const epoch = randomHex(8);
    if (!isLocalPath(this.fs, base) || !await overwriteSameSize(this.fs, join(base, '.epoch'), epoch)) {
      await writeFileAtomic(this.fs, join(base, '.epoch'), epoch, { durable: false });
    }
  }

  private async readEpoch(): Promise<string> {
    try {
      return (await readFileNoFollow(this.fs, this.epochFile)) ?? '';
    } catch (err) {
      if (!(err instanceof StowageError)) throw err;
      // A planted file there must not stop List: check every entry instead, as with no epoch.
      this.reportInvalid('.epoch', err);
      return `unusable-${randomHex(8)}`;
    }
  }

  async list(): Promise<VolumeRecord[]> {
    let raw: string[];
    let epoch: string;
    try {
      // The epoch first: a removal racing with this List shows up in the next one.
      epoch = await this.readEpoch();
      raw = await this.readNames();
    } catch (err) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `cannot list registry ${this.dir}: ${messageOf(err)}`,
        { cause: err });
    }
    // Most Lists find the directory as the last one did: answer with the same array.
    const last = this.lastListing;
    if (last && last.generation === this.generation && last.epoch === epoch && sameStrings(last.raw, raw)) {
      return last.records;
    }
    // Dot-files are temps and never volumes: valid names start with a letter or digit.
    const names = raw.filter((file) => file.endsWith(SUFFIX) && !file.startsWith('.')).map((file) => file.slice(0, -SUFFIX.length));
    let skipped = false;
    const present = new Set(names);
    for (const name of this.cache.keys()) {
      if (!present.has(name)) {
        this.cache.delete(name);
        this.changed();
      }
    }
    // After a removal anywhere (a new epoch) an entry may have been replaced under the same name:
    // every name goes through get, which re-reads only entries whose identity changed.
    const current = this.checkedEpoch === epoch;
    const check = current ? names.filter((name) => !this.cache.has(name)) : names;
    for (let i = 0; i < check.length; i += READ_CONCURRENCY) {
      await Promise.all(check.slice(i, i + READ_CONCURRENCY).map((name) => this.get(name).catch((err: unknown) => {
        skipped = true;
        this.reportInvalid(name, err);
      })));
    }
    const records: VolumeRecord[] = [];
    for (const name of names.sort()) {
      const cached = this.cache.get(name);
      if (cached) records.push(cached.entry.record);
    }
    // An entry that could not be read is retried by the next List, not hidden behind the cache.
    this.lastListing = skipped ? undefined : { raw, generation: this.generation, records, epoch };
    this.checkedEpoch = epoch;
    return records;
  }

  /**
   * The directory's file names. On a local filesystem (one kernel, one clock) a directory whose
   * times read as they did before the last readdir still holds the same names, and 10 000 of
   * them are not read again (7 ms of a 20 ms List). That holds once the times are past their
   * clock tick; within it (right after a burst of creates), a change in the same tick would not
   * show in them, and the directory's watch says whether anything changed since that readdir.
   * Elsewhere (NFS, GlusterFS) the times come from another machine's clock or an attribute
   * cache, and inotify sees only this node's changes: always read.
   */
  private async readNames(): Promise<string[]> {
    if (!isLocalPath(this.fs, this.dir)) return this.fs.readdir(this.dir);
    // Read before the stat: a change after it is stamped at least this late, less one tick.
    const statAt = Date.now();
    const before = await this.fs.stat(this.dir);
    if (this.watchLocal && !this.watch?.isFor(before)) {
      // First List, or the directory was replaced under its path: watch the one there now.
      this.watch?.close();
      this.checkedAt.clear();
      this.watch = DirectoryWatch.start(this.dir, this.log);
    }
    const last = this.lastNames;
    if (last && last.dev === before.dev && last.ino === before.ino && last.mtimeMs === before.mtimeMs && last.ctimeMs === before.ctimeMs
      && (last.settled || (last.watch === this.watch && await this.watch?.unchangedSince(last.mark)))) {
      return last.names;
    }
    const settled = statAt - before.mtimeMs > settleTimeOf(before.mtimeMs);
    // Taken before the readdir: a change after it moves the count, one before it is in the names.
    const mark = settled ? undefined : await this.watch?.mark();
    const names = await this.fs.readdir(this.dir);
    this.lastNames = settled || mark !== undefined
      ? { dev: before.dev, ino: before.ino, mtimeMs: before.mtimeMs, ctimeMs: before.ctimeMs, names, settled, mark, watch: this.watch }
      : undefined;
    return names;
  }

  /** Stops watching the directory. */
  close(): void {
    this.checkedAt.clear();
    this.watch?.close();
  }

  private reportInvalid(name: string, err: unknown): void {
    const key = `${name}:${messageOf(err)}`;
    if (this.reported.has(key)) return;
    if (this.reported.size > 10_000) this.reported.clear();
    this.reported.add(key);
    this.log.warn(`skipping registry entry ${name}: ${messageOf(err)}`);
  }

  private async read(name: string): Promise<RegistryEntry | undefined> {
    const file = this.fileOf(name);
    const text = await readFileNoFollow(this.fs, file, name);
    return text === undefined ? undefined : parseRegistryEntry(text, file, name);
  }
}
