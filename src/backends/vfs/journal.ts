import { join } from 'node:path';
import { z } from 'zod';
import { isTempName, writeFileAtomic } from '../../core/atomic-file.js';
import { errnoCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import { readFileNoFollow } from '../../core/safe-path.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { STORE_COMPONENT } from './registry.js';

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

export class Journal {
  constructor(private readonly fs: FsPort, readonly dir: string) {}

  private fileOf(name: string): string {
    return join(this.dir, `${name}.json`);
  }

  async record(intent: Intent): Promise<void> {
    await writeFileAtomic(this.fs, this.fileOf(intent.name), JSON.stringify(intent), { durable: false });
  }

  async clear(name: string): Promise<void> {
    await this.fs.unlink(this.fileOf(name)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
  }

  /**
   * The intent left for `name`, undefined when none. An unreadable one (torn by a crash while
   * it was written, before anything else happened) comes back as 'torn'.
   */
  async read(name: string): Promise<Intent | 'torn' | undefined> {
    const text = await readFileNoFollow(this.fs, this.fileOf(name), name);
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
