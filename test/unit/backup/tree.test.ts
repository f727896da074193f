import { createCipheriv, createHash, randomBytes } from 'node:crypto';
import { chmod, chown, cp, link, lstat, lutimes, mkdir, mkdtemp, readdir, readFile, readlink, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { listAll } from '../../../src/core/backup/blob-store.js';
import { EntrySchema, FORMAT_VERSION, packKey, type BackupRecord, type Entry } from '../../../src/core/backup/format.js';
import { acquireLock } from '../../../src/core/backup/locks.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, checkRepository, deleteBackup, gc, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { collect } from './tree-helpers.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';

/** Small chunks so a few MiB exercise many of them. */
const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };
const isRoot = process.getuid?.() === 0;

/** Random-looking bytes that are the same on every run, so chunk counts are too. */
function pseudoRandom(size: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

interface Snapshot { type: string; mode: number; uid: number; gid: number; mtimeMs: number; size: number; sha?: string; target?: string; rdev?: number; ino: number }

/** Every entry under `root` with its metadata and content hash, keyed by relative path. */
async function describeTree(root: string): Promise<Map<string, Snapshot>> {
  const out = new Map<string, Snapshot>();
  const visit = async (rel: string): Promise<void> => {
    const abs = rel === '' ? root : join(root, rel);
    const st = await lstat(abs);
    // Cut from the nanoseconds: the float mtimeMs rounds up within 0.2 µs of a millisecond.
    const { mtimeNs } = await lstat(abs, { bigint: true });
    const type = st.isDirectory() ? 'dir' : st.isSymbolicLink() ? 'symlink' : st.isFile() ? 'file' : st.isFIFO() ? 'fifo'
      : st.isCharacterDevice() ? 'chardev' : st.isBlockDevice() ? 'blockdev' : 'other';
    out.set(rel || '.', {
      type, mode: st.mode & 0o7777, uid: st.uid, gid: st.gid, mtimeMs: Number(mtimeNs / 1_000_000n), size: type === 'file' ? st.size : 0, ino: st.ino,
      ...(type === 'chardev' || type === 'blockdev' ? { rdev: st.rdev } : {}),
      ...(type === 'file' ? { sha: createHash('sha256').update(await readFile(abs)).digest('hex') } : {}),
      ...(type === 'symlink' ? { target: await readlink(abs) } : {}),
    });
    if (type === 'dir') for (const name of await readdir(abs)) await visit(rel === '' ? name : `${rel}/${name}`);
  };
  await visit('');
  return out;
}

/** The snapshots without inode numbers, which differ between trees by nature. */
const comparable = (m: Map<string, Snapshot>) => new Map([...m].map(([k, { ino: _ino, ...rest }]) => [k, rest]));

describe('file-level backup and restore', () => {
  let base = '';
  let store: VfsBlobStore;
  let repo: Repository;
  const dirs = { src: '', out: '' };
  let socketServer: Server | undefined;

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-tree-'));
    store = new VfsBlobStore(join(base, 'repo'), { durable: false });
    await mkdir(join(base, 'repo'));
    repo = await Repository.init(store, { chunker: CHUNKER, packSize: 1024 * 1024 });
    dirs.src = join(base, 'src');
    await mkdir(join(dirs.src, 'sub/deeper'), { recursive: true });
    await writeFile(join(dirs.src, 'empty'), '');
    await writeFile(join(dirs.src, 'small.txt'), 'hello backup\n');
    await writeFile(join(dirs.src, 'sub/big.bin'), pseudoRandom(12 * 1024 * 1024 + 17, 'big'));
    await writeFile(join(dirs.src, 'sub/text.log'), 'line of text\n'.repeat(100_000));
    for (let i = 0; i < 200; i += 1) await writeFile(join(dirs.src, 'sub/deeper', `f${i}`), pseudoRandom(2048 + i, `f${i}`));
    await symlink('/etc/passwd', join(dirs.src, 'abs-link'));
    await symlink('sub/../small.txt', join(dirs.src, 'rel-link'));
    await symlink('nowhere', join(dirs.src, 'dangling'));
    await link(join(dirs.src, 'small.txt'), join(dirs.src, 'sub/hard-small'));
    await execa('mkfifo', [join(dirs.src, 'pipe')]);
    await chmod(join(dirs.src, 'pipe'), 0o620);
    await utimes(join(dirs.src, 'pipe'), new Date('2007-01-01T00:00:00Z'), new Date('2008-01-01T00:00:00Z'));
    // A socket is only an address while its server listens: it is left out, with a warning.
    socketServer = createServer();
    await new Promise<void>((resolve) => socketServer!.listen(join(dirs.src, 'sock'), resolve));
    if (isRoot) {
      // Devices as a Docker-in-Docker volume holds them: overlayfs whiteouts are 0:0.
      await execa('mknod', [join(dirs.src, 'whiteout'), 'c', '0', '0']);
      await execa('mknod', [join(dirs.src, 'sub/null'), 'c', '1', '3']);
      await execa('mknod', [join(dirs.src, 'sub/blk'), 'b', '7', '200']);
      // Numbers past a byte (as NVMe partitions have them) take dev_t's other bits.
      await execa('mknod', [join(dirs.src, 'sub/wide'), 'b', '259', '300000']);
      await chown(join(dirs.src, 'sub/null'), 77, 88);
      await chmod(join(dirs.src, 'sub/null'), 0o666);
      await chmod(join(dirs.src, 'sub/blk'), 0o600);
      await utimes(join(dirs.src, 'sub/blk'), new Date('2009-01-01T00:00:00Z'), new Date('2010-01-01T00:00:00Z'));
    }
    await chmod(join(dirs.src, 'small.txt'), 0o640);
    await chmod(join(dirs.src, 'sub/deeper'), 0o2750);
    await chmod(join(dirs.src, 'sub/big.bin'), 0o4711);
    if (isRoot) {
      await chown(join(dirs.src, 'sub/big.bin'), 1234, 5678);
      await chmod(join(dirs.src, 'sub/big.bin'), 0o4711);
      await chown(join(dirs.src, 'sub'), 42, 43);
    }
    // 0.1 µs below a millisecond: a restore sets times to the microsecond, and stat's float
    // mtimeMs of the original already reads as the next millisecond.
    await execa('touch', ['-m', '-d', '@1796510721.275999900', join(dirs.src, 'sub/deeper/f7')]);
    await utimes(join(dirs.src, 'sub/text.log'), new Date('2001-02-03T04:05:06.789Z'), new Date('2002-03-04T05:06:07.891Z'));
    await lutimes(join(dirs.src, 'abs-link'), new Date('2003-01-01T00:00:00Z'), new Date('2004-01-01T00:00:00Z'));
    await utimes(join(dirs.src, 'sub'), new Date('2005-01-01T00:00:00Z'), new Date('2006-01-01T00:00:00Z'));
  });
  afterAll(async () => {
    socketServer?.close();
    await rm(base, { recursive: true, force: true });
  });

  const freshDir = async (name: string) => {
    const d = join(base, name);
    await mkdir(d);
    return d;
  };

  let first: BackupRecord;

  it('round-trips a tree with every entry kind: content, modes, owners, times, symlinks, hardlinks', async () => {
    const warnings: string[] = [];
    const progress: number[] = [];
    const last: { files?: number } = {};
    first = await backupTree(dirs.src, repo, { volume: 'vol-a', onWarning: (w) => warnings.push(w), onProgress: (p) => { progress.push(p.bytes); last.files = p.files; } });
    expect(warnings).toEqual(['sock: socket skipped']);
    expect(first.warnings).toEqual(['sock: socket skipped']);
    expect(first.stats).toMatchObject({ files: 204, filesRead: 204, skipped: 1 });
    // The last report is the whole backup, files included (they finish after the walk reports them).
    expect(progress.at(-1)).toBe(first.stats.bytes);
    expect(last.files).toBe(204);
    const out = await freshDir('restore-1');
    let lastRestored: { files: number; bytes: number } | undefined;
    const restored = await restoreTree(repo, 'vol-a', first.id, out, { onProgress: (p) => { lastRestored = { files: p.files, bytes: p.bytes }; } });
    expect(restored.files).toBe(204);
    expect(lastRestored).toEqual({ files: 204, bytes: first.stats.bytes });
    const want = await describeTree(dirs.src);
    want.delete('sock');
    const got = await describeTree(out);
    expect(comparable(got)).toEqual(comparable(want));
    // Hardlinked names share an inode again; symlinks were stored, not followed.
    expect(got.get('sub/hard-small')!.ino).toBe(got.get('small.txt')!.ino);
    expect(got.get('abs-link')).toMatchObject({ type: 'symlink', target: '/etc/passwd' });
    if (isRoot) expect(got.get('sub/big.bin')).toMatchObject({ uid: 1234, gid: 5678, mode: 0o4711 });
    // FIFOs and devices come back as what they were (compared whole above, numbers included).
    expect(got.get('pipe')).toMatchObject({ type: 'fifo', mode: 0o620 });
    if (isRoot) expect([got.get('whiteout')?.type, got.get('sub/null')?.uid, got.get('sub/blk')?.type]).toEqual(['chardev', 77, 'blockdev']);
    expect(await verifyBackup(repo, 'vol-a', first.id)).toMatchObject({ files: 204 });
  });

  it('ends its progress with the whole count when the last file finishes after the walk (a large one)', async () => {
    const src = await freshDir('progress-src');
    await writeFile(join(src, 'a.txt'), 'small');
    await writeFile(join(src, 'z.bin'), randomBytes(6 * 1024 * 1024));
    let lastBackup: { files: number; bytes: number } | undefined;
    const record = await backupTree(src, repo, { volume: 'vol-progress', parent: false, onProgress: (p) => { lastBackup = { files: p.files, bytes: p.bytes }; } });
    expect(lastBackup).toEqual({ files: 2, bytes: record.stats.bytes });
    let lastRestore: { files: number; bytes: number } | undefined;
    await restoreTree(repo, 'vol-progress', record.id, await freshDir('progress-out'), { onProgress: (p) => { lastRestore = { files: p.files, bytes: p.bytes }; } });
    expect(lastRestore).toEqual({ files: 2, bytes: record.stats.bytes });
    await deleteBackup(repo, 'vol-progress', record.id);
  });

  it('backs up again, reading every file, when the pack holding the previous backup\'s list of files is lost', async () => {
    const src = await freshDir('lost-manifest-src');
    for (let i = 0; i < 20; i += 1) await writeFile(join(src, `f${i}`), `file ${i}`);
    const dir = await freshDir('lost-manifest-repo');
    const lossy = await Repository.init(new VfsBlobStore(dir, { durable: false }), { chunker: CHUNKER, packSize: 1024 * 1024 });
    const first = await backupTree(src, lossy, { volume: 'lossy', parent: false });
    await rm(join(dir, packKey(lossy.locate(first.manifest[0]!)!.pack)));
    const again = await Repository.open(new VfsBlobStore(dir, { durable: false }));
    const warnings: string[] = [];
    const second = await backupTree(src, again, { volume: 'lossy', onWarning: (w) => warnings.push(w) });
    expect(second.parent).toBe(first.id);
    expect(warnings).toEqual([expect.stringMatching(new RegExp(`^the previous backup ${first.id}'s list of files cannot be read past some point, so the files after it are read again: `))]);
    expect(second.warnings).toEqual(warnings);
    expect(second.stats).toMatchObject({ files: 20, filesRead: 20 });
    // Its own chunks are all there again: it verifies and restores whole.
    expect(await verifyBackup(again, 'lossy', second.id)).toMatchObject({ files: 20 });
    const out = await freshDir('lost-manifest-out');
    await restoreTree(again, 'lossy', second.id, out);
    expect(await readFile(join(out, 'f7'), 'utf8')).toBe('file 7');
  });

  it('a list and a whole check skip a record deleted between listing and reading it (a delete beside them), and report nothing', async () => {
    const src = await freshDir('listed-src');
    await writeFile(join(src, 'a.txt'), 'listed');
    const dir = await freshDir('listed-repo');
    const store = new VfsBlobStore(dir, { durable: false });
    const listed = await Repository.init(store, { chunker: CHUNKER });
    const kept = await backupTree(src, listed, { volume: 'listed', parent: false });
    // The store lists one more record than it then holds: what a delete on another node does between the two.
    const ghost = 'backups/listed/20260101T000000000Z-0badc0de';
    const racing = Object.assign(Object.create(store) as VfsBlobStore, {
      list: async (prefix: string, options?: { pageSize?: number; startAfter?: string }) => {
        const page = await store.list(prefix, options);
        if (!ghost.startsWith(prefix) || (options?.startAfter ?? '') >= ghost) return page;
        return { ...page, objects: [...page.objects, { key: ghost, size: 10 }].sort((a, b) => (a.key < b.key ? -1 : 1)) };
      },
    });
    const seen = await Repository.open(racing);
    expect((await seen.listBackups()).map((r) => r.id)).toEqual([kept.id]);
    expect(await checkRepository(seen)).toMatchObject({ backups: 1, files: 1 });
    // A backup that finishes on another node while the check lists the records: its chunks are
    // in packs the check had not seen when it began, and are no problem.
    await writeFile(join(src, 'b.txt'), randomBytes(200_000));
    let finished: BackupRecord | undefined;
    const busy = Object.assign(Object.create(store) as VfsBlobStore, {
      list: async (prefix: string, options?: { pageSize?: number; startAfter?: string }) => {
        if (prefix === 'backups/' && !finished) finished = await backupTree(src, await Repository.open(store), { volume: 'listed', parent: false });
        return store.list(prefix, options);
      },
    });
    expect(await checkRepository(await Repository.open(busy))).toMatchObject({ backups: 2, files: 3 });
    expect(finished).toBeDefined();
  });

  it('names the object and what to do when a record or lock in the repository is not one stowage wrote', async () => {
    const src = await freshDir('stray-src');
    await writeFile(join(src, 'a.txt'), 'stray');
    const dir = await freshDir('stray-repo');
    const stray = await Repository.init(new VfsBlobStore(dir, { durable: false }), { chunker: CHUNKER });
    const kept = await backupTree(src, stray, { volume: 'stray', parent: false });
    await writeFile(join(dir, 'backups', 'stray', `${kept.id}.bad`), 'garbage');
    await expect(stray.listBackups('stray')).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_CORRUPT,
      message: expect.stringMatching(new RegExp(`^backups/stray/${kept.id}\\.bad in ${dir} is no backup record stowage can read \\(.*\\); put it right from a copy of the repository, or move it out of the repository by hand$`)),
    });
    await expect(gc(stray)).rejects.toMatchObject({ message: expect.stringMatching(/moved out of it by hand/) });
    await rm(join(dir, 'backups', 'stray', `${kept.id}.bad`));
    await writeFile(join(dir, 'locks', '0123456789abcdef-0000000000'), 'garbage');
    await expect(backupTree(src, stray, { volume: 'stray' })).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(/lock object locks\/0123456789abcdef-0000000000 .*: it is no lock stowage wrote; once no stowage holds it, delete it by hand/),
    });
  });

  it('a delete waits for a garbage collection running elsewhere, as a backup does, and then deletes', async () => {
    const src = await freshDir('gc-wait-src');
    await writeFile(join(src, 'a.txt'), 'waits');
    const made = await backupTree(src, repo, { volume: 'vol-gc-wait', parent: false });
    const collecting = await acquireLock(repo.store, { kind: 'exclusive', purpose: 'garbage collection', owner: 'other-node', autoRefresh: false });
    let waited = 0;
    // Without being told to wait (a tidy-up), it fails at once, deleting nothing.
    await expect(deleteBackup(repo, 'vol-gc-wait', made.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    const deleting = deleteBackup(repo, 'vol-gc-wait', made.id, { waitForGc: true, onProgress: () => { waited += 1; } });
    await new Promise((resolve) => setTimeout(resolve, 300));
    expect((await repo.listBackups('vol-gc-wait')).map((r) => r.id)).toEqual([made.id]);
    await collecting.release();
    await deleting;
    expect(waited).toBeGreaterThan(0);
    expect(await repo.listBackups('vol-gc-wait')).toEqual([]);
  });

  it('stops before its record when its signal is aborted by then, and a delete stops before deleting the record', async () => {
    const src = await freshDir('signal-src');
    await writeFile(join(src, 'a.txt'), 'kept out');
    const before = (await repo.listBackups('vol-signal')).length;
    const stop = new AbortController();
    const reason = new Error('cancelled at the last report');
    // The last progress report comes after every file and before the record: a cancel there still counts.
    await expect(backupTree(src, repo, { volume: 'vol-signal', parent: false, signal: stop.signal, onProgress: (p) => { if (p.files === 1) stop.abort(reason); } }))
      .rejects.toBe(reason);
    expect(await repo.listBackups('vol-signal')).toHaveLength(before);
    const made = await backupTree(src, repo, { volume: 'vol-signal', parent: false });
    await expect(deleteBackup(repo, 'vol-signal', made.id, { signal: AbortSignal.abort(reason) })).rejects.toBe(reason);
    expect((await repo.listBackups('vol-signal')).map((r) => r.id)).toContain(made.id);
    await deleteBackup(repo, 'vol-signal', made.id);
  });

  it('the local fast path and the thread-pool path back up and restore the same tree the same way', async () => {
    // /tmp is a local filesystem here, so the default takes the synchronous path.
    const fast = await backupTree(dirs.src, repo, { volume: 'vol-paths', parent: false });
    const slow = await backupTree(dirs.src, repo, { volume: 'vol-paths', parent: false, localFastPath: false });
    const strip = (entries: Entry[]) => entries.map(({ atimeNs: _atime, ...rest }) => rest);
    expect(strip((await collect(repo, slow)).entries)).toEqual(strip((await collect(repo, fast)).entries));
    expect(slow.stats).toMatchObject({ files: fast.stats.files, filesRead: fast.stats.filesRead, bytesRead: fast.stats.bytesRead, skipped: 1 });
    // Every chunk of the second was already stored by the first: same cuts, same ids.
    expect(slow.stats.newBlobs).toBe(0);
    const want = comparable(await describeTree(dirs.src));
    want.delete('sock');
    for (const localFastPath of [true, false]) {
      const out = await freshDir(`restore-path-${localFastPath}`);
      await restoreTree(repo, 'vol-paths', slow.id, out, { localFastPath });
      const got = await describeTree(out);
      expect(comparable(got), `localFastPath ${localFastPath}`).toEqual(want);
      expect(got.get('sub/hard-small')!.ino).toBe(got.get('small.txt')!.ino);
    }
    // Later tests count backups and packs: leave none behind.
    for (const record of [fast, slow]) await deleteBackup(repo, 'vol-paths', record.id);
  });

  it('an incremental backup after changing 1% of the data reads and writes little', async () => {
    const total = first.stats.bytes;
    // ~0.3% of ~14 MB: 30 KiB inside the big file, one small file rewritten, one added.
    const big = join(dirs.src, 'sub/big.bin');
    const data = await readFile(big);
    pseudoRandom(30 * 1024, 'edit').copy(data, 5 * 1024 * 1024);
    await writeFile(big, data);
    await writeFile(join(dirs.src, 'sub/deeper/f7'), pseudoRandom(2055, 'f7 again'));
    await writeFile(join(dirs.src, 'sub/deeper/new-file'), pseudoRandom(1000, 'new'));
    const second = await backupTree(dirs.src, repo, { volume: 'vol-a' });
    expect(second.parent).toBe(first.id);
    expect(second.stats.filesRead).toBe(3);
    // The changed chunks (at most two of up to 256 KiB around the edit), two small files and
    // the manifest: under 5% of the full backup, as the target asks.
    expect(second.stats.newRawBytes).toBeLessThan(0.05 * total);
    expect(second.stats.newStoredBytes).toBeLessThan(0.05 * first.stats.newStoredBytes);
    expect(second.stats.newBlobs).toBeLessThanOrEqual(6);
    const out = await freshDir('restore-2');
    await restoreTree(repo, 'vol-a', second.id, out);
    const want = await describeTree(dirs.src);
    want.delete('sock');
    expect(comparable(await describeTree(out))).toEqual(comparable(want));

    // The changed file was cut guided by its previous chunks, through the thread pool too:
    // the same chunks as reading it whole without a parent.
    const slow = await backupTree(dirs.src, repo, { volume: 'vol-a', parent: first.id, localFastPath: false });
    const whole = await backupTree(dirs.src, repo, { volume: 'vol-a', parent: false });
    try {
      const chunksOf = async (record: BackupRecord) => (await collect(repo, record)).entries.find((e) => e.path === 'sub/big.bin')!.chunks;
      const guided = await chunksOf(second);
      expect(guided!.length).toBeGreaterThan(100);
      expect(await chunksOf(slow)).toEqual(guided);
      expect(await chunksOf(whole)).toEqual(guided);
      // No chunk is new; at most its manifest (the files' access times may have moved).
      expect(slow.stats.newBlobs).toBeLessThanOrEqual(1);
    } finally {
      // Later tests count backups: leave none behind.
      for (const record of [slow, whole]) await deleteBackup(repo, 'vol-a', record.id);
    }
  });

  it('a second volume holding the same data adds little to the repository', async () => {
    const copy = join(base, 'copy');
    await execa('cp', ['-a', dirs.src, copy]);
    const other = await backupTree(copy, repo, { volume: 'vol-b' });
    expect(other.stats.filesRead).toBe(other.stats.files);
    expect(other.stats.newRawBytes).toBeLessThan(0.02 * other.stats.bytes);
    expect(other.stats.newBlobs).toBe(1); // its manifest
  });

  it('large files read at once through the bounded, reused read buffers come back byte for byte', async () => {
    const src = join(base, 'large-src');
    await mkdir(src);
    // Five files of two or three 8 MiB reads each, more than the read buffers in use at once.
    for (let i = 0; i < 5; i += 1) {
      const text = Buffer.from(`line ${i} of text\n`.repeat(200_000));
      await writeFile(join(src, `f${i}`), Buffer.concat([pseudoRandom(6 * 1024 * 1024 + i, `large${i}`), text, pseudoRandom(5 * 1024 * 1024, `tail${i}`)]));
    }
    const own = await Repository.init(new VfsBlobStore(join(base, 'large-repo'), { durable: false }), { packSize: 1024 * 1024 });
    const record = await backupTree(src, own, { volume: 'large', parent: false });
    expect(record.stats.filesRead).toBe(5);
    const out = join(base, 'large-out');
    await mkdir(out);
    await restoreTree(own, 'large', record.id, out);
    expect(comparable(await describeTree(out))).toEqual(comparable(await describeTree(src)));
  });

  it('restore refuses a target that is not empty, changing nothing', async () => {
    const out = await freshDir('busy');
    await writeFile(join(out, 'keep'), 'mine');
    await expect(restoreTree(repo, 'vol-a', first.id, out)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringContaining('not empty') });
    expect(await readdir(out)).toEqual(['keep']);
  });

  it('a corrupted chunk fails restore and verify, naming it; the restore target is left empty', async () => {
    const scratch = new VfsBlobStore(await freshDir('repo-corrupt'), { durable: false });
    const r = await Repository.init(scratch, { chunker: CHUNKER });
    const record = await backupTree(join(dirs.src, 'sub'), r, { volume: 'c' });
    const { entries } = await import('./tree-helpers.js').then((m) => m.collect(r, record));
    const victim = entries.find((e) => e.path === 'big.bin')!.chunks![3]!;
    const loc = r.locate(victim)!;
    const path = join(scratch.location, packKey(loc.pack));
    const bytes = await readFile(path);
    bytes[loc.offset + 7] ^= 0x55;
    await writeFile(path, bytes);
    const fresh = await Repository.open(scratch);
    await expect(verifyBackup(fresh, 'c', record.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(`chunk ${victim}`) });
    const out = await freshDir('restore-corrupt');
    await expect(restoreTree(fresh, 'c', record.id, out)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(`chunk ${victim}`) });
    expect(await readdir(out)).toEqual([]);
    expect((await scratch.list('locks/')).objects).toEqual([]);
  });

  it('hostile manifests are refused and nothing is written outside (or left inside) the target', async () => {
    const forge = async (entries: unknown[]): Promise<string> => {
      const writer = repo.newWriter();
      const ids = [(await writer.add('tree', Buffer.from(JSON.stringify({ format: FORMAT_VERSION, entries })))).id];
      await writer.flush();
      const id = `20300101T000000000Z-${randomBytes(4).toString('hex')}`;
      await repo.putBackupRecord({ ...first, id, volume: 'evil', manifest: ids, parent: undefined });
      return id;
    };
    const meta = { mode: 0o644, uid: 0, gid: 0, mtimeNs: '0', atimeNs: '0', size: 0 };
    const root = { path: '.', type: 'dir', ...meta, mode: 0o755 };
    const outside = join(base, 'outside');
    await mkdir(outside);
    // A file a link through a symlink would reach: refused before link(2) could make it.
    const outsideWithFile = join(base, 'outside-with-file');
    await mkdir(outsideWithFile);
    await writeFile(join(outsideWithFile, 'x'), 'not the backup\'s');
    const cases: Array<[string, unknown[], RegExp]> = [
      ['dot-dot', [root, { path: '../escape', type: 'file', ...meta, chunks: [] }], /not a safe relative path/],
      ['absolute', [root, { path: '/tmp/escape', type: 'file', ...meta, chunks: [] }], /not a safe relative path/],
      ['duplicate', [root, { path: 'a', type: 'file', ...meta, chunks: [] }, { path: 'a', type: 'file', ...meta, chunks: [] }], /out of order or duplicate/],
      ['through a symlink', [root, { path: 'l', type: 'symlink', ...meta, target: outside }, { path: 'l/x', type: 'file', ...meta, chunks: [] }], /parent is not a directory/],
      ['hardlink via symlink', [root, { path: 'l', type: 'symlink', ...meta, target: '/etc' }, { path: 'm', type: 'hardlink', ...meta, target: 'l/passwd' }], /not a restored file/],
      // The link's target reached from an open directory, and from one already closed.
      ['hardlink via a symlink in an open directory', [root, { path: 'd', type: 'dir', ...meta }, { path: 'd/l', type: 'symlink', ...meta, target: outsideWithFile }, { path: 'd/m', type: 'hardlink', ...meta, target: 'd/l/x' }], /not a restored file/],
      ['hardlink via a symlink in a closed directory', [root, { path: 'd', type: 'dir', ...meta }, { path: 'd/l', type: 'symlink', ...meta, target: outsideWithFile }, { path: 'e', type: 'dir', ...meta }, { path: 'e/m', type: 'hardlink', ...meta, target: 'd/l/x' }], /not a restored file/],
      ['hardlink to a directory', [root, { path: 'd', type: 'dir', ...meta }, { path: 'm', type: 'hardlink', ...meta, target: 'd' }], /not a restored file/],
      ['root not a directory', [{ ...root, type: 'file', chunks: [] }], /the root must be a directory/],
      ['no root', [{ path: 'a', type: 'file', ...meta, chunks: [] }], /root directory/],
      // Escapes stand only for bytes that are not UTF-8 (raw-names.ts): not for `.` or `/`,
      // and never as a second spelling of a name already restored.
      ['escaped dot-dot', [root, { path: '\udc2e\udc2e/escape', type: 'file', ...meta, chunks: [] }], /not a safe relative path/],
      ['escaped slash', [root, { path: '\udc2e\udc2e\udc2fescape', type: 'file', ...meta, chunks: [] }], /not a safe relative path/],
      ['second spelling', [root, { path: '\udcc3\udca9', type: 'symlink', ...meta, target: outside }, { path: '\u00e9', type: 'file', ...meta, chunks: [] }], /not a safe relative path/],
      ['wrong size', [root, { path: 'a', type: 'file', ...meta, size: 5, chunks: [] }], /says 5/],
    ];
    for (const [label, entries, message] of cases) {
      const id = await forge(entries);
      const out = await freshDir(`hostile-${label.replaceAll(' ', '-')}`);
      await expect(restoreTree(repo, 'evil', id, out), label).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(message) });
      expect(await readdir(out), label).toEqual([]);
    }
    expect(await readdir(outside)).toEqual([]);
    expect((await lstat(join(outsideWithFile, 'x'))).nlink).toBe(1);
  });

  it('gc refuses while a backup holds a shared lock (a delete goes through), and when a record does not load', async () => {
    const lock = await acquireLock(store, { kind: 'shared', purpose: 'backup of x', owner: 'other-node', autoRefresh: false });
    await expect(gc(repo)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED, message: expect.stringMatching(/locked shared by other-node \(backup of x\) until that ends .*; an exclusive lock cannot be taken now/) });
    // Deleting a record frees nothing by itself: it needs no more than the backup's own lock.
    const doomed = await backupTree(dirs.src, repo, { volume: 'vol-doomed' });
    await deleteBackup(repo, 'vol-doomed', doomed.id);
    expect(await repo.listBackups('vol-doomed')).toEqual([]);
    await lock.release();
    const packsBefore = (await store.list('packs/')).objects.length;
    await store.put('backups/vol-z/20300101T000000000Z-00000000', Buffer.from('{"format":1,'));
    await expect(gc(repo)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('vol-z') });
    expect((await store.list('packs/')).objects.length).toBe(packsBefore);
    await store.delete(['backups/vol-z/20300101T000000000Z-00000000']);
  });

  it('a backup, a verify and a restore started during a garbage collection wait for it to end', async () => {
    const before = await backupTree(dirs.src, repo, { volume: 'vol-waits' });
    const collecting = await acquireLock(store, { kind: 'exclusive', purpose: 'garbage collection', owner: 'gc-node', autoRefresh: false });
    const out = await freshDir('during-gc');
    const settled: string[] = [];
    const work = [
      backupTree(dirs.src, repo, { volume: 'vol-waits' }).then(() => settled.push('backup')),
      verifyBackup(repo, 'vol-waits', before.id).then(() => settled.push('verify')),
      restoreTree(repo, 'vol-waits', before.id, out).then(() => settled.push('restore')),
    ];
    await new Promise((resolve) => setTimeout(resolve, 500));
    expect(settled).toEqual([]);
    await collecting.release();
    await Promise.all(work);
    expect(settled.sort()).toEqual(['backup', 'restore', 'verify']);
    expect(await repo.listBackups('vol-waits')).toHaveLength(2);
    // The tests after this one count the repository's backups.
    for (const record of await repo.listBackups('vol-waits')) await deleteBackup(repo, 'vol-waits', record.id);
  });

  it('delete then gc frees what only the deleted backups used and keeps what survivors need', async () => {
    for (const record of await repo.listBackups('evil')) await deleteBackup(repo, 'evil', record.id);
    await deleteBackup(repo, 'vol-a', first.id);
    await expect(deleteBackup(repo, 'vol-a', first.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
    const result = await gc(repo);
    expect(result.backups).toBe(2);
    const [second] = await repo.listBackups('vol-a');
    const out = await freshDir('restore-after-gc');
    await restoreTree(repo, 'vol-a', second!.id, out);
    const want = await describeTree(dirs.src);
    want.delete('sock');
    expect(comparable(await describeTree(out))).toEqual(comparable(want));
    await verifyBackup(repo, 'vol-b', (await repo.listBackups('vol-b'))[0]!.id);
  });
});

