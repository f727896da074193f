/**
 * What a restore demands of a manifest's structure, defined once: restore enforces it while it
 * writes, and verify and the repository check apply it without writing, so that a backup they
 * pass is one a restore does not refuse for its manifest. (A forged manifest of valid chunks
 * and valid entries, a file under a symlink say, used to verify and then never restore.)
 */
import { ErrorCodes, StowageError } from '../errors.js';
import { comparePaths, type BackupRecord, type Entry } from './format.js';
import { bytesFromName } from './raw-names.js';
import type { Repository } from './repository.js';

/** Bytes of a symlink's target, at most: symlink(2) takes a path of PATH_MAX with its closing NUL. */
const MAX_LINK_TARGET_BYTES = 4095;
/** Bytes of one name, at most: NAME_MAX of ext4, XFS, btrfs and the rest a volume lives on, so a backup never holds a longer one. */
const MAX_NAME_BYTES = 255;

/** A manifest a restore refuses, told apart from one that does not load (a read's failure). */
export class ManifestRefusal extends StowageError {
  constructor(message: string) {
    super(ErrorCodes.BACKUP_CORRUPT, message);
  }
}

export function refusedEntry(record: BackupRecord, path: string, why: string): StowageError {
  return new ManifestRefusal(`backup ${record.volume}/${record.id}: manifest entry ${JSON.stringify(path.slice(0, 300))} is refused: ${why}`);
}

export function parentOf(path: string): string {
  const cut = path.lastIndexOf('/');
  return cut < 0 ? '.' : path.slice(0, cut);
}

/**
 * A file's size against the bytes its chunks hold, whole chunks of zeros included (a sparse
 * file's holes are chunks too, skipped on write but counted): what a restore wrote.
 */
export function checkFileSize(record: BackupRecord, entry: Entry, held: number): void {
  if (held !== entry.size) throw refusedEntry(record, entry.path, `its chunks hold ${held} bytes, the entry says ${entry.size}`);
}

/**
 * The rules an entry must meet given those before it, fed every entry in manifest order. The
 * state is the last path and the chain of directories that can still hold entries (those a
 * restore has open), bounded by a path's depth whatever the manifest's length. Whether a
 * hardlink's target exists needs the entries before it: restore looks on the filesystem it
 * wrote, verify uses LinkTargets.
 */
export class ManifestRules {
  private previous: string | undefined;
  private readonly open: string[] = [];

  constructor(private readonly record: BackupRecord) {}

  /** Throws the refusal a restore gives `entry`, the next of the manifest. */
  next(entry: Entry): void {
    const refused = (why: string) => refusedEntry(this.record, entry.path, why);
    if (this.previous === undefined) {
      // The schema makes a root entry a directory.
      if (entry.path !== '.') throw refused('the first entry must be the root directory');
    } else {
      if (comparePaths(this.previous, entry.path) >= 0) throw refused(`out of order or duplicate (after ${JSON.stringify(this.previous.slice(0, 300))})`);
      // In walk order every directory's entries follow it at once: one that cannot enclose this
      // entry encloses nothing after it either.
      const parent = parentOf(entry.path);
      while (this.open.length > 0 && this.open.at(-1) !== parent) this.open.pop();
      // So a name never goes through a symlink, and never into a directory the backup did not hold.
      if (this.open.length === 0) throw refused('its parent is not a directory of this backup');
    }
    this.previous = entry.path;
    const name = bytesFromName(entry.path.slice(entry.path.lastIndexOf('/') + 1)).length;
    if (name > MAX_NAME_BYTES) throw refused(`its name is ${name} bytes, and no filesystem a restore writes into takes more than ${MAX_NAME_BYTES}`);
    if (entry.type === 'dir') this.open.push(entry.path);
    // An earlier entry is one a restore has already made: a later one would be linked before it exists.
    if (entry.type === 'hardlink' && comparePaths(entry.target!, entry.path) >= 0) throw refused('a hardlink must point to an earlier file');
    if (entry.type === 'symlink') {
      // What readlink(2) can have given a backup; symlink(2) fails on anything else.
      const target = entry.target!;
      if (target === '' || target.includes('\0') || bytesFromName(target).length > MAX_LINK_TARGET_BYTES) {
        throw refused(`a symlink's target must be 1 to ${MAX_LINK_TARGET_BYTES} bytes without NUL`);
      }
    }
  }

