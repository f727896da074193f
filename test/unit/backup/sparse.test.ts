import { createHash, randomBytes } from 'node:crypto';
import { open, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { HOLE_BLOCK, isAllZero, rangesWithData, zeroChunkId } from '../../../src/core/backup/zeros.js';
import type { BackupRecord, Entry } from '../../../src/core/backup/format.js';
import { collect } from './tree-helpers.js';

const MiB = 1024 * 1024;
const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' };

const sha = async (path: string) => createHash('sha256').update(await readFile(path)).digest('hex');
const allocated = async (path: string) => (await stat(path)).blocks * 512;

/** Writes `data` at each offset of a new file, then sets its length: what is not written is a hole. */
async function sparseFile(path: string, size: number, writes: Array<[offset: number, data: Buffer]>): Promise<void> {
  const handle = await open(path, 'wx');
  try {
    for (const [offset, data] of writes) await handle.write(data, 0, data.length, offset);
    await handle.truncate(size);
  } finally {
    await handle.close();
  }
}

describe('zeros', () => {
  it('isAllZero is true only when every byte is zero, wherever the first other byte is', () => {
    for (const size of [0, 1, 4095, 64 * 1024, 64 * 1024 + 1, 300 * 1024]) expect(isAllZero(Buffer.alloc(size)), `${size}`).toBe(true);
    const size = 300 * 1024 + 7;
    for (const at of [0, 1, 64 * 1024 - 1, 64 * 1024, 200_000, size - 1]) {
      const data = Buffer.alloc(size);
      data[at] = 1;
      expect(isAllZero(data), `non-zero at ${at}`).toBe(false);
      expect(isAllZero(data.subarray(at + 1)), `after ${at}`).toBe(true);
    }
  });

  it('zeroChunkId is the sha256 of the zeros, for each length, and nothing for other bytes', () => {
    for (const size of [1, 4096, 300 * 1024, 300 * 1024, 7]) {
      expect(zeroChunkId(Buffer.alloc(size))).toBe(createHash('sha256').update(Buffer.alloc(size)).digest('hex'));
    }
    const almost = Buffer.alloc(300 * 1024);
    almost[almost.length - 1] = 9;
    expect(zeroChunkId(almost)).toBeUndefined();
  });
});

describe('rangesWithData', () => {
  const block = HOLE_BLOCK;

  it('leaves out every file-system block of zeros, wherever the data starts in the file', () => {
    expect(rangesWithData(Buffer.alloc(0), 0)).toEqual([]);
    expect(rangesWithData(Buffer.alloc(10 * block), 0)).toEqual([]);
    expect(rangesWithData(Buffer.alloc(10 * block, 1), 0)).toEqual([[0, 10 * block]]);
    // One byte in the third block: that block is written whole, its neighbours not.
    const one = Buffer.alloc(10 * block);
    one[2 * block + 7] = 1;
    expect(rangesWithData(one, 0)).toEqual([[2 * block, 3 * block]]);
    // Written at an unaligned position, the blocks are the file's, not the buffer's.
    expect(rangesWithData(one, 100)).toEqual([[2 * block - 100, 3 * block - 100]]);
    expect(rangesWithData(one, block - 100)).toEqual([[block + 100, 2 * block + 100]]);
    // Data at both ends, across a block boundary, and a short tail that is all zeros.
    const mixed = Buffer.alloc(6 * block + 50);
    mixed[0] = 1;
    mixed[3 * block - 1] = 1;
    mixed[3 * block] = 1;
    expect(rangesWithData(mixed, 0)).toEqual([[0, block], [2 * block, 4 * block]]);
    mixed[6 * block + 49] = 1;
    expect(rangesWithData(mixed, 0)).toEqual([[0, block], [2 * block, 4 * block], [6 * block, 6 * block + 50]]);
  });
});

describe('sparse files', () => {
  let base = '';
  let repo: Repository;
  let record: BackupRecord;
  const src = () => join(base, 'src');

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-sparse-'));
    await mkdir(join(base, 'repo'));
    await mkdir(src());
    repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }), { chunker: CHUNKER, packSize: MiB });
    // Holes before, between and after data, and a file that is only a hole.
    await sparseFile(join(src(), 'disk.img'), 16 * MiB + 5, [[3 * MiB, randomBytes(100 * 1024)], [9 * MiB + 11, randomBytes(4096)]]);
    await sparseFile(join(src(), 'tail-hole.db'), 8 * MiB, [[0, randomBytes(200 * 1024)]]);
    await sparseFile(join(src(), 'all-hole'), 4 * MiB, []);
    // A block of data every other block: chunks of several ranges each, large enough (constant
    // bytes give the chunker no cut) to be written through the thread pool.
    await sparseFile(join(src(), 'striped.bin'), MiB, Array.from({ length: 128 }, (_, i) => [i * 8192, Buffer.alloc(4096, 0xff)]));
    // Zeros written out: allocated on purpose, as a database preallocates its files.
    await writeFile(join(src(), 'prealloc.bin'), Buffer.concat([Buffer.alloc(2 * MiB), randomBytes(10_000), Buffer.alloc(MiB)]));
    // The filesystem under the test must keep holes, or nothing here shows anything.
    expect(await allocated(join(src(), 'disk.img'))).toBeLessThan(MiB);
    expect(await allocated(join(src(), 'prealloc.bin'))).toBeGreaterThanOrEqual(3 * MiB);
    record = await backupTree(src(), repo, { volume: 'sparse' });
  });
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('marks in the manifest the files that had holes, and only those', async () => {
    const { entries } = await collect(repo, record);
    const sparse = Object.fromEntries(entries.filter((e) => e.type === 'file').map((e) => [e.path, e.sparse === true]));
    expect(sparse).toEqual({ 'all-hole': true, 'disk.img': true, 'prealloc.bin': false, 'striped.bin': true, 'tail-hole.db': true });
    const striped = entries.find((e) => e.path === 'striped.bin')!;
    expect(Math.max(...striped.chunks!.map((id) => repo.locate(id)!.rawLength))).toBeGreaterThanOrEqual(128 * 1024);
  });

  for (const localFastPath of [true, false]) {
    it(`restores holes as holes and written zeros as written (${localFastPath ? 'local fast path' : 'thread-pool path'})`, async () => {
      const out = join(base, `out-${localFastPath}`);
      await mkdir(out);
      const leased = new Map<string, number>();
      const lease = repo.leaseBlob.bind(repo);
      const spy = vi.spyOn(repo, 'leaseBlob').mockImplementation(async (id, opts) => {
        leased.set(id, (leased.get(id) ?? 0) + 1);
        return lease(id, opts);
      });
      try {
        await restoreTree(repo, 'sparse', record.id, out, { localFastPath });
      } finally {
        spy.mockRestore();
      }
      // A chunk of zeros is read and checked once (once per sparse file at most, as files are
      // restored a few at a time), then skipped wherever a sparse file has it again. A file
      // without holes has its zeros read and written every time.
      const { entries } = await collect(repo, record);
      const zeroId = entries.find((e) => e.path === 'all-hole')!.chunks![0]!;
      const files = entries.filter((e) => e.chunks?.includes(zeroId));
      const count = (e: Entry) => e.chunks!.filter((id) => id === zeroId).length;
      const sparseOccurrences = files.filter((e) => e.sparse).reduce((n, e) => n + count(e), 0);
      const sparseFiles = files.filter((e) => e.sparse).length;
      const writtenOccurrences = files.filter((e) => !e.sparse).reduce((n, e) => n + count(e), 0);
      expect(sparseOccurrences).toBeGreaterThan(50);
      expect(writtenOccurrences).toBeGreaterThan(0);
      expect(leased.get(zeroId)).toBeGreaterThanOrEqual(writtenOccurrences + 1);
      expect(leased.get(zeroId)).toBeLessThanOrEqual(writtenOccurrences + sparseFiles);
      for (const name of ['disk.img', 'tail-hole.db', 'all-hole', 'striped.bin', 'prealloc.bin']) {
        expect((await stat(join(out, name))).size, name).toBe((await stat(join(src(), name))).size);
        expect(await sha(join(out, name)), name).toBe(await sha(join(src(), name)));
      }
      // The blocks with data are written, the others stay holes: about what the source had.
      for (const name of ['disk.img', 'tail-hole.db', 'striped.bin']) {
        expect(await allocated(join(out, name)), name).toBeLessThanOrEqual(await allocated(join(src(), name)) + 64 * 1024);
      }
      expect(await allocated(join(out, 'all-hole'))).toBe(0);
      expect(await allocated(join(out, 'prealloc.bin'))).toBeGreaterThanOrEqual(3 * MiB);
    });
  }

  it('a changed sparse file backed up again (chunks compared with the last backup\'s) gets the chunks a full read gives', async () => {
    const changed = join(base, 'changed');
    await mkdir(changed);
    await sparseFile(join(changed, 'disk.img'), 16 * MiB + 5, [[3 * MiB, randomBytes(100 * 1024)], [9 * MiB + 11, randomBytes(4096)]]);
    const first = await backupTree(changed, repo, { volume: 'changed' });
    const handle = await open(join(changed, 'disk.img'), 'r+');
    try {
      await handle.write(Buffer.from('changed'), 0, 7, 12 * MiB);
    } finally {
      await handle.close();
    }
    const guided = await backupTree(changed, repo, { volume: 'changed', parent: first.id });
    const full = await backupTree(changed, repo, { volume: 'changed', parent: false });
    const chunksOf = async (r: BackupRecord) => (await collect(repo, r)).entries.find((e) => e.path === 'disk.img')!.chunks;
    expect(guided.stats.filesRead).toBe(1);
    expect(await chunksOf(guided)).toEqual(await chunksOf(full));
    expect(await chunksOf(guided)).not.toEqual(await chunksOf(first));
  });

  it('a verify still reads and checks the chunks of zeros', async () => {
    expect(await verifyBackup(repo, 'sparse', record.id)).toMatchObject({ files: 5 });
  });
});
