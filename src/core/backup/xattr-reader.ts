import { readlinkSync } from 'node:fs';
import { isCommandError, type CommandRunner } from '../command-runner.js';
import { firstLine, messageOf } from '../errors.js';
import type { Entry } from './format.js';
import type { OpenDir } from './walk.js';
import { nameFromBytes } from './raw-names.js';
import { ENTRY_XATTR_BYTES_MAX, XattrsSchema, getfattrArgs, notInstalled, parseXattrDump, type Xattr } from './xattrs.js';

/**
 * Entries per run of getfattr. Starting a program from a daemon holding a backup's buffers
 * costs 10-20 ms of its CPU here (fork copies its page tables): batches of 256 made a backup of
 * 10 000 small files take twice as long. Twice this many entries wait for their attributes at
 * most (AttributedEntries), which a larger batch would add to a backup's peak memory.
 */
export const XATTR_BATCH_ENTRIES = 2048;
/** Runs at once: one reads while the next batch fills. */
const RUNS_AT_ONCE = 2;
/**
 * getfattr's output per run, at most: what bounds the memory a batch's attributes take (XFS
 * takes 64 KiB values, and any number of them). A batch that writes more is read again in
 * halves; one entry that does has its attributes left out, with a warning.
 */
const OUTPUT_MAX = 8 * 1024 * 1024;
/** Entries waiting for their attributes, at most: two batches, one read while the next fills. */
const ENTRIES_WAITING = 2 * XATTR_BATCH_ENTRIES;
/** Directories held open for waiting entries, at most (each is a file descriptor). */
const DIRECTORIES_HELD = 1024;

/** One entry's attributes, once its batch has run: `get()` starts that batch if it is still filling. */
export interface XattrTicket {
  get(): Promise<Xattr[] | undefined>;
  /**
   * Once `get()` has answered: some of the entry's attributes were left out (a name stowage
   * does not back up, more than a manifest entry holds, or more than a run may print), so a later backup must not carry
   * them over but read them again, and say so again.
   */
  readonly partial: boolean;
}

/** What a run found for one entry: the attributes taken, and whether any were left out. */
interface Found {
  xattrs: Xattr[];
  partial: boolean;
}

/** Entries read by one run of getfattr. */
class Batch {
  readonly requests: Request[] = [];
  /** Set once the batch is started; settles when its run is over (it never rejects). */
  done?: Promise<void>;
}

/** One entry in a batch: a ticket as light as can be, since thousands wait at once. */
class Request implements XattrTicket {
  xattrs?: Xattr[];
  partial = false;

  constructor(
    /** The entry's path for getfattr, one character per byte (latin1). */
    readonly key: string,
    /** The entry's path in the manifest, for messages. */
    readonly rel: string,
    readonly holds: OpenDir | undefined,
    private readonly batch: Batch,
    private readonly reader: XattrReader,
  ) {}

  async get(): Promise<Xattr[] | undefined> {
    if (!this.batch.done) this.reader.flush();
    await this.batch.done;
    return this.xattrs;
  }
}

const ASCII = /^[\x00-\x7f]*$/;
const SELF = '/proc/self/';

/**
 * Reads the extended attributes of the entries a backup walks, a batch at a time, while the
 * walk goes on: memory holds the attributes of one batch per run, not the tree's. Each entry is
 * named through the descriptor of its directory that the walk holds open
 * (`/proc/<pid>/fd/N/name`), which stays open until the batch has run: a directory swapped for
 * a symlink meanwhile cannot lead getfattr out of the volume. Paths go to `xargs -0` on its
 * standard input, so names that are not UTF-8 reach getfattr as they are.
 */
export class XattrReader {
  private batch = new Batch();
  private running = 0;
  private readonly waiting: Array<() => void> = [];
  private readonly said = new Set<string>();
  private disabled = false;
  private failed = false;
  private refused = 0;
  private readonly runs = new Set<Promise<void>>();
  /** Directories held open for queued entries, with how many entries each is held for. */
  private readonly held = new Map<OpenDir, number>();

  constructor(
    private readonly commands: CommandRunner,
    private readonly onWarning: (text: string) => void,
    /**
     * This process's id as the /proc that getfattr sees numbers it: not process.pid when the
     * daemon runs in a pid namespace of its own under the host's /proc, where that number would
     * name another process's descriptors.
     */
    private readonly procPid = readlinkSync('/proc/self'),
    private readonly outputMax = OUTPUT_MAX,
  ) {}

