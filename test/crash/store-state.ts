/**
 * What the crash suite reads straight from disk, next to what the daemon answers: the persisted
 * mount records, temporary files, and the entries of a vfs store.
 */
import { lstat, readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Total of the mount counts in `ROOT/mounts.json` and the log it names, by volume and ID. Reads format 2 (see
 * src/core/mount-table.ts: `volumes.<volume>.ids.<id>`, next to the volume's `incarnation`) and
 * format 1 (`volumes.<volume>.<id>`, no `format` or `format: 1`); a count is found as a number or
 * as `{count}`. A file that is not JSON, has no `volumes` map, has an unknown format, or a format 2
 * volume without an `ids` map is reported, not treated as zero.
 */
export async function persistedMounts(root: string): Promise<{ total: number; ids: string[] }> {
  const path = join(root, 'mounts.json');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { total: 0, ids: [] };
    throw err;
  }
  const file = JSON.parse(text) as { format?: unknown; volumes?: unknown };
  if (typeof file.volumes !== 'object' || file.volumes === null) {
    throw new Error(`${path} has no "volumes" map: ${text.slice(0, 200)}`);
  }
  const format = file.format ?? 1;
  if (format !== 1 && format !== 2) throw new Error(`${path} has unknown format ${JSON.stringify(file.format)}: ${text.slice(0, 200)}`);
  const volumes = { ...(file.volumes as Record<string, unknown>) };
  // Format 2 with a `log`: the lines of ROOT/mounts.log whose header names it replace a volume's
  // records one by one (`{"volume", "mounts"}`, null when none are left); a torn last line is skipped.
  const logId = (file as { log?: unknown }).log;
  if (format === 2 && typeof logId === 'string') {
    const lines = (await readFile(join(root, 'mounts.log'), 'utf8').catch(() => '')).split('\n');
    const header = tryJson(lines[0] ?? '') as { log?: unknown } | undefined;
    if (header?.log === logId) {
      for (const line of lines.slice(1)) {
        const change = tryJson(line) as { volume?: unknown; mounts?: unknown } | undefined;
        if (typeof change?.volume !== 'string') continue;
        if (change.mounts === null) delete volumes[change.volume];
        else volumes[change.volume] = change.mounts;
      }
    }
  }
  let total = 0;
  const ids: string[] = [];
  for (const [volume, value] of Object.entries(volumes)) {
    let byId: unknown = value;
    if (format === 2) {
      byId = typeof value === 'object' && value !== null ? (value as { ids?: unknown }).ids : undefined;
      if (typeof byId !== 'object' || byId === null) {
        throw new Error(`${path} (format 2) has no "ids" map for volume ${volume}: ${text.slice(0, 200)}`);
      }
    }
    for (const [id, entry] of Object.entries((byId ?? {}) as Record<string, unknown>)) {
      const count = typeof entry === 'number' ? entry
        : typeof entry === 'object' && entry !== null && typeof (entry as { count?: unknown }).count === 'number'
          ? (entry as { count: number }).count : 1;
      if (count > 0) {
        total += count;
        ids.push(`${volume}/${id}×${count}`);
      }
    }
  }
  return { total, ids };
}

function tryJson(text: string): unknown {
  try {
    return JSON.parse(text) as unknown;
  } catch {
    return undefined;
  }
}

export interface TempFile {
  path: string;
  mtimeMs: number;
  size: number;
}

/** Top-level folders under the store's `.stowage` that hold user data (removed volumes), not stowage's files. */
const USER_DATA_FOLDERS = new Set(['removed', 'deleting']);

/**
 * Files and folders whose name contains "tmp" under `dir`, recursively. Under a store's
 * `.stowage`, the contents of removed volumes are user data and are not searched.
 */
export async function findTempFiles(dir: string, isStoreMeta = false): Promise<TempFile[]> {
  const found: TempFile[] = [];
  const walk = async (path: string, depth: number): Promise<void> => {
    const names = await readdir(path).catch(() => [] as string[]);
    for (const name of names) {
      const full = join(path, name);
      const stat = await lstat(full).catch(() => undefined);
      if (!stat) continue;
      if (/tmp/i.test(name)) found.push({ path: full, mtimeMs: stat.mtimeMs, size: stat.size });
      if (stat.isDirectory() && !(isStoreMeta && depth === 0 && USER_DATA_FOLDERS.has(name))) await walk(full, depth + 1);
    }
  };
  await walk(dir, 0);
  return found;
}

export interface StoreEntry {
  name: string;
  kind: 'directory' | 'other';
  /** Names inside a directory. */
  contents: string[];
}

/** The non-dot entries of a vfs store: where volume data directories live. */
export async function storeEntries(store: string): Promise<StoreEntry[]> {
  const entries: StoreEntry[] = [];
  for (const name of (await readdir(store)).sort()) {
    if (name.startsWith('.')) continue;
    const stat = await lstat(join(store, name));
    entries.push(stat.isDirectory()
      ? { name, kind: 'directory', contents: await readdir(join(store, name)) }
      : { name, kind: 'other', contents: [] });
  }
  return entries;
}

/** Entries of a folder, or none when it does not exist. */
export function entriesOf(dir: string): Promise<string[]> {
  return readdir(dir).catch(() => []);
}
