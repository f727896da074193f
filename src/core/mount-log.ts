import { join } from 'node:path';
import { z } from 'zod';
import { writeFileAtomic } from './atomic-file.js';
import { errnoCode } from './errors.js';
import type { FsPort } from './fs-port.js';
import { randomHex } from './random-hex.js';
import { parseRecordText } from './schema/parse-record.js';

/** One volume's mounts as stored: entries are checked one by one by the mount table. */
export interface StoredVolumeMounts {
  incarnation?: string;
  ids: Record<string, unknown>;
}

const volumeSchema = z.object({ incarnation: z.string().optional(), ids: z.record(z.string(), z.unknown()) });

/**
 * Format 1 kept only IDs per volume; format 2 adds which incarnation of the volume they belong
 * to, and names the log that continues it (`log`). Both read as format 2.
 */
const snapshotSchema = z.discriminatedUnion('format', [
  z.object({ format: z.literal(1), volumes: z.record(z.string(), z.record(z.string(), z.unknown())) }),
  z.object({ format: z.literal(2), log: z.string().optional(), volumes: z.record(z.string(), volumeSchema) }),
]).transform((file) => ({
  log: file.format === 2 ? file.log : undefined,
  volumes: file.format === 2 ? file.volumes as Record<string, StoredVolumeMounts>
    : Object.fromEntries(Object.entries(file.volumes).map(([volume, ids]) => [volume, { ids }])) as Record<string, StoredVolumeMounts>,
}));

const headerSchema = z.object({ log: z.string() });
/** One change: the volume's mounts as they are now, or null when it has none left. */
const lineSchema = z.object({ volume: z.string(), mounts: volumeSchema.nullable() });

export const MOUNTS_FILE = 'mounts.json';
export const MOUNTS_LOG = 'mounts.log';

type OpenFile = Awaited<ReturnType<FsPort['open']>>;

/**
 * The mount records under --root: a snapshot (`mounts.json`) and an append-only log of changes
 * since (`mounts.log`, one JSON line per changed volume), so a mount costs one append instead of
 * rewriting every record. The log's first line names it, and the snapshot names the log that
 * continues it: a log left from before the last snapshot is ignored. Neither is flushed to disk:
 * they only need to survive the daemon, a host crash ends every mount anyway.
 */
export class MountFiles {
  readonly snapshotPath: string;
  readonly logPath: string;
  private handle?: OpenFile;
  /** Lines appended since the last snapshot. */
  linesSinceSnapshot = 0;
  /** Set when an append failed half-way: the next save rewrites the snapshot instead. */
  needsSnapshot = false;

  constructor(private readonly fs: FsPort, root: string, private readonly nodeId: string) {
    this.snapshotPath = join(root, MOUNTS_FILE);
    this.logPath = join(root, MOUNTS_LOG);
  }

  /**
   * The records as saved: the snapshot with its log applied. Throws when the snapshot cannot be
   * read or parsed (the caller refuses to start); log lines that are not valid are skipped and
   * reported (a daemon killed during an append leaves a torn last line).
   */
  async read(): Promise<{ volumes: Record<string, StoredVolumeMounts>; skipped: string[] }> {
    const text = await this.fs.readFile(this.snapshotPath, 'utf8').catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    });
    if (text === undefined) return { volumes: {}, skipped: [] };
    const snapshot = parseRecordText(snapshotSchema, text, `the mount records file ${this.snapshotPath}`);
    const volumes = { ...snapshot.volumes };
    const skipped: string[] = [];
    const log = snapshot.log === undefined ? '' : await this.fs.readFile(this.logPath, 'utf8').catch((err: unknown) => {
      if (errnoCode(err) === 'ENOENT') return '';
      throw err;
    });
    const lines = log.split('\n');
    const header = headerSchema.safeParse(parseJson(lines[0] ?? ''));
    if (!header.success || header.data.log !== snapshot.log) return { volumes, skipped };
    lines.slice(1).forEach((line, index) => {
      if (line === '') return;
      const change = lineSchema.safeParse(parseJson(line));
      if (!change.success) {
        skipped.push(`line ${index + 2} of ${this.logPath}: not a mount record${index === lines.length - 2 ? ' (cut short)' : ''}`);
        return;
      }
      if (change.data.mounts) volumes[change.data.volume] = change.data.mounts as StoredVolumeMounts;
      else delete volumes[change.data.volume];
    });
    return { volumes, skipped };
  }

  /** Writes every record as the new snapshot and starts an empty log after it. */
  async snapshot(volumes: Record<string, StoredVolumeMounts>): Promise<void> {
    await this.close();
    const log = randomHex(8);
    const file = { format: 2, writtenBy: this.nodeId, writtenAt: new Date().toISOString(), log, volumes };
    // Snapshot first: a crash between the two leaves a log the new snapshot does not name.
    await writeFileAtomic(this.fs, this.snapshotPath, JSON.stringify(file), { durable: false, ownTemp: true });
    await writeFileAtomic(this.fs, this.logPath, JSON.stringify({ log }) + '\n', { durable: false, ownTemp: true });
    this.linesSinceSnapshot = 0;
    this.needsSnapshot = false;
  }

  /** Appends the current records of the volumes that changed (null: no mounts left). */
  async append(changes: ReadonlyArray<[volume: string, mounts: StoredVolumeMounts | null]>): Promise<void> {
    const text = changes.map(([volume, mounts]) => JSON.stringify({ volume, mounts }) + '\n').join('');
    try {
      this.handle ??= await this.fs.open(this.logPath, 'a', 0o600);
      const { bytesWritten } = await this.handle.write(text);
      if (bytesWritten !== Buffer.byteLength(text)) throw new Error(`wrote ${bytesWritten} of ${Buffer.byteLength(text)} bytes`);
    } catch (err) {
      this.needsSnapshot = true;
      await this.close();
      throw err;
    }
    this.linesSinceSnapshot += changes.length;
  }

  async close(): Promise<void> {
    const handle = this.handle;
    this.handle = undefined;
    await handle?.close().catch(() => undefined);
  }
}

function parseJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}
