import { ErrorCodes, messageOf, StowageError } from '../errors.js';
import { isBlockBackup, referencedChunks } from './block-format.js';
import { packKey, type BackupRecord } from './format.js';
import { readerLock, withLock } from './locks.js';
import { ManifestCheck } from './manifest-rules.js';
import type { CommonOptions } from './options.js';
import { RANGE_READ_FROM, type Repository } from './repository.js';

/** Problems kept word for word; beyond this they are counted. */
const MAX_PROBLEMS = 50;

export interface CheckResult {
  backups: number;
  /** Files in all backups (a block backup counts as one). */
  files: number;
  /** Distinct chunks and manifest blobs read back and re-hashed, each once. */
  chunks: number;
  bytes: number;
}

/**
 * Checks a whole repository: every backup record loads, every manifest loads and meets the
 * rules a restore applies (manifest-rules.ts), and every blob a backup needs is read back once
 * (in pack order, whole packs) and re-hashed. Unlike one verify
 * per backup, a chunk shared by many backups is read once, and the check goes on past a problem
 * to find them all. Fails with E_BACKUP_CORRUPT listing the problems and the backups they touch;
 * writes nothing to the repository but its own lock and the records of damaged copies it finds
 * (see DamagedBlobs), which let the next backup repair them.
 */
export async function checkRepository(repo: Repository, options: CommonOptions = {}): Promise<CheckResult> {
  return withLock(repo.store, readerLock('check of the repository', options), async () => {
    const problems: string[] = [];
    let unlisted = 0;
    const problem = (text: string) => {
      if (problems.length < MAX_PROBLEMS) problems.push(text.length > 500 ? `${text.slice(0, 500)}...` : text);
      else unlisted += 1;
    };
    const records = await repo.listBackups(undefined, { onBroken: (key, err) => problem(`${key} does not load: ${messageOf(err)}`) });
    // After the records: a record is written after its packs and indexes, so the index read now
    // holds every chunk of a backup that finished while the records were listed.
    await repo.reloadIndex();
    const bad = new Set<string>();
    // Each chunk a backup needs, with the length the pack indexes give it, which files' sizes are
    // checked against before any chunk is read: a copy that reads back has the length its index
    // gives, so when all copies agree that is what a restore writes. undefined: in no index, or
    // indexes that disagree (forged or damaged), each a problem of its own.
    const needed = new Map<string, number | undefined>();
    const need = (id: string): number | undefined => {
      if (needed.has(id)) return needed.get(id);
      const copies = repo.blobs.copies(id);
      let length: number | undefined = copies[0]?.rawLength;
      if (copies.some((at) => at.rawLength !== length)) {
        length = undefined;
        bad.add(id);
        problem(`chunk ${id}: the pack indexes give its copies different lengths (${copies.map((at) => `${at.rawLength} in ${packKey(at.pack)}`).join(', ')})`);
      }
      needed.set(id, length);
      return length;
    };
    const loaded: BackupRecord[] = [];
    const unreadable: string[] = [];
    // Manifests are read, and so checked against their ids and a restore's rules, while the
    // needed chunks are gathered.
    const manifests = new Set<string>();
    for (const record of records) {
      try {
        const refusal = await gatherChunks(repo, record, need);
        for (const id of record.manifest) manifests.add(id);
        if (refusal) {
          unreadable.push(`${record.volume}/${record.id}`);
          problem(refusal.message);
        } else {
          loaded.push(record);
        }
      } catch (err) {
        unreadable.push(`${record.volume}/${record.id}`);
        problem(`backup ${record.volume}/${record.id}: its manifest does not load (${messageOf(err)})`);
      }
    }
    const located = [...needed.keys()].filter((id) => {
      // A copy recorded as damaged is read too: the record may be forged, or the damage mended.
      if (repo.locate(id)) return true;
      bad.add(id);
      // The words a read gives: whether an index named the blob in a pack that is gone, or one does not load.
      problem(`chunk ${id} is missing (${repo.blobs.whyMissing(id)})`);
      return false;
    });
    // Pack by pack. Within one, small blobs first: the first is read with its whole pack, which
    // then serves the large ones too; a pack of large blobs only is read in ranges, each once.
    const small = (id: string) => (repo.locate(id)!.length < RANGE_READ_FROM ? 0 : 1);
    located.sort((a, b) => {
      const x = repo.locate(a)!;
      const y = repo.locate(b)!;
      return x.pack < y.pack ? -1 : x.pack > y.pack ? 1 : small(a) - small(b) || x.offset - y.offset;
    });
    const result: CheckResult = { backups: records.length, files: 0, chunks: 0, bytes: 0 };
    for (const id of manifests) {
      if (needed.has(id)) continue;
      result.chunks += 1;
      result.bytes += repo.locate(id)?.rawLength ?? 0;
    }
    for (const record of records) result.files += record.kind === 'blocks' ? 1 : record.stats.files;
    const totals = { totalEntries: result.chunks + located.length, totalBytes: located.reduce((sum, id) => sum + repo.locate(id)!.rawLength, result.bytes) };
    options.onProgress?.({ entries: result.chunks, files: 0, bytes: result.bytes, ...totals });
    try {
      for (const id of located) {
        try {
          const { data, release } = await repo.leaseBlob(id, { wholePacks: true });
          result.bytes += data.length;
          release();
          result.chunks += 1;
        } catch (err) {
          bad.add(id);
          problem(messageOf(err));
        }
        options.onProgress?.({ entries: result.chunks, files: 0, bytes: result.bytes, ...totals });
      }
    } finally {
      repo.releasePackCache();
    }
    if (problems.length === 0 && unlisted === 0) return result;
    const touched = [...unreadable, ...await backupsNeeding(repo, loaded, bad)];
    throw new StowageError(ErrorCodes.BACKUP_CORRUPT,
      `the check of ${repo.store.location} found ${problems.length + unlisted} problem(s)` +
      (touched.length > 0 ? `; backups that cannot be restored whole: ${touched.slice(0, 20).join(', ')}${touched.length > 20 ? ` and ${touched.length - 20} more` : ''}` : '') +
      `: ${problems.join('; ')}${unlisted > 0 ? `; and ${unlisted} more` : ''}`);
  });
}

/**
 * Passes each chunk `record` needs to `need`, which gives its length; for a file backup, checks
 * the manifest as a restore would and returns the first refusal.
 */
async function gatherChunks(repo: Repository, record: BackupRecord, need: (id: string) => number | undefined): Promise<StowageError | undefined> {
  if (isBlockBackup(record)) {
    for await (const id of referencedChunks(repo, record)) need(id);
    return undefined;
  }
  const manifest = new ManifestCheck(record, repo);
  for await (const entry of repo.entries(record)) {
    await manifest.next(entry);
    if (!entry.chunks) continue;
    let held: number | undefined = 0;
    for (const id of entry.chunks) {
      const length = need(id);
      held = held === undefined || length === undefined ? undefined : held + length;
    }
    manifest.size(entry, held);
  }
  return manifest.end();
}

/** The backups (volume/id) that reference any of `bad`: a second pass, made only when something is wrong. */
async function backupsNeeding(repo: Repository, records: BackupRecord[], bad: Set<string>): Promise<string[]> {
  if (bad.size === 0) return [];
  const touched: string[] = [];
  for (const record of records) {
    let needs = false;
    try {
      for await (const id of referencedChunks(repo, record)) {
        if (bad.has(id)) {
          needs = true;
          break;
        }
      }
    } catch {
      needs = true; // its manifest loaded a moment ago; it does not now
    }
    if (needs) touched.push(`${record.volume}/${record.id}`);
  }
  return touched;
}