  /**
   * True when every batch ran to its end: only then can a later backup carry an unchanged
   * entry's attributes over instead of reading them again. An entry whose attributes were read
   * but partly left out says so itself (XattrTicket.partial), and is read again each time.
   */
  get complete(): boolean {
    return !this.failed && !this.disabled;
  }

  /** Queues an entry (`abs` as the walk gives it; `dir` its open directory, held until read). */
  read(rel: string, abs: string | Buffer, dir: OpenDir | undefined): XattrTicket {
    if (this.disabled) return { get: async () => undefined, partial: false };
    const bytes = typeof abs !== 'string' ? abs.toString('latin1') : ASCII.test(abs) ? abs : Buffer.from(abs).toString('latin1');
    // The daemon's own descriptor, as getfattr (another process) reaches it.
    const key = bytes.startsWith(SELF) ? `/proc/${this.procPid}/${bytes.slice(SELF.length)}` : bytes;
    if (dir) {
      dir.hold();
      this.held.set(dir, (this.held.get(dir) ?? 0) + 1);
    }
    const batch = this.batch;
    const request = new Request(key, rel, dir, batch, this);
    batch.requests.push(request);
    // xargs splits a batch into command lines the kernel takes: only its count matters here.
    if (batch.requests.length >= XATTR_BATCH_ENTRIES) this.flush();
    return request;
  }

  /** Starts the batch being filled (at the end of a walk, or when the backup waits on it). */
  flush(): void {
    const batch = this.batch;
    if (batch.requests.length === 0) return;
    this.batch = new Batch();
    const run = this.run(batch.requests);
    batch.done = run;
    this.runs.add(run);
    void run.finally(() => this.runs.delete(run));
  }

  /** How many directories queued entries keep open: a walk far ahead holds many. */
  get heldDirectories(): number {
    return this.held.size;
  }

  private letGo(dir: OpenDir): void {
    const count = this.held.get(dir)! - 1;
    if (count === 0) this.held.delete(dir);
    else this.held.set(dir, count);
    dir.release();
  }

  /** Runs what is queued and waits for every run; says how many attributes were refused. */
  async finish(): Promise<void> {
    this.flush();
    while (this.runs.size > 0) await Promise.all([...this.runs]);
    if (this.refused > 0) this.say(`extended attributes: ${this.refused} with a name stowage does not back up were left out`);
  }

  private async run(batch: Request[]): Promise<void> {
    const found = new Map<string, Found>();
    try {
      while (this.running >= RUNS_AT_ONCE) await new Promise<void>((r) => this.waiting.push(r));
      this.running += 1;
      try {
        if (!this.disabled) await this.runGetfattr(batch, found);
      } finally {
        this.running -= 1;
        this.waiting.shift()?.();
      }
    } catch (err) {
      this.fail(`extended attributes of ${batch.length} entr${batch.length === 1 ? 'y were' : 'ies were'} not read: ${messageOf(err)}`);
    } finally {
      for (const request of batch) {
        if (request.holds) this.letGo(request.holds);
        const got = found.get(request.key);
        request.xattrs = got?.xattrs.length ? got.xattrs : undefined;
        request.partial = got?.partial ?? false;
      }
    }
  }

