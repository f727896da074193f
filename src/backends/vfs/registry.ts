import { join } from 'node:path';
import type { VolumeRecord } from '../../core/backend.js';
import { createFileExclusive } from '../../core/atomic-file.js';
import { ErrorCodes, StowageError, errnoCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import type { Logger } from '../../core/logger.js';

/** On-disk form of one registry entry: the volume plus where its data lives, relative to the store. */
export interface RegistryEntry {
  format: 1;
  record: VolumeRecord;
  dataDir: string;
}

interface Cached {
  entry: RegistryEntry;
  mtimeMs: number;
  ino: number;
  size: number;
}

const SUFFIX = '.json';
const READ_CONCURRENCY = 64;

/**
 * The volume registry kept in the store itself (one file per volume), so every node that sees
 * the store sees the same volumes. Other nodes change it behind our back, so the cache is only
 * an optimisation: `get` re-checks the file's identity on every call, and `list` re-reads the
 * directory on every call and only reads files it has not seen.
 */
export class VolumeRegistry {
  private readonly cache = new Map<string, Cached>();

  constructor(private readonly fs: FsPort, private readonly dir: string, private readonly log: Logger) {}

  private fileOf(name: string): string {
    return join(this.dir, name + SUFFIX);
  }

  /** Registers a volume; false when the name is already taken (possibly by another node). */
  async add(entry: RegistryEntry): Promise<boolean> {
    const file = this.fileOf(entry.record.name);
    if (!(await createFileExclusive(this.fs, file, JSON.stringify(entry, null, 1)))) return false;
    const stat = await this.fs.stat(file);
    this.cache.set(entry.record.name, { entry, mtimeMs: stat.mtimeMs, ino: stat.ino, size: stat.size });
    return true;
  }

  async delete(name: string): Promise<void> {
    await this.fs.unlink(this.fileOf(name)).catch((err: unknown) => {
      if (errnoCode(err) !== 'ENOENT') throw err;
    });
    this.cache.delete(name);
  }

  /** The cached entry without touching storage; for decorating an answer `get` just gave. */
  peek(name: string): RegistryEntry | undefined {
    return this.cache.get(name)?.entry;
  }

  async get(name: string): Promise<RegistryEntry | undefined> {
    const file = this.fileOf(name);
    let stat;
    try {
      stat = await this.fs.stat(file);
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') {
        this.cache.delete(name);
        return undefined;
      }
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `cannot read registry entry ${file}: ${(err as Error).message}`,
        { volume: name, cause: err });
    }
    const cached = this.cache.get(name);
    if (cached && cached.mtimeMs === stat.mtimeMs && cached.ino === stat.ino && cached.size === stat.size) {
      return cached.entry;
    }
    const entry = await this.read(name);
    if (entry) this.cache.set(name, { entry, mtimeMs: stat.mtimeMs, ino: stat.ino, size: stat.size });
    return entry;
  }

  async list(): Promise<VolumeRecord[]> {
    let names: string[];
    try {
      names = (await this.fs.readdir(this.dir))
        .filter((file) => file.endsWith(SUFFIX) && !file.includes('.tmp-'))
        .map((file) => file.slice(0, -SUFFIX.length));
    } catch (err) {
      throw new StowageError(ErrorCodes.BACKEND_UNAVAILABLE, `cannot list registry ${this.dir}: ${(err as Error).message}`,
        { cause: err });
    }
    const present = new Set(names);
    for (const name of this.cache.keys()) if (!present.has(name)) this.cache.delete(name);
    const unseen = names.filter((name) => !this.cache.has(name));
    for (let i = 0; i < unseen.length; i += READ_CONCURRENCY) {
      await Promise.all(unseen.slice(i, i + READ_CONCURRENCY).map((name) => this.get(name).catch((err: unknown) => {
        this.log.warn(`skipping registry entry ${name}: ${(err as Error).message}`);
      })));
    }
    const records: VolumeRecord[] = [];
    for (const name of names.sort()) {
      const cached = this.cache.get(name);
      if (cached) records.push(cached.entry.record);
    }
    return records;
  }

  private async read(name: string): Promise<RegistryEntry | undefined> {
    let text: string;
    try {
      text = await this.fs.readFile(this.fileOf(name), 'utf8');
    } catch (err) {
      if (errnoCode(err) === 'ENOENT') return undefined;
      throw err;
    }
    let entry: RegistryEntry;
    try {
      entry = JSON.parse(text) as RegistryEntry;
    } catch (err) {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `registry entry of volume ${name} is not valid JSON`, { volume: name, cause: err });
    }
    if (entry?.format !== 1 || entry.record?.name !== name || typeof entry.dataDir !== 'string') {
      throw new StowageError(ErrorCodes.STATE_CORRUPT, `registry entry of volume ${name} is not in the expected format`, { volume: name });
    }
    return entry;
  }
}