describe('gc on a repository another machine damaged', () => {
  let base = '';
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('refuses, deleting nothing, when a chunk a backup needs is in no index, or a record or directory is not a plain file or directory', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-gc-damaged-'));
    const root = join(base, 'repo');
    await mkdir(root);
    const store = new VfsBlobStore(root, { durable: false });
    const repo = await Repository.init(store, { chunker: CHUNKER, packSize: 256 * 1024 });
    const src = join(base, 'src');
    await mkdir(src);
    await writeFile(join(src, 'data'), pseudoRandom(2 * 1024 * 1024, 'gc-damaged'));
    const keep = await backupTree(src, repo, { volume: 'keep' });
    const objects = async () => {
      const keys: string[] = [];
      for await (const { key } of listAll(store, '')) keys.push(key);
      return keys.sort();
    };
    const before = await objects();

    // The index of a pack holding only this backup's data chunks goes missing.
    const { entries } = await collect(repo, keep);
    const pack = repo.locate(entries.find((e) => e.path === 'data')!.chunks![0]!)!.pack;
    const indexPath = join(root, 'index', pack);
    const saved = await readFile(indexPath);
    await rm(indexPath);
    await expect(gc(await Repository.open(store))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('in no pack index') });
    await writeFile(indexPath, saved);
    expect(await objects()).toEqual(before);

    // A record replaced by a symlink (to a copy of itself) must not make its backup vanish.
    const recordPath = join(root, 'backups', 'keep', keep.id);
    await cp(recordPath, join(base, 'record-copy'));
    await rm(recordPath);
    await symlink(join(base, 'record-copy'), recordPath);
    await expect(gc(await Repository.open(store))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(`backups/keep/${keep.id} in backup repository`) });
    await rm(recordPath);
    await cp(join(base, 'record-copy'), recordPath);

    // So must the whole backups directory.
    await cp(join(root, 'backups'), join(base, 'backups-copy'), { recursive: true });
    await rm(join(root, 'backups'), { recursive: true });
    await symlink(join(base, 'backups-copy'), join(root, 'backups'));
    await expect(gc(await Repository.open(store))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('backups in backup repository') });
    await rm(join(root, 'backups'));
    await cp(join(base, 'backups-copy'), join(root, 'backups'), { recursive: true });

    expect(await objects()).toEqual(before);
    expect(await gc(await Repository.open(store))).toMatchObject({ backups: 1, deletedPacks: 0 });
    await verifyBackup(await Repository.open(store), 'keep', keep.id);

    // An index claiming a 1 GiB blob (a bomb, or a read that size) is refused before any read;
    // the pack's own index (its trailer, which its name is the hash of) stands in for it.
    const index = JSON.parse(saved.toString()) as { blobs: Array<{ rawLength: number }> };
    index.blobs[0]!.rawLength = 2 ** 30;
    await rm(indexPath);
    await writeFile(indexPath, JSON.stringify(index));
    const standIn = await Repository.open(store);
    expect(standIn.locate(entries.find((e) => e.path === 'data')!.chunks![0]!)!.rawLength).toBeLessThan(2 ** 20);
    await expect(verifyBackup(standIn, 'keep', keep.id)).resolves.toMatchObject({ files: 1 });
    // A damaged index with a damaged pack trailer too: nothing to trust, and said.
    const ownPack = join(root, 'packs', pack.slice(0, 2), pack);
    const packData = await readFile(ownPack);
    const broken = Buffer.from(packData);
    broken[broken.length - 10] ^= 0xff;
    await rm(ownPack);
    await writeFile(ownPack, broken);
    await expect(Repository.open(store).then((r) => verifyBackup(r, 'keep', keep.id))).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_OBJECT_MISSING, message: expect.stringMatching(new RegExp(`index object\\(s\\) do not \\(index/${pack}.*rawLength`)),
    });
    await rm(ownPack);
    await writeFile(ownPack, packData);
    await rm(indexPath);
    await writeFile(indexPath, saved);

    // An index naming a pack that is not there, claiming the chunks of a good pack and a chunk
    // of zeros no pack holds: neither stands in for the real thing.
    const zeros = Buffer.alloc(CHUNKER.maxSize);
    const zeroId = createHash('sha256').update(zeros).digest('hex');
    const ghost = 'f'.repeat(64);
    const forged = { ...JSON.parse(saved.toString()), pack: ghost };
    forged.blobs.push({ ...forged.blobs[0], id: zeroId, rawLength: zeros.length, length: 16, codec: 'none' });
    await mkdir(join(root, 'index'), { recursive: true });
    await writeFile(join(root, 'index', ghost), JSON.stringify(forged));
    await verifyBackup(await Repository.open(store), 'keep', keep.id);
    await writeFile(join(src, 'zeros'), Buffer.alloc(4 * CHUNKER.maxSize));
    const withZeros = await backupTree(src, await Repository.open(store), { volume: 'zeros' });
    await verifyBackup(await Repository.open(store), 'zeros', withZeros.id);
    const out = join(base, 'zeros-out');
    await mkdir(out);
    await restoreTree(await Repository.open(store), 'zeros', withZeros.id, out);
    expect((await readFile(join(out, 'zeros'))).equals(Buffer.alloc(4 * CHUNKER.maxSize))).toBe(true);

    // A pack deleted behind the repository's back: verify and restore name it.
    await rm(join(root, 'index', ghost));
    const packPath = join(root, packKey(pack));
    await cp(packPath, join(base, 'pack-copy'));
    await rm(packPath);
    await expect(verifyBackup(await Repository.open(store), 'keep', keep.id)).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_OBJECT_MISSING, message: expect.stringContaining(`its pack ${packKey(pack)} is not in ${root}`),
    });
    await cp(join(base, 'pack-copy'), packPath);
    await verifyBackup(await Repository.open(store), 'keep', keep.id);
  });
});