  /** After the last entry. */
  end(): void {
    if (this.previous === undefined) throw new ManifestRefusal(`backup ${this.record.volume}/${this.record.id} has an empty manifest`);
  }
}

/**
 * Hardlink targets waiting for a pass over the manifest that finds them, at most this many and
 * this many characters (target and link paths): memory stays bounded whatever the manifest
 * holds, where a set of every path seen would grow with the tree. A tree with more hardlinks
 * costs one more pass over the part of the manifest read so far per this many; most have none,
 * and then no pass at all.
 */
const PENDING_TARGETS = 100_000;
const PENDING_CHARS = 8 * 1024 * 1024;

/**
 * A restore links a hardlink to what it restored at the target's path, and refuses a directory,
 * a missing name, or a path through a symlink. Every entry the rules pass sits in directories of
 * the backup, so what a restore finds there is exactly an earlier entry at that very path: the
 * target must be one, and not a directory. (A path through a symlink, `z/x`, is then never an
 * entry: `z/x` would have been refused.)
 */
export class LinkTargets {
  /** Target to the first hardlink naming it, in manifest order. */
  private readonly pending = new Map<string, string>();
  private chars = 0;

  constructor(
    private readonly repo: Repository, private readonly record: BackupRecord,
    private readonly limits = { targets: PENDING_TARGETS, chars: PENDING_CHARS },
  ) {}

  /** Notes `entry`, past the rules; a full list is resolved against the entries before `entry`. */
  async add(entry: Entry): Promise<void> {
    if (entry.type !== 'hardlink' || this.pending.has(entry.target!)) return;
    this.pending.set(entry.target!, entry.path);
    this.chars += entry.target!.length + entry.path.length;
    if (this.pending.size >= this.limits.targets || this.chars >= this.limits.chars) await this.resolve(entry.path);
  }

  /** After the last entry (`last`, its path). */
  async end(last: string | undefined): Promise<void> {
    if (this.pending.size > 0 && last !== undefined) await this.resolve(last);
  }

  /** Finds the pending targets among the entries before `upTo` (each target comes before its link); throws for the first left. */
  private async resolve(upTo: string): Promise<void> {
    for await (const entry of this.repo.entries(this.record)) {
      if (this.pending.size === 0 || comparePaths(entry.path, upTo) >= 0) break;
      if (entry.type !== 'dir') this.pending.delete(entry.path);
    }
    for (const [target, link] of this.pending) {
      throw refusedEntry(this.record, link, `its hardlink target ${JSON.stringify(target.slice(0, 300))} is not a restored file, symlink, FIFO or device`);
    }
    this.chars = 0;
  }
}

/**
 * The manifest rules for a reader that goes on past a refusal (verify and the check read every
 * chunk all the same, so that damaged copies are all recorded): the first refusal is kept.
 */
export class ManifestCheck {
  private refusal: StowageError | undefined;
  private readonly rules: ManifestRules;
  private readonly links: LinkTargets;
  private last: string | undefined;

  constructor(private readonly record: BackupRecord, repo: Repository, limits?: { targets: number; chars: number }) {
    this.rules = new ManifestRules(record);
    this.links = new LinkTargets(repo, record, limits);
  }

  async next(entry: Entry): Promise<void> {
    await this.keep(async () => {
      this.rules.next(entry);
      this.last = entry.path;
      await this.links.add(entry);
    });
  }

  /** A file's size against what its chunks hold: undefined when one did not read back (a failure of its own). */
  size(entry: Entry, held: number | undefined): void {
    if (held !== undefined && this.refusal === undefined) {
      try {
        checkFileSize(this.record, entry, held);
      } catch (err) {
        this.refusal = err as StowageError;
      }
    }
  }

  /** After the last entry: the first refusal, if any. */
  async end(): Promise<StowageError | undefined> {
    await this.keep(async () => {
      this.rules.end();
      await this.links.end(this.last);
    });
    return this.refusal;
  }

  private async keep(step: () => Promise<void>): Promise<void> {
    if (this.refusal) return;
    try {
      await step();
    } catch (err) {
      // A manifest blob that does not load fails the reader as it does without these rules.
      if (!(err instanceof ManifestRefusal)) throw err;
      this.refusal = err;
    }
  }
}