  private async runGetfattr(batch: Request[], found: Map<string, Found>): Promise<void> {
    const input = Buffer.from(`${batch.map((r) => r.key).join('\0')}\0`, 'latin1');
    let result;
    try {
      result = await this.commands.run('xargs', ['-0', '-r', 'getfattr', ...getfattrArgs()],
        { input, allowFailure: true, timeoutMs: 60 * 60 * 1000, env: { LC_ALL: 'C' }, bytesOut: true, maxOutputBytes: this.outputMax });
    } catch (err) {
      if (isCommandError(err, 'output')) {
        if (batch.length === 1) {
          this.say(`${batch[0]!.rel}: its extended attributes are left out (more than ${this.outputMax} bytes of them)`);
          found.set(batch[0]!.key, { xattrs: [], partial: true });
          return;
        }
        const half = Math.ceil(batch.length / 2);
        await this.runGetfattr(batch.slice(0, half), found);
        await this.runGetfattr(batch.slice(half), found);
        return;
      }
      if (!notInstalled(err)) throw err;
      this.disable('xargs is not installed (Debian: apt-get install findutils)');
      return;
    }
    // xargs: 127 when the program is missing, 126 when it cannot be run.
    if (result.exitCode === 127 || result.exitCode === 126) {
      this.disable(result.exitCode === 127 ? 'getfattr is not installed (Debian: apt-get install attr)' : `getfattr cannot be run: ${firstLine(result.stderr)}`);
      return;
    }
    const dump = parseXattrDump(result.stdout);
    for (const { path, xattrs, refused } of dump.files) {
      const key = path.toString('latin1');
      // What a manifest entry could not hold is dropped here, not kept until the entry is written:
      // a batch then holds at most ENTRY_XATTR_BYTES_MAX per entry, not a run's whole output.
      if (xattrs.length > 0 && !XattrsSchema.safeParse(xattrs).success) {
        const rel = batch.find((r) => r.key === key)?.rel ?? nameFromBytes(path);
        this.say(`${rel}: its extended attributes are left out (more than 64 of them, or more than ${ENTRY_XATTR_BYTES_MAX} bytes)`);
        found.set(key, { xattrs: [], partial: true });
      } else {
        found.set(key, { xattrs, partial: refused > 0 });
      }
    }
    this.refused += dump.refused;
    if (result.exitCode === 0) return;
    // 123: getfattr failed on some entries; the rest is there. An entry removed since the walk
    // passed has nothing to read (a file that went is said by its read).
    const problems = result.stderr.split('\n').filter((line) => line !== '' && !line.endsWith(': No such file or directory'));
    if (result.exitCode === 123 && problems.length === 0) return;
    this.fail(`extended attributes: ${this.inManifestTerms(problems[0] ?? '', batch) || `getfattr exit code ${result.exitCode}`}`);
  }

  /** getfattr's message names /proc/<pid>/fd/N/name: say the entry's path instead. */
  private inManifestTerms(line: string, batch: Request[]): string {
    const named = batch.find((r) => line.includes(r.key));
    return named ? line.replace(named.key, named.rel) : line;
  }

  private disable(why: string): void {
    this.disabled = true;
    this.say(`extended attributes were not backed up: ${why}`);
  }

  private fail(text: string): void {
    this.failed = true;
    this.say(text);
  }

  /** Each warning once per backup: every batch may meet the same cause. */
  private say(text: string): void {
    if (this.said.has(text)) return;
    this.said.add(text);
    this.onWarning(text);
  }
}

/**
 * Entries on their way to the manifest, held in order until their attributes are read: the
 * manifest waits on a batch while the walk and the file reads go on into the next. What waits
 * is the entries as the manifest stores them, a few hundred bytes each; the walk itself stays a
 * few files ahead (its entries hold far more: stats, paths, reads in flight).
 */
export class AttributedEntries {
  private readonly waiting: Array<{ entry: Entry; xattrs: XattrTicket | Xattr[] | undefined }> = [];

  constructor(
    private readonly reader: XattrReader | undefined,
    /** `partial`: some of the entry's attributes were left out (XattrTicket.partial). */
    private readonly onReady: (entry: Entry, xattrs: Xattr[] | undefined, partial: boolean) => Promise<void>,
  ) {}

  async push(entry: Entry, xattrs: XattrTicket | Xattr[] | undefined): Promise<void> {
    this.waiting.push({ entry, xattrs });
    // Always from the front, so the manifest gets the walk's order: entries that need nothing
    // read go on at once, unless an entry ahead of them waits for its batch.
    while (this.waiting.length > 0 && !isTicket(this.waiting[0]!.xattrs)) await this.next();
    while (this.waiting.length > ENTRIES_WAITING || (this.waiting.length > 0 && (this.reader?.heldDirectories ?? 0) > DIRECTORIES_HELD)) await this.next();
  }

  async finish(): Promise<void> {
    this.reader?.flush();
    while (this.waiting.length > 0) await this.next();
  }

  private async next(): Promise<void> {
    const { entry, xattrs } = this.waiting.shift()!;
    if (!isTicket(xattrs)) return this.onReady(entry, xattrs, false);
    const read = await xattrs.get();
    await this.onReady(entry, read, xattrs.partial);
  }
}

function isTicket(xattrs: XattrTicket | Xattr[] | undefined): xattrs is XattrTicket {
  return xattrs !== undefined && !Array.isArray(xattrs);
}