/** The same directory's store, counting the reads of each index object. */
class IndexReadCounter extends VfsBlobStore {
  readonly reads = new Map<string, number>();
  override async get(key: string, into?: Buffer): Promise<Buffer> {
    if (key.startsWith('index/')) this.reads.set(key, (this.reads.get(key) ?? 0) + 1);
    return super.get(key, into);
  }
}

describe('gc over more than 1000 objects', () => {
  let base = '';
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('pages through every object and deletes in batches, keeping every chunk a survivor needs', { timeout: 120_000 }, async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-gc-'));
    const store = new VfsBlobStore(join(base, 'repo'), { durable: false });
    // A pack per blob: one small file is a pack and an index object.
    const repo = await Repository.init(store, { chunker: CHUNKER, packSize: 1 });
    const make = async (name: string, count: number, shared: number) => {
      const dir = join(base, name);
      await mkdir(dir);
      for (let i = 0; i < count; i += 1) await writeFile(join(dir, `f${i}`), i < shared ? `shared ${i}` : randomBytes(64));
      return dir;
    };
    const doomed = await backupTree(await make('doomed', 600, 50), repo, { volume: 'doomed' });
    const keeper = await backupTree(await make('keeper', 100, 50), repo, { volume: 'keeper' });
    const count = async () => {
      let total = 0;
      for await (const _ of listAll(store, '', 1000)) total += 1;
      return total;
    };
    const before = await count();
    expect(before).toBeGreaterThan(1300);
    await deleteBackup(repo, 'doomed', doomed.id);
    // Index objects are written once: a gc from a fresh start reads each one once, not once to
    // load the repository's index and again to judge its pack.
    const counting = new IndexReadCounter(join(base, 'repo'), { durable: false });
    let indexes = 0;
    for await (const _ of listAll(store, 'index/', 1000)) indexes += 1;
    const result = await gc(await Repository.open(counting), { pageSize: 150 });
    expect(counting.reads.size).toBe(indexes);
    expect(Math.max(...counting.reads.values())).toBe(1);
    // 550 chunks and 1 manifest blob only the doomed backup had, each a pack and an index.
    expect(result).toMatchObject({ backups: 1, deletedPacks: 551, deletedIndexes: 551 });
    expect(await verifyBackup(repo, 'keeper', keeper.id)).toMatchObject({ files: 100, chunks: 100 });
    const out = join(base, 'out');
    await mkdir(out);
    await restoreTree(repo, 'keeper', keeper.id, out);
    expect((await readFile(join(out, 'f3'))).toString()).toBe('shared 3');
    expect(await count()).toBe(before - 2 * 551 - 1);
  });
});

