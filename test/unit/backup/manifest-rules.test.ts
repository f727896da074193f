import { createCipheriv, createHash } from 'node:crypto';
import { cp, link, mkdir, mkdtemp, open, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { FORMAT_VERSION, indexKey, packKey, type BackupRecord, type Entry } from '../../../src/core/backup/format.js';
import { backupTree, checkRepository, Repository, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ManifestCheck } from '../../../src/core/backup/manifest-rules.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { collect } from './tree-helpers.js';

const MiB = 1024 * 1024;
const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };

function pseudoRandom(size: number, seed: string): Buffer {
  return createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));
}

/** A manifest a restore refuses must not verify: the same rules, the same words. */
describe('verify and the repository check apply the rules a restore applies to a manifest', () => {
  let base = '';
  let repo: Repository;
  let good: BackupRecord;
  let entries: Entry[] = [];
  const entry = (path: string) => entries.find((e) => e.path === path)!;

  /** Writes `manifest` (entries of the good backup, rearranged) as a backup of volume `evil`, with the library's own writer. */
  const forge = async (manifest: unknown[], id: string): Promise<BackupRecord> => {
    const writer = repo.newWriter();
    const ids = manifest.length === 0 ? [] : [(await writer.add('tree', Buffer.from(JSON.stringify({ format: FORMAT_VERSION, entries: manifest })))).id];
    await writer.flush();
    const record = { ...good, id, volume: 'evil', manifest: ids, parent: undefined };
    await repo.putBackupRecord(record);
    return record;
  };
  const failure = (promise: Promise<unknown>) => promise.then(() => new Error('it passed'), (err: unknown) => err as Error);

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-manifest-rules-'));
    const src = join(base, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    await mkdir(join(src, 'e'));
    await writeFile(join(src, 'a.txt'), 'hello\n');
    await writeFile(join(src, 'd/b.bin'), pseudoRandom(600 * 1024, 'b'));
    await link(join(src, 'a.txt'), join(src, 'd/hard'));
    await link(join(src, 'd/b.bin'), join(src, 'z-hard'));
    await symlink('a.txt', join(src, 'link'));
    // Holes of 2 MiB and more: whole chunks of zeros, the same one again and again.
    const handle = await open(join(src, 'sparse.img'), 'wx');
    await handle.write(pseudoRandom(100 * 1024, 'data'), 0, 100 * 1024, 2 * MiB);
    await handle.truncate(5 * MiB);
    await handle.close();
    await mkdir(join(base, 'repo'));
    repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }), { chunker: CHUNKER, packSize: MiB });
    good = await backupTree(src, repo, { volume: 'good' });
    entries = (await collect(repo, good)).entries;
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('a backup with hardlinks, a symlink and a sparse file verifies, checks and restores', async () => {
    expect(entries.filter((e) => e.type === 'hardlink').map((e) => [e.path, e.target])).toEqual([['d/hard', 'a.txt'], ['z-hard', 'd/b.bin']]);
    expect(entry('link')).toMatchObject({ type: 'symlink', target: 'a.txt' });
    const sparse = entry('sparse.img');
    expect(sparse.sparse).toBe(true);
    expect(new Set(sparse.chunks).size).toBeLessThan(sparse.chunks!.length);
    expect(await verifyBackup(repo, 'good', good.id)).toMatchObject({ files: 3 });
    expect(await checkRepository(repo)).toMatchObject({ backups: 1 });
    const out = join(base, 'out-good');
    await mkdir(out);
    await restoreTree(repo, 'good', good.id, out);
    expect((await readdir(out)).sort()).toEqual(['a.txt', 'd', 'e', 'link', 'sparse.img', 'z-hard']);
  });

  it('a file\'s size counts every chunk each time it comes, a sparse file\'s chunks of zeros included', async () => {
    const sparse = entry('sparse.img');
    const zero = sparse.chunks!.at(-1)!;
    const zeroLength = repo.locate(zero)!.rawLength;
    const longer = await forge([entry('.'), { ...sparse, chunks: [...sparse.chunks!, zero, zero], size: sparse.size + 2 * zeroLength }], '20300101T000000000Z-00000001');
    expect(await verifyBackup(repo, 'evil', longer.id)).toMatchObject({ files: 1 });
    const out = join(base, 'out-longer');
    await mkdir(out);
    await restoreTree(repo, 'evil', longer.id, out);
    await repo.store.delete([`backups/evil/${longer.id}`]);
  });

  it('each manifest a restore refuses fails verify and the check, naming the backup and the entry', async () => {
    const root = entry('.');
    const a = entry('a.txt');
    const hard = entry('d/hard');
    const asLink = { ...entry('link'), path: 'z' };
    const sparse = entry('sparse.img');
    const chunksHold = sparse.chunks!.reduce((sum, id) => sum + repo.locate(id)!.rawLength, 0);
    const cases: Array<[label: string, manifest: unknown[], path: string | undefined, why: RegExp]> = [
      ['a file under a symlink', [root, a, asLink, { ...a, path: 'z/pwn' }], 'z/pwn', /its parent is not a directory of this backup/],
      ['a missing parent directory', [root, a, { ...a, path: 'nodir/f' }], 'nodir/f', /its parent is not a directory of this backup/],
      ['a hardlink through a symlink', [root, a, asLink, { ...hard, path: 'zh', target: 'z/x' }], 'zh', /its hardlink target "z\/x" is not a restored file/],
      ['a hardlink to the root', [root, a, { ...hard, path: 'hl', target: '.' }], 'hl', /its hardlink target "\." is not a restored file/],
      ['a hardlink to a directory', [root, a, entry('d'), { ...hard, path: 'e', target: 'd' }], 'e', /its hardlink target "d" is not a restored file/],
      ['a hardlink to nothing', [root, a, { ...hard, path: 'c', target: 'b' }], 'c', /its hardlink target "b" is not a restored file/],
      ['a hardlink to a later entry', [root, { ...hard, path: 'a', target: 'b' }, { ...a, path: 'b' }], 'a', /a hardlink must point to an earlier file/],
      ['a size past its chunks', [root, { ...a, size: 7 }], 'a.txt', /its chunks hold 6 bytes, the entry says 7/],
      ['a sparse file\'s size short of its chunks of zeros', [root, { ...sparse, size: chunksHold - 1 }], 'sparse.img', new RegExp(`its chunks hold ${chunksHold} bytes, the entry says ${chunksHold - 1}`)],
      ['the root not first', [a, root], 'a.txt', /the first entry must be the root directory/],
      ['entries out of order', [root, entry('d'), a], 'a.txt', /out of order or duplicate \(after "d"\)/],
      ['a duplicate', [root, a, a], 'a.txt', /out of order or duplicate/],
      ['an empty symlink target', [root, { ...asLink, target: '' }], 'z', /a symlink's target must be 1 to 4095 bytes without NUL/],
      ['an empty manifest', [], undefined, /has an empty manifest/],
      ['a name past 255 bytes', [root, { ...a, path: `z${'x'.repeat(279)}` }], `z${'x'.repeat(279)}`, /its name is 280 bytes, and no filesystem a restore writes into takes more than 255/],
    ];
    const forged: Array<{ label: string; id: string; message: string }> = [];
    for (const [i, [label, manifest, path, why]] of cases.entries()) {
      const record = await forge(manifest, `20300101T000000000Z-1000${String(i).padStart(4, '0')}`);
      const said = path === undefined ? `backup evil/${record.id} ` : `backup evil/${record.id}: manifest entry ${JSON.stringify(path)} is refused: `;
      const verified = await failure(verifyBackup(repo, 'evil', record.id));
      expect(verified, label).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
      expect(verified.message, label).toContain(said);
      expect(verified.message, label).toMatch(why);
      // What a restore says, word for word.
      const out = join(base, `out-${i}`);
      await mkdir(out);
      const restored = await failure(restoreTree(repo, 'evil', record.id, out));
      expect(restored, label).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: verified.message });
      expect(await readdir(out), label).toEqual([]);
      forged.push({ label, id: record.id, message: verified.message });
    }
    const checked = await failure(checkRepository(repo));
    expect(checked).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    const touched = /backups that cannot be restored whole: ([^:]*):/.exec(checked.message)?.[1]?.split(', ');
    expect(touched?.sort()).toEqual(forged.map(({ id }) => `evil/${id}`).sort());
    for (const { label, message } of forged) expect(checked.message, label).toContain(message);
    for (const { id } of forged) await repo.store.delete([`backups/evil/${id}`]);
    expect(await checkRepository(repo)).toMatchObject({ backups: 1 });
  });

  it('verify goes on reading chunks past a refused entry, and names both', async () => {
    const a = entry('a.txt');
    const missing = '0'.repeat(64);
    const record = await forge([entry('.'), { ...a, size: 7 }, { ...a, path: 'b', chunks: [missing] }], '20300101T000000000Z-00000002');
    const verified = await failure(verifyBackup(repo, 'evil', record.id));
    expect(verified).toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT });
    expect(verified.message).toMatch(new RegExp(`^backup evil/${record.id}: manifest entry "a.txt" is refused: its chunks hold 6 bytes, the entry says 7; and 1 chunk does not read back \\(0 damaged, 1 missing\\): chunk ${missing} is missing`));
    await repo.store.delete([`backups/evil/${record.id}`]);
  });

  it('hardlink targets wait in a bounded list, resolved by a pass over the manifest read so far each time it fills', async () => {
    const root = entry('.');
    const a = entry('a.txt');
    const hard = entry('d/hard');
    const files = ['f0', 'f1', 'f2', 'f3', 'f4', 'f5'].map((path) => ({ ...a, path }));
    const links = (missingAt: number) => files.map((f, i) => ({ ...hard, path: `l${i}`, target: i === missingAt ? 'g' : f.path }));
    const run = async (record: BackupRecord) => {
      const manifest = (await collect(repo, record)).entries;
      const passes = vi.spyOn(repo, 'entries');
      try {
        const check = new ManifestCheck(record, repo, { targets: 2, chars: 10_000 });
        for (const e of manifest) await check.next(e);
        return { refusal: await check.end(), passes: passes.mock.calls.length };
      } finally {
        passes.mockRestore();
      }
    };
    const whole = await forge([root, ...files, ...links(-1)], '20300101T000000000Z-00000003');
    expect(await run(whole)).toEqual({ refusal: undefined, passes: 3 });
    const broken = await forge([root, ...files, ...links(3)], '20300101T000000000Z-00000004');
    const { refusal, passes } = await run(broken);
    expect(passes).toBe(2);
    expect(refusal?.message).toBe(`backup evil/${broken.id}: manifest entry "l3" is refused: its hardlink target "g" is not a restored file, symlink, FIFO or device`);
    // Without links, no pass at all.
    expect(await run(await forge([root, ...files], '20300101T000000000Z-00000005'))).toEqual({ refusal: undefined, passes: 0 });
    for (const id of [whole.id, broken.id, '20300101T000000000Z-00000005']) await repo.store.delete([`backups/evil/${id}`]);
  });

  it('the check does not take a file\'s size from a copy whose index gives the chunk another length', async () => {
    const copy = join(base, 'repo-lengths');
    await cp(join(base, 'repo'), copy, { recursive: true });
    const store = new VfsBlobStore(copy, { durable: false });
    let r = await Repository.open(store);
    const a = entry('a.txt');
    const id = a.chunks![0]!;
    const real = r.locate(id)!;
    // A second copy of the pack, whose index (listed first) says the chunk is 7 bytes.
    const ghost = '0'.repeat(64);
    await mkdir(join(copy, 'packs', '00'), { recursive: true });
    await cp(join(copy, packKey(real.pack)), join(copy, packKey(ghost)));
    const index = await r.readIndex(indexKey(real.pack));
    await writeFile(join(copy, indexKey(ghost)), JSON.stringify({ ...index, pack: ghost, blobs: index.blobs.map((b) => (b.id === id ? { ...b, rawLength: 7 } : b)) }));
    r = await Repository.open(store);
    expect(r.locate(id)).toMatchObject({ pack: ghost, rawLength: 7 });
    repo = r;
    try {
      const record = await forge([entry('.'), { ...a, size: 7 }], '20300101T000000000Z-00000006');
      const checked = await failure(checkRepository(await Repository.open(store)));
      expect(checked.message).toContain(`chunk ${id}: the pack indexes give its copies different lengths`);
      expect(checked.message).toMatch(new RegExp(`backups that cannot be restored whole: [^:]*evil/${record.id}`));
      // Verify and restore go by the bytes that read back.
      await expect(verifyBackup(await Repository.open(store), 'evil', record.id)).rejects.toMatchObject({ message: expect.stringContaining('its chunks hold 6 bytes, the entry says 7') });
    } finally {
      repo = await Repository.open(new VfsBlobStore(join(base, 'repo'), { durable: false }));
    }
  });
});
