import { join } from 'node:path';
import { z } from 'zod';
import { errnoCode } from '../../core/errors.js';
import type { FsPort } from '../../core/fs-port.js';
import { readFileNoFollow } from '../../core/safe-path.js';
import { parseRecordText } from '../../core/schema/parse-record.js';
import { mountOf, parseMountinfo, type MountinfoEntry } from './store-sharing.js';

export const META_DIR = '.stowage';

/** Every directory stowage keeps inside a store; each is checked at start and kept 0700. */
export interface StoreLayout {
  meta: string;
  volumes: string;
  removed: string;
  deleting: string;
  journal: string;
  cluster: string;
  nodes: string;
  locks: string;
}

export function storeLayout(path: string): StoreLayout {
  const meta = join(path, META_DIR);
  const cluster = join(meta, 'cluster');
  return {
    meta,
    volumes: join(meta, 'volumes'),
    removed: join(meta, 'removed'),
    deleting: join(meta, 'deleting'),
    journal: join(meta, 'journal'),
    cluster,
    nodes: join(cluster, 'nodes'),
    locks: join(cluster, 'locks'),
  };
}

/** The order matters: parents before children. */
export function internalDirs(layout: StoreLayout): string[] {
  return [layout.meta, layout.volumes, layout.removed, layout.deleting, layout.journal, layout.cluster, layout.nodes, layout.locks];
}

export const storeMarkerSchema = z.object({
  format: z.literal(1),
  storeId: z.string().regex(/^[0-9a-f]{8,64}$/),
  createdAt: z.string(),
  createdBy: z.string(),
});
export type StoreMarker = z.infer<typeof storeMarkerSchema>;

export const nodeStateSchema = z.object({ path: z.string(), storeId: z.string() }).partial();

/** Reads a JSON record without following symlinks; undefined when the file does not exist. */
export async function readRecord<S extends z.ZodType>(fs: FsPort, schema: S, path: string, what: string): Promise<z.infer<S> | undefined> {
  const text = await readFileNoFollow(fs, path);
  return text === undefined ? undefined : parseRecordText(schema, text, `${what} ${path}`);
}

/** Names of `.stowage/cluster/nodes/<id>.json` records other than this node's. */
export async function otherNodeRecords(fs: FsPort, nodesDir: string, nodeId: string): Promise<string[]> {
  const files = await fs.readdir(nodesDir).catch((err: unknown) => {
    if (errnoCode(err) === 'ENOENT') return [] as string[];
    throw err;
  });
  return files
    .filter((file) => file.endsWith('.json') && !file.startsWith('.') && file !== `${nodeId}.json`)
    .map((file) => file.slice(0, -'.json'.length))
    .sort();
}

/** The mount holding `path`, from /proc/self/mountinfo; undefined where that cannot be read (memfs, non-Linux). */
export async function mountHolding(fs: FsPort, path: string): Promise<MountinfoEntry | undefined> {
  const text = await fs.readFile('/proc/self/mountinfo', 'utf8').catch(() => undefined);
  return typeof text === 'string' ? mountOf(parseMountinfo(text), path) : undefined;
}