describe('a backup that fails part-way', () => {
  it('rejects with the failure and leaves no unhandled rejection behind (which would end a daemon)', async () => {
    const base = await mkdtemp(join(tmpdir(), 'stowage-tree-fail-'));
    try {
      const src = join(base, 'src');
      await mkdir(src);
      for (let i = 0; i < 8; i += 1) await writeFile(join(src, `f${i}`), pseudoRandom(300 * 1024, `f${i}`));
      await mkdir(join(base, 'repo'));
      const repo = await Repository.init(new VfsBlobStore(join(base, 'repo')), { chunker: CHUNKER });
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => { unhandled.push(reason); };
      process.on('unhandledRejection', onUnhandled);
      const reason = new Error('stop now');
      try {
        // Every file's first chunk reports progress and fails, while later files are read ahead.
        await expect(backupTree(src, repo, { volume: 'v1', onProgress: () => { throw reason; } })).rejects.toBe(reason);
        await new Promise((resolve) => setTimeout(resolve, 200));
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
      expect(unhandled).toEqual([]);
      expect(await repo.listBackups('v1')).toEqual([]);
    } finally {
      await rm(base, { recursive: true, force: true });
    }
  });
});

describe('a restore of large chunks (written and hashed on the thread pool)', () => {
  let base = '';
  let src = '';
  let store: VfsBlobStore;
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-tree-large-'));
    src = join(base, 'src');
    await mkdir(src);
    // Default chunker: chunks of about 1 MiB, above the sizes that leave the main thread.
    for (let i = 0; i < 3; i += 1) await writeFile(join(src, `f${i}`), pseudoRandom(4 * 1024 * 1024 + i, `thread-pool${i}`));
    await mkdir(join(base, 'repo'));
    store = new VfsBlobStore(join(base, 'repo'), { durable: false });
  });
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('a corrupted large chunk fails restore and verify, naming it; the target is left empty', async () => {
    const repo = await Repository.init(store);
    const record = await backupTree(src, repo, { volume: 'big' });
    const { entries } = await collect(repo, record);
    const chunks = entries.find((e) => e.path === 'f1')!.chunks!;
    const victim = chunks[chunks.length - 2]!;
    const loc = repo.locate(victim)!;
    expect(loc.rawLength).toBeGreaterThanOrEqual(256 * 1024);
    const path = join(store.location, packKey(loc.pack));
    const bytes = await readFile(path);
    bytes[loc.offset + Math.floor(loc.length / 2)] ^= 0x55;
    await writeFile(path, bytes);
    const fresh = await Repository.open(store);
    await expect(verifyBackup(fresh, 'big', record.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(`chunk ${victim}`) });
    const out = join(base, 'out-corrupt');
    await mkdir(out);
    await expect(restoreTree(fresh, 'big', record.id, out)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(`chunk ${victim}`) });
    expect(await readdir(out)).toEqual([]);
  });

  const noTmpfs = systemSuite('tmpfs mounts', isRoot && findExecutable('mount') ? { ok: true } : { ok: false, why: 'needs root to mount a small tmpfs' });
  it.skipIf(noTmpfs)('a write that fails on the thread pool (a full filesystem) fails the restore with its cause and leaves the target empty', async () => {
    const own = new VfsBlobStore(join(base, 'repo-full'), { durable: false });
    await mkdir(join(base, 'repo-full'));
    const repo = await Repository.init(own);
    const record = await backupTree(src, repo, { volume: 'full' });
    const out = join(base, 'out-full');
    await mkdir(out);
    // Room for one file and a half: the second file's large writes run out of space.
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=6M', 'tmpfs', out]);
    try {
      const unhandled: unknown[] = [];
      const onUnhandled = (reason: unknown) => { unhandled.push(reason); };
      process.on('unhandledRejection', onUnhandled);
      try {
        await expect(restoreTree(repo, 'full', record.id, out)).rejects.toMatchObject({
          code: ErrorCodes.STORAGE_FULL, message: expect.stringContaining(`the storage restored into (${out}) is full: no space left on device (ENOSPC)`),
        });
        await new Promise((resolve) => setTimeout(resolve, 100));
      } finally {
        process.off('unhandledRejection', onUnhandled);
      }
      expect(unhandled).toEqual([]);
      expect(await readdir(out)).toEqual([]);
    } finally {
      await execa('umount', [out]);
    }
  });

  it.skipIf(noTmpfs)('a backup into a full repository fails naming it, earlier backups still verify, and it goes through once there is room', async () => {
    const at = join(base, 'repo-small');
    await mkdir(at);
    await execa('mount', ['-t', 'tmpfs', '-o', 'size=10M', 'tmpfs', at]);
    try {
      const repo = await Repository.init(new VfsBlobStore(at, { durable: false }));
      const small = join(base, 'small-src');
      await mkdir(small);
      await writeFile(join(small, 'a'), pseudoRandom(1024 * 1024, 'small'));
      const before = await backupTree(small, repo, { volume: 'small' });
      // src holds 12 MiB of random data: more than the repository has room for.
      await expect(backupTree(src, repo, { volume: 'full' })).rejects.toMatchObject({
        code: ErrorCodes.STORAGE_FULL, message: expect.stringMatching(new RegExp(`^the backup repository at ${at} is full: no space left on device \\(ENOSPC\\); free space there`)),
      });
      expect(await repo.listBackups('full')).toEqual([]);
      await verifyBackup(await Repository.open(repo.store), 'small', before.id);
      await execa('mount', ['-o', 'remount,size=64M', at]);
      const after = await backupTree(src, repo, { volume: 'full' });
      await verifyBackup(await Repository.open(repo.store), 'full', after.id);
    } finally {
      // Lazily: the store keeps packs it read open for a while.
      await execa('umount', ['-l', at]);
    }
  });
});

