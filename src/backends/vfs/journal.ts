import { join } from 'node:path';
import { z } from 'zod';
import { isTempName, writeFileAtomic } from '../../core/atomic-file.js';
import { errnoCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import { readFileNoFollow } from '../../core/safe-path.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { STORE_COMPONENT } from './registry-entry.js';
import { openCheckedDir } from '../../core/cluster/node-dir.js';

/**
 * Intent records for the multi-step operations on one volume (`journal/<name>.json`), so that
 * whatever a killed process left half-done is rolled back or finished by the next start, or by
 * the next create or remove of the same name. Written without fsync: they only need to survive
 * a process crash; after a power loss the registry entry (fsynced) is the commit point anyway.
 */
export const intentSchema = z.discriminatedUnion('op', [
  z.object({
    format: z.literal(1),
    op: z.literal('create'),
    name: z.string().regex(STORE_COMPONENT),
    nodeId: z.string(),
    /** True when the data directory did not exist and this create makes it. */
    makesDir: z.boolean(),
  }),
  z.object({
    format: z.literal(1),
    op: z.literal('remove'),
    name: z.string().regex(STORE_COMPONENT),
    nodeId: z.string(),
    /** Identity of the entry being removed, so recovery never deletes a later volume of the same name. */
    createdAt: z.string(),
    createdBy: z.string(),
    /** Where the data goes, relative to `.stowage`: `removed/NAME@stamp` or `deleting/NAME@stamp`. */
    target: z.string().regex(/^(removed|deleting)\/[A-Za-z0-9][A-Za-z0-9_.-]*@[0-9TZ]+-[0-9a-f]+$/),
  }),
]);

export type Intent = z.infer<typeof intentSchema>;

/** How old an unreadable intent must be before a reader without the name's lock discards it. */
export const TORN_GRACE_MS = 10_000;

/** Reading, writing and clearing intent records (see Journal.within). */
export interface IntentCalls {
  read(name: string): Promise<Intent | 'torn' | undefined>;
  record(intent: Intent): Promise<void>;
  clear(name: string): Promise<void>;
}

export class Journal implements IntentCalls {
  constructor(private readonly fs: FsPort, readonly dir: string) {}

  private fileOf(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  /**
   * Runs `task` with the directory opened once without following a symlink (see openCheckedDir):
   * another machine may have made `journal` a symlink, or swap one in at any moment, and a
   * record written, read or unlinked through it would be a file outside the store named after
   * the volume. A missing directory is an error, never "no intent there". An operation on a
   * volume runs its read, record and clear through one opening (opening and checking the
   * directory costs three system calls).
   */
  async within<T>(task: (calls: IntentCalls) => Promise<T>): Promise<T> {
    const dir = await openCheckedDir(this.fs, this.dir, 'the directory of intent records');
    try {
      return await task({
        read: (name) => this.readAt(join(dir.base, `${name}.json`), name),
        record: (intent) => this.recordAt(join(dir.base, `${intent.name}.json`), intent),
        clear: (name) => this.clearAt(join(dir.base, `${name}.json`)),
      });
    } finally {
      await dir.close();
    }
  }

  /**
   * Written in place rather than renamed into place (two system calls fewer on every create and
   * remove): only the holder of the name's lock writes or reads it, and a torn one (its writer
   * killed between creating and filling it) means nothing after it happened, which `read`
   * reports as 'torn'. The start-up sweep, which reads without the lock, leaves young torn ones
   * alone (see `settled`).
   */
  record(intent: Intent): Promise<void> {
    return this.within((calls) => calls.record(intent));
  }

  private async recordAt(path: string, intent: Intent): Promise<void> {
    const text = JSON.stringify(intent);
    // 'wx' never follows a symlink planted at the name; an intent still there (its recovery
    // failed) is replaced by rename, which does not follow one either.
    const handle = await this.fs.open(path, 'wx', 0o600).catch((err: unknown) => {
      if (errnoCode(err) === 'EEXIST') return undefined;
      throw err;
    });
    if (!handle) {
      await writeFileAtomic(this.fs, path, text, { durable: false });
      return;
    }
    try {
      await handle.writeFile(text);
    } catch (err) {
      await handle.close().catch(() => undefined);
      await this.fs.unlink(path).catch(() => undefined);
      throw err;
    }
    await handle.close();
  }

  /**
   * Whether the intent of `name` was last written at least `graceMs` ago: an unreadable one that
   * young may be another node's still being written.
   */
  async settled(name: string, nowMs: number, graceMs = TORN_GRACE_MS): Promise<boolean> {
    const stat = await this.fs.lstat(this.fileOf(name)).catch(() => undefined);
    return stat !== undefined && stat.mtimeMs + graceMs <= nowMs;
  }

  clear(name: string): Promise<void> {
    return this.within((calls) => calls.clear(name));
  }

  private async clearAt(path: string): Promise<void> {
    await this.fs.unlink(path).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  read(name: string): Promise<Intent | 'torn' | undefined> {
    return this.within((calls) => calls.read(name));
  }

  private async readAt(path: string, name: string): Promise<Intent | 'torn' | undefined> {
    const text = await readFileNoFollow(this.fs, path, name, this.fileOf(name));
    if (text === undefined) return undefined;
    try {
      const intent = parseRecordText(intentSchema, text, `intent ${this.fileOf(name)}`, name);
      return intent.name === name ? intent : 'torn';
    } catch {
      return 'torn';
    }
  }

  /** Names with an intent record. */
  async names(): Promise<string[]> {
    return (await this.fs.readdir(this.dir))
      .filter((file) => file.endsWith('.json') && !isTempName(file) && !file.startsWith('.'))
      .map((file) => file.slice(0, -'.json'.length))
      .filter((name) => STORE_COMPONENT.test(name));
  }
}
