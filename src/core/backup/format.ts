import { z } from 'zod';
import { CodecSchema } from './codec.js';
import { isCanonicalName } from './raw-names.js';
import { XattrsSchema } from './xattrs.js';

/**
 * Text another machine wrote that stowage shows (a host, a lock's owner): control characters
 * become "?", so a record cannot drive the terminal of whoever lists or inspects it.
 */
export const shownText = (max: number) => z.string().max(max).transform((text) => text.replace(/[\u0000-\u001f\u007f-\u009f]/g, '?'));

/**
 * The repository format, as zod schemas: everything read from a repository passes through
 * these before it is used (a repository is input from other machines, and may be damaged).
 *
 * Layout (keys of the BlobStore):
 *   config                      format version, chunker, codec, pack size (written once)
 *   packs/<aa>/<sha256>         packs: compressed blobs back to back, then the pack's index
 *                               as JSON and its length (4 bytes, big-endian); named by the
 *                               sha256 of that trailing index (which names every blob by its
 *                               content's hash, with its offset, length and codec)
 *   index/<sha256>              that pack's index (blob id, kind, offset, length, codec)
 *   backups/<volume>/<id>       one record per backup: volume, parent, stats, manifest blobs
 *   locks/<id>                  lock objects (see locks.ts)
 * Blobs are named by the sha256 of their plaintext: the same data is stored once in a
 * repository, whatever volume or backup it comes from.
 */
export const FORMAT_VERSION = 1;

export const Sha256Schema = z.string().regex(/^[0-9a-f]{64}$/, 'not a sha256 in hex');

export const ChunkerParamsSchema = z.object({
  minSize: z.number().int().positive(),
  avgSize: z.number().int().positive(),
  maxSize: z.number().int().positive(),
  seed: z.string().min(1).max(200),
});

/** The largest pack size a repository's config may name. */
export const MAX_PACK_SIZE = 32 * 1024 * 1024;

export const RepoConfigSchema = z.object({
  format: z.literal(FORMAT_VERSION),
  id: z.string().regex(/^[0-9a-f]{32}$/),
  createdAt: z.string(),
  chunker: ChunkerParamsSchema,
  codec: CodecSchema,
  // Each backup holds two pack buffers and each restore keeps packs whole, of 1.25 times this: a
  // config another machine wrote must not make every job hold gigabytes (8 MiB by default).
  packSize: z.number().int().positive().max(MAX_PACK_SIZE),
});
export type RepoConfig = z.infer<typeof RepoConfigSchema>;

export const BlobTypeSchema = z.enum(['data', 'tree']);
export type BlobType = z.infer<typeof BlobTypeSchema>;

/**
 * The largest blob a repository holds: a chunk is at most the chunker's 64 MiB maximum, a
 * manifest blob (1000 entries) far less. Indexes come from other machines: a blob claiming more
 * would make a reader allocate (or decompress a bomb into) whatever it states.
 */
export const MAX_BLOB_BYTES = 64 * 1024 * 1024;

export const PackBlobSchema = z.object({
  id: Sha256Schema,
  type: BlobTypeSchema,
  offset: z.number().int().nonnegative(),
  length: z.number().int().nonnegative().max(MAX_BLOB_BYTES + 65536),
  rawLength: z.number().int().nonnegative().max(MAX_BLOB_BYTES),
  codec: CodecSchema,
});
export type PackBlob = z.infer<typeof PackBlobSchema>;

export const PackIndexSchema = z.object({
  format: z.literal(FORMAT_VERSION),
  pack: Sha256Schema,
  /** A pack holds up to the configured pack size (at most 1 GiB) plus the blob that crossed it. */
  size: z.number().int().nonnegative().max(1024 * 1024 * 1024 + MAX_BLOB_BYTES + 65536),
  blobs: z.array(PackBlobSchema),
}).refine((index) => index.blobs.every((b) => b.offset + b.length <= index.size), 'a blob reaches past the end of its pack');
export type PackIndex = z.infer<typeof PackIndexSchema>;

/** Docker's volume-name alphabet, which is also a safe key segment. */
export const VolumeNameSchema = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/, 'not a valid volume name');
/** `20261202T143500123Z-1a2b3c4d`: UTC time to the millisecond, then randomness; sorts by time. */
export const BackupIdSchema = z.string().regex(/^\d{8}T\d{9}Z-[0-9a-f]{8}$/, 'not a backup id');

/** Characters of a path a manifest records, at most (a walk through descriptors can reach longer ones). */
export const MAX_PATH = 4096;