describe('FIFO and device entries another machine wrote', () => {
  const base = { path: 'd', mode: 0o600, uid: 0, gid: 0, mtimeNs: '0', atimeNs: '0', size: 0 };
  it('a device needs its numbers, within what Linux can hold; a FIFO has none, and neither has a size or target', () => {
    expect(EntrySchema.safeParse({ ...base, type: 'chardev', device: { major: 1, minor: 3 } }).success).toBe(true);
    expect(EntrySchema.safeParse({ ...base, type: 'blockdev', device: { major: 0xfff, minor: 0xfffff } }).success).toBe(true);
    expect(EntrySchema.safeParse({ ...base, type: 'fifo' }).success).toBe(true);
    for (const refused of [
      { ...base, type: 'chardev' },
      { ...base, type: 'blockdev', device: { major: 0x1000, minor: 0 } },
      { ...base, type: 'chardev', device: { major: 1, minor: 0x100000 } },
      { ...base, type: 'chardev', device: { major: -1, minor: 3 } },
      { ...base, type: 'chardev', device: { major: 1, minor: 3, extra: '--' } },
      { ...base, type: 'fifo', device: { major: 1, minor: 3 } },
      { ...base, type: 'file', chunks: [], device: { major: 1, minor: 3 } },
      { ...base, type: 'fifo', size: 5 },
      { ...base, type: 'fifo', target: 'x' },
    ]) expect(EntrySchema.safeParse(refused).success, JSON.stringify(refused)).toBe(false);
  });
});
