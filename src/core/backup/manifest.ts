import { FORMAT_VERSION, type Entry } from './format.js';
import type { PackWriter } from './pack-writer.js';

/** Entries per manifest blob: a 10 000-file tree is ten blobs, none of them large. */
export const MANIFEST_ENTRIES_PER_BLOB = 1000;

/** Writes a manifest as tree blobs of MANIFEST_ENTRIES_PER_BLOB entries each. */
export class ManifestWriter {
  readonly ids: string[] = [];
  private batch: Entry[] = [];

  constructor(private readonly writer: PackWriter) {}

  async add(entry: Entry): Promise<void> {
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
