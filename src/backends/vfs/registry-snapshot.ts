import { createHash } from 'node:crypto';
import { z } from 'zod';
import { isValidVolumeName } from '../../core/names.js';
import { STORE_COMPONENT, registryEntrySchema } from './registry-entry.js';

/** A registry entry as last read, with the identity of the file it was read from. */
export const cachedSchema = z.object({ entry: registryEntrySchema, mtimeMs: z.number(), ino: z.number(), size: z.number() });
export type Cached = z.infer<typeof cachedSchema>;

/**
 * The node-local file keeping the registry's cache between runs (format 2): a header line, then
 * the entries. The header holds the digest of the entries' text, so a file damaged or cut short
 * is not used at all, and the fingerprint of the schema that wrote it: under the
 * same one, every entry was checked by that schema before it was cached, and a start does not
 * check 10 000 of them again (the schema's first, unoptimised run over them took 60-90 ms of a
 * start). Under another one, each entry is checked: a bad one costs one read, not the cache.
 * Format 1 (one JSON object, from earlier versions) is read the second way.
 */
const headerSchema = z.object({
  format: z.literal(2),
  storeId: z.string(),
  /** The removal epoch the cache was last checked against in full. */
  epoch: z.string().optional().catch(undefined),
  schema: z.string(),
  digest: z.string(),
});
const formatOneSchema = z.object({
  format: z.literal(1),
  storeId: z.string(),
  epoch: z.string().optional().catch(undefined),
  entries: z.array(z.unknown()),
});
const cacheEntrySchema = z.tuple([z.string(), cachedSchema]);

export interface RegistrySnapshot {
  epoch?: string;
  entries: Array<[string, Cached]>;
  /** Written in this format under this schema, every entry usable: saving it again would change nothing. */
  current: boolean;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

let fingerprint: string | undefined;
/** What a cached entry may be, as this code checks it: another one means the entries are checked afresh. */
export function schemaFingerprint(): string {
  fingerprint ??= sha256(JSON.stringify(z.toJSONSchema(cachedSchema, { unrepresentable: 'any' }))).slice(0, 32);
  return fingerprint;
}

export function encodeSnapshot(storeId: string, epoch: string | undefined, entries: Iterable<[string, Cached]>): string {
  const body = JSON.stringify([...entries]);
  const header = { format: 2, storeId, ...(epoch === undefined ? {} : { epoch }), schema: schemaFingerprint(), digest: sha256(body) };
  // JSON.stringify writes no line break of its own: the first one ends the header.
  return `${JSON.stringify(header)}\n${body}`;
}

/** The snapshot in `text` if it is one of `storeId`, whole; undefined otherwise. Throws on text that is no JSON. */
export function decodeSnapshot(text: string, storeId: string): RegistrySnapshot | undefined {
  const cut = text.indexOf('\n');
  if (cut < 0) {
    const old = formatOneSchema.safeParse(JSON.parse(text));
    if (!old.success || old.data.storeId !== storeId) return undefined;
    return { epoch: old.data.epoch, entries: usableEntries(old.data.entries, false), current: false };
  }
  const header = headerSchema.safeParse(JSON.parse(text.slice(0, cut)));
  if (!header.success || header.data.storeId !== storeId) return undefined;
  const body = text.slice(cut + 1);
  if (sha256(body) !== header.data.digest) return undefined;
  const raw: unknown = JSON.parse(body);
  if (!Array.isArray(raw)) return undefined;
  const checked = header.data.schema === schemaFingerprint();
  const entries = usableEntries(raw, checked);
  return { epoch: header.data.epoch, entries, current: checked && entries.length === raw.length };
}

/**
 * The entries that may answer for their volume: each names a volume whose record and data
 * directory carry that same name (as parseRegistryEntry requires of an entry read from the
 * store); `checked`: written under this schema, so their shape was checked before they were cached.
 */
function usableEntries(raw: readonly unknown[], checked: boolean): Array<[string, Cached]> {
  const usable: Array<[string, Cached]> = [];
  for (const item of raw) {
    let pair: [string, Cached];
    if (checked) {
      // Written by this code from entries its schema passed, and unchanged since (the digest).
      pair = item as [string, Cached];
    } else {
      const parsed = cacheEntrySchema.safeParse(item);
      if (!parsed.success) continue;
      pair = parsed.data;
    }
    const [name, cached] = Array.isArray(pair) ? pair : [];
    if (typeof name !== 'string' || cached?.entry?.record?.name !== name || cached.entry.dataDir !== name) continue;
    if (!STORE_COMPONENT.test(name) || !isValidVolumeName(name)) continue;
    usable.push([name, cached]);
  }
  return usable;
}