/**
 * A path inside the backed-up tree, relative, `/`-separated: `.` is the root itself. Manifests
 * are hostile input on restore, so no empty segment, no `.` or `..`, no NUL, nothing absolute,
 * and bytes that are not UTF-8 only in the one spelling raw-names.ts gives them.
 */
export const EntryPathSchema = z.string().max(MAX_PATH).refine(
  (p) => p === '.' || (!p.startsWith('/') && !p.includes('\0') && p.split('/').every((s) => s !== '' && s !== '.' && s !== '..') && isCanonicalName(p)),
  'not a safe relative path',
);

/** Nanoseconds since the epoch; before 1970 is negative (a file's time can be set to any). */
const NsSchema = z.string().regex(/^-?\d{1,25}$/, 'not a time in nanoseconds');

export const EntrySchema = z.object({
  path: EntryPathSchema,
  type: z.enum(['dir', 'file', 'symlink', 'hardlink', 'fifo', 'chardev', 'blockdev']),
  /** Permission bits with setuid, setgid and sticky (the file type is `type`). */
  mode: z.number().int().min(0).max(0o7777),
  /** 2^32 - 1 is chown's "leave as is": not an owner. */
  uid: z.number().int().nonnegative().max(2 ** 32 - 2),
  gid: z.number().int().nonnegative().max(2 ** 32 - 2),
  mtimeNs: NsSchema,
  atimeNs: NsSchema,
  size: z.number().int().nonnegative(),
  /** A symlink's target (stored, never followed), or for a hardlink the path of its first name. */
  target: z.string().max(MAX_PATH).refine(isCanonicalName, 'not a name as a backup writes it').optional(),
  /** A file's content, in order. */
  chunks: z.array(Sha256Schema).optional(),
  /** Inode and change time: with size and mtime, what the files cache compares. */
  ino: z.union([z.number().int().nonnegative(), z.string().regex(/^\d{1,20}$/)]).optional(),
  ctimeNs: NsSchema.optional(),
  /**
   * A file that held fewer allocated blocks than its size when read (it had holes). Its chunks
   * of zeros are restored as holes again; a file without it gets every zero written, so a file
   * allocated on purpose (a database's preallocated space) stays allocated.
   */
  sparse: z.literal(true).optional(),
  /** A device's numbers, as Linux's dev_t holds them (12 bits of major, 20 of minor). */
  device: z.object({ major: z.number().int().min(0).max(0xfff), minor: z.number().int().min(0).max(0xfffff) }).strict().optional(),
  /** Extended attributes (xattrs.ts); a hardlink's are its first name's. */
  xattrs: XattrsSchema.optional(),
  /**
   * Some of the entry's attributes were left out (a name stowage does not back up, too many or
   * too large): the next backup reads them again instead of carrying these over.
   */
  xattrsPartial: z.literal(true).optional(),
}).superRefine((e, ctx) => {
  const bad = (message: string) => ctx.addIssue({ code: 'custom', message });
  if (e.path === '.' && e.type !== 'dir') bad('the root must be a directory');
  if (e.type === 'file' && !e.chunks) bad('a file needs its chunk list');
  if (e.type !== 'file' && e.chunks) bad('only a file has chunks');
  if (e.type !== 'file' && e.sparse) bad('only a file can be sparse');
  if ((e.type === 'symlink' || e.type === 'hardlink') && e.target === undefined) bad(`a ${e.type} needs a target`);
  if ((e.type === 'chardev' || e.type === 'blockdev') !== (e.device !== undefined)) bad('a device, and only a device, has device numbers');
  if ((e.type === 'fifo' || e.type === 'chardev' || e.type === 'blockdev') && (e.size !== 0 || e.target !== undefined)) bad(`a ${e.type} has no size or target`);
  if (e.type === 'hardlink' && !EntryPathSchema.safeParse(e.target).success) bad('a hardlink target must be a safe relative path');
  if (e.type === 'hardlink' && e.xattrs) bad('a hardlink\'s attributes are its first name\'s');
});
export type Entry = z.infer<typeof EntrySchema>;

export const ManifestBlobSchema = z.object({
  format: z.literal(FORMAT_VERSION),
  entries: z.array(z.unknown()),
});

export const BackupStatsSchema = z.object({
  entries: z.number().int().nonnegative(),
  files: z.number().int().nonnegative(),
  bytes: z.number().int().nonnegative(),
  /** Files whose content was read (the rest came from the files cache). */
  filesRead: z.number().int().nonnegative(),
  bytesRead: z.number().int().nonnegative(),
  newBlobs: z.number().int().nonnegative(),
  newRawBytes: z.number().int().nonnegative(),
  /** What this backup added to the repository: new packs and indexes, after compression. */
  newStoredBytes: z.number().int().nonnegative(),
  skipped: z.number().int().nonnegative(),
});
export type BackupStats = z.infer<typeof BackupStatsSchema>;

