import { ErrorCodes, StowageError } from '../errors.js';
import { firstIssue } from '../schema/parse-record.js';
import { comparePaths, EntrySchema, FORMAT_VERSION, type Entry } from './format.js';
import type { PackWriter } from './pack-writer.js';

/** Entries per manifest blob: a 10 000-file tree is ten blobs, none of them large. */
export const MANIFEST_ENTRIES_PER_BLOB = 1000;

/** Writes a manifest as tree blobs of MANIFEST_ENTRIES_PER_BLOB entries each. */
export class ManifestWriter {
  readonly ids: string[] = [];
  private batch: Entry[] = [];
  private last: string | undefined;

  constructor(private readonly writer: PackWriter) {}

  /**
   * Checks each entry as a restore will: an entry a restore would refuse fails the backup
   * here, naming the file, instead of making a backup that reports success and never restores.
   */
  async add(entry: Entry): Promise<void> {
    const checked = EntrySchema.safeParse(entry);
    if (!checked.success) {
      const { path, message } = firstIssue(checked.error);
      const what = path.length > 0 ? `its ${path.join('.')}` : 'its entry';
      throw new StowageError(ErrorCodes.NOT_SUPPORTED, `cannot back up ${JSON.stringify(String(entry.path).slice(0, 300))}: ${what} is refused (${message}); no backup was recorded`);
    }
    // A restore refuses entries out of order: a backup that would write one fails instead.
    if (this.last !== undefined && comparePaths(this.last, entry.path) >= 0) {
      throw new StowageError(ErrorCodes.INTERNAL, `the backup's manifest came out of order (${JSON.stringify(entry.path.slice(0, 300))} after ${JSON.stringify(this.last.slice(0, 300))}); no backup was recorded`);
    }
    this.last = entry.path;
    this.batch.push(entry);
    if (this.batch.length >= MANIFEST_ENTRIES_PER_BLOB) await this.seal();
  }

  async finish(): Promise<string[]> {
    if (this.batch.length > 0) await this.seal();
    return this.ids;
  }

  private async seal(): Promise<void> {
    const data = Buffer.from(JSON.stringify({ format: FORMAT_VERSION, entries: this.batch }));
    this.batch = [];
    this.ids.push((await this.writer.add('tree', data)).id);
  }
}