export const BackupRecordSchema = z.object({
  format: z.literal(FORMAT_VERSION),
  id: BackupIdSchema,
  volume: VolumeNameSchema,
  parent: BackupIdSchema.optional(),
  host: shownText(255),
  startedAt: shownText(64),
  finishedAt: shownText(64),
  /** The manifest: tree blobs whose entries, in order, are the backed-up tree. */
  manifest: z.array(Sha256Schema),
  stats: BackupStatsSchema,
  /** What was skipped and why (at most 100, the count is in stats.skipped). */
  warnings: z.array(z.string().max(4096)).max(100),
  /** The snapshot the backup was read from, when it was taken from one (added later: optional). */
  snapshot: VolumeNameSchema.optional(),
  /** The backend the volume was on (added later: optional). */
  backend: z.string().max(64).optional(),
  /**
   * What the manifest lists (added later: optional, absent means files): `files`, the tree's
   * entries; `blocks`, every block of a device (see block-format.ts), restorable only as a device.
   */
  kind: z.enum(['files', 'blocks']).optional(),
  /** A block backup's device: its size, block size, filesystem, and the snapshot it was read from. */
  device: z.object({
    sizeBytes: z.number().int().positive(),
    blockSize: z.number().int().positive().max(64 * 1024 * 1024),
    filesystem: z.string().regex(/^[a-z0-9]{1,16}$/),
    /** The snapshot's identity on its pool (name, thin id, creation transaction): the next backup's base. */
    source: z.string().max(300).optional(),
    /** True when the backup took that snapshot itself (it is then deleted once a later backup has a newer base). */
    snapshotTaken: z.boolean().optional(),
    /** The backup whose snapshot was the base of this one (blocks outside the changed ranges come from it). */
    base: BackupIdSchema.optional(),
  }).optional(),
  /**
   * Every entry's extended attributes were read, or carried over unchanged from a parent that
   * has this too (added later: optional). Without it a later backup reads them all again.
   */
  xattrsRead: z.literal(true).optional(),
  /** What a reader should know about how this backup was made (added later: optional). */
  notes: z.array(z.string().max(1000)).max(20).optional(),
});
export type BackupRecord = z.infer<typeof BackupRecordSchema>;

export const CONFIG_KEY = 'config';
export const packKey = (id: string): string => `packs/${id.slice(0, 2)}/${id}`;
export const indexKey = (id: string): string => `index/${id}`;

/**
 * The pack id a listed key names, or undefined when the key is not exactly where packKey puts a
 * pack. Anything else under packs/ (another repository nested there, a user's file) is not this
 * repository's: it is never counted as a pack, nor deleted as an unindexed one.
 */
export function packIdOfKey(key: string): string | undefined {
  const match = /^packs\/([0-9a-f]{2})\/([0-9a-f]{64})$/.exec(key);
  return match && match[2]!.startsWith(match[1]!) ? match[2] : undefined;
}

/** The pack id an index key names, or undefined for anything else under index/. */
export function indexIdOfKey(key: string): string | undefined {
  return /^index\/([0-9a-f]{64})$/.exec(key)?.[1];
}
export const backupKey = (volume: string, id: string): string => `backups/${volume}/${id}`;
export const backupPrefix = (volume?: string): string => (volume === undefined ? 'backups/' : `backups/${volume}/`);

/** A new backup id at `now` (ms since the epoch). */
export function newBackupId(now: number, random: string): string {
  const iso = new Date(now).toISOString(); // 2026-12-02T14:35:00.123Z
  return `${iso.slice(0, 10).replaceAll('-', '')}T${iso.slice(11, 23).replaceAll(':', '').replace('.', '')}Z-${random}`;
}

/**
 * Orders paths as a depth-first walk with sorted names visits them: a directory, then what it
 * holds, then its next sibling. Backups write manifests in this order and restores check it,
 * which rules out duplicates and lets the files cache follow the parent's manifest in step.
 */
export function comparePaths(a: string, b: string): number {
  if (a === b) return 0;
  if (a === '.') return -1;
  if (b === '.') return 1;
  const sa = a.split('/');
  const sb = b.split('/');
  const n = Math.min(sa.length, sb.length);
  for (let i = 0; i < n; i += 1) {
    if (sa[i] !== sb[i]) return sa[i]! < sb[i]! ? -1 : 1;
  }
  return sa.length - sb.length;
}
