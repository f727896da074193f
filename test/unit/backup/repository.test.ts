import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { compress, decompress, DEFAULT_CODEC, looksCompressible, nativeLz4, SYNC_CODEC_MAX } from '../../../src/core/backup/codec.js';
import { lz4BlockDecode } from '../../../src/core/backup/lz4-block.js';
import { comparePaths, indexKey, newBackupId, packKey, type BackupRecord, type Entry } from '../../../src/core/backup/format.js';
import { ManifestWriter } from '../../../src/core/backup/manifest.js';
import { sha256 } from '../../../src/core/backup/objects.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { ErrorCodes } from '../../../src/core/errors.js';

describe('backup repository format', () => {
  let dir = '';
  let store: VfsBlobStore;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-repo-'));
    store = new VfsBlobStore(dir, { durable: false });
  });
  afterEach(async () => { await rm(dir, { recursive: true, force: true }); });

  it('init writes a config once; open reads it back with the index; a second init is refused', async () => {
    const repo = await Repository.init(store, { codec: 'deflate-1', packSize: 1024 * 1024 });
    await expect(Repository.init(store)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
    const writer = repo.newWriter();
    const a = await writer.add('data', Buffer.from('hello '.repeat(1000)));
    const b = await writer.add('data', randomBytes(5000));
    expect(await writer.add('data', Buffer.from('hello '.repeat(1000)))).toEqual({ id: a.id, added: false });
    await writer.flush();
    expect(writer.stats).toMatchObject({ newBlobs: 2, packs: 1 });
    const again = await Repository.open(store);
    expect(again.config).toEqual(repo.config);
    expect((await again.readBlob(a.id)).toString()).toBe('hello '.repeat(1000));
    expect(sha256(await again.readBlob(b.id))).toBe(b.id);
    // Compressible data is stored compressed, random data as it is; each blob names its codec.
    expect(again.locate(a.id)).toMatchObject({ codec: 'deflate-1' });
    expect(again.locate(a.id)!.length).toBeLessThan(1000);
    expect(again.locate(b.id)).toMatchObject({ codec: 'none', length: 5000 });
    // Small blobs share one pack object.
    expect((await store.list('packs/')).objects.length).toBe(1);
    await expect(Repository.open(new VfsBlobStore(join(dir, 'nothing')))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
  });

  it('refuses a config naming packs past 32 MiB: every backup and restore would hold buffers of that size', async () => {
    await Repository.init(store);
    const config = JSON.parse(await readFile(join(dir, 'config'), 'utf8')) as Record<string, unknown>;
    // Written by another machine, as config objects are never rewritten by stowage.
    await writeFile(join(dir, 'config'), JSON.stringify({ ...config, packSize: 1024 * 1024 * 1024 }));
    await expect(Repository.open(store)).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(/the config of .* is not in the expected format.*packSize/),
    });
    await writeFile(join(dir, 'config'), JSON.stringify({ ...config, packSize: 32 * 1024 * 1024 }));
    expect((await Repository.open(store)).config.packSize).toBe(32 * 1024 * 1024);
    await expect(Repository.init(new VfsBlobStore(join(dir, 'other')), { packSize: 64 * 1024 * 1024 })).rejects.toThrow(/packSize|Too big|33554432/);
  });

  it('a reload reads only index objects it has not read before, and forgets those gone', async () => {
    const repo = await Repository.init(store, { packSize: 1 });
    const first = repo.newWriter();
    const a = await first.add('data', randomBytes(3000));
    const b = await first.add('data', randomBytes(3000));
    await first.flush();
    const indexReads: string[] = [];
    const counting = Object.assign(Object.create(store) as VfsBlobStore, {
      get: async (key: string, into?: Buffer) => {
        if (key.startsWith('index/')) indexReads.push(key);
        return store.get(key, into);
      },
    });
    const reader = await Repository.open(counting);
    expect(indexReads).toHaveLength(2);
    await reader.reloadIndex();
    expect(indexReads).toHaveLength(2);
    // Another writer's pack: its index is read once, at the next reload.
    const other = (await Repository.open(store)).newWriter();
    const d = await other.add('data', randomBytes(3000));
    await other.flush();
    await reader.reloadIndex();
    expect(indexReads).toHaveLength(3);
    expect(reader.has(d.id)).toBe(true);
    // A pack and its index deleted (as gc does): the blob is gone from the next reload.
    const gone = reader.locate(a.id)!.pack;
    await store.delete([indexKey(gone), packKey(gone)]);
    await reader.reloadIndex();
    expect(reader.has(a.id)).toBe(false);
    expect(reader.has(b.id)).toBe(true);
    expect(indexReads).toHaveLength(3);
  });

  it('whole-pack reads keep the two packs read last: alternating between them fetches each once', async () => {
    const repo = await Repository.init(store, { codec: 'none', packSize: 16 * 1024 });
    const writer = repo.newWriter();
    const ids: string[] = [];
    // Blobs larger than a pack, each in a pack of its own, and small enough to be read through whole packs.
    for (let i = 0; i < 3; i += 1) ids.push((await writer.add('data', randomBytes(20 * 1024))).id);
    await writer.flush();
    const fetched: string[] = [];
    const counting = Object.create(store, { get: { value: (key: string) => { fetched.push(key); return store.get(key); } } }) as VfsBlobStore;
    const reader = await Repository.open(counting);
    fetched.length = 0;
    const packOf = (id: string) => packKey(reader.locate(id)!.pack);
    expect(new Set(ids.map(packOf)).size).toBe(3);
    for (const id of [ids[0]!, ids[1]!, ids[0]!, ids[1]!]) await reader.readBlob(id, { wholePacks: true });
    expect(fetched).toEqual([packOf(ids[0]!), packOf(ids[1]!)]);
    // A third pack evicts the least recently used one (the first).
    for (const id of [ids[2]!, ids[1]!, ids[0]!]) await reader.readBlob(id, { wholePacks: true });
    expect(fetched).toEqual([packOf(ids[0]!), packOf(ids[1]!), packOf(ids[2]!), packOf(ids[0]!)]);
  });

  it('whole-pack reads take a large blob alone by a ranged read, unless its pack is already kept', async () => {
    const repo = await Repository.init(store, { codec: 'none', packSize: 256 * 1024 });
    const writer = repo.newWriter();
    const small = (await writer.add('data', randomBytes(10 * 1024))).id;
    const large = (await writer.add('data', randomBytes(100 * 1024))).id;
    await writer.flush();
    const alone = (await writer.add('data', randomBytes(200 * 1024))).id;
    await writer.flush();
    const fetched: string[] = [];
    const ranged: string[] = [];
    const counting = Object.create(store, {
      get: { value: (key: string) => { fetched.push(key); return store.get(key); } },
      getRange: { value: (key: string, offset: number, length: number) => { ranged.push(`${key}@${offset}+${length}`); return store.getRange(key, offset, length); } },
    }) as VfsBlobStore;
    const reader = await Repository.open(counting);
    fetched.length = 0;
    const packOf = (id: string) => packKey(reader.locate(id)!.pack);
    expect(packOf(large)).toBe(packOf(small));
    expect(packOf(alone)).not.toBe(packOf(small));
    // The large blob of a pack not kept: one ranged read of its bytes, nothing else.
    expect(sha256(await reader.readBlob(alone, { wholePacks: true }))).toBe(alone);
    expect(fetched).toEqual([]);
    expect(ranged).toEqual([`${packOf(alone)}@${reader.locate(alone)!.offset}+${200 * 1024}`]);
    // A small blob brings its whole pack; the large blob beside it then comes from that pack.
    expect(sha256(await reader.readBlob(small, { wholePacks: true }))).toBe(small);
    expect(sha256(await reader.readBlob(large, { wholePacks: true }))).toBe(large);
    expect(fetched).toEqual([packOf(small)]);
    expect(ranged).toHaveLength(1);
  });

  it('packs filled through reused buffers, one blob larger than a pack among them, read back intact; onReleased comes once per add', async () => {
    const repo = await Repository.init(store, { codec: 'brotli-0', packSize: 64 * 1024 });
    const writer = repo.newWriter();
    const blobs = Array.from({ length: 40 }, (_, i) => (i % 3 === 0 ? Buffer.from(`text ${i} `.repeat(2000 + i)) : randomBytes(10_000 + i * 997)));
    blobs.splice(20, 0, randomBytes(200 * 1024)); // larger than a pack buffer
    const released: number[] = [];
    const ids: string[] = [];
    for (const [i, blob] of blobs.entries()) ids.push((await writer.add('data', blob, undefined, () => released.push(i))).id);
    // A blob already added: released at once, not added again.
    expect(await writer.add('data', blobs[1]!, undefined, () => released.push(-1))).toEqual({ id: ids[1], added: false });
    expect(released).toContain(-1);
    await writer.flush();
    expect(released.filter((i) => i >= 0).sort((a, b) => a - b)).toEqual(blobs.map((_, i) => i));
    expect(writer.stats.packs).toBeGreaterThan(5);
    const reader = await Repository.open(store);
    for (const [i, id] of ids.entries()) expect((await reader.readBlob(id)).equals(blobs[i]!)).toBe(true);
    for (const [i, id] of ids.entries()) expect((await reader.readBlob(id, { wholePacks: true })).equals(blobs[i]!)).toBe(true);
    // The pack carries its index as its trailer, under the name the index object gives it.
    for (const { key } of (await store.list('index/')).objects) {
      const index = await reader.readIndex(key);
      const pack = await store.get(packKey(index.pack));
      const trailerLength = pack.readUInt32BE(pack.length - 4);
      const trailer = pack.subarray(pack.length - 4 - trailerLength, pack.length - 4);
      expect(sha256(trailer)).toBe(index.pack);
      expect(JSON.parse(trailer.toString())).toEqual(index.blobs);
    }
  });

  it('reads reuse pack and chunk buffers, but never under a lease still held, and readBlob hands out bytes of its own', async () => {
    const repo = await Repository.init(store, { codec: 'none', packSize: 32 * 1024 });
    const writer = repo.newWriter();
    // Small blobs, read through whole packs: five to a pack (35 KiB and the index, within the
    // 40 KiB buffers a 32 KiB pack size gives), nine packs.
    const small = Array.from({ length: 45 }, () => randomBytes(7 * 1024));
    const smallIds: string[] = [];
    for (const blob of small) smallIds.push((await writer.add('data', blob)).id);
    await writer.flush();
    // Large blobs, each read alone by a ranged read.
    const large = Array.from({ length: 3 }, () => randomBytes(300 * 1024));
    const largeIds: string[] = [];
    for (const blob of large) largeIds.push((await writer.add('data', blob)).id);
    await writer.flush();
    const reader = await Repository.open(store);
    const packOf = (id: string) => reader.locate(id)!.pack;
    expect(new Set(smallIds.map(packOf)).size).toBeGreaterThanOrEqual(8);

    // readBlob: every result stays what it was while later packs are read into reused buffers.
    const owned = [];
    for (const id of [...smallIds, ...largeIds]) owned.push(await reader.readBlob(id, { wholePacks: true }));
    owned.forEach((data, i) => expect(data.equals([...small, ...large][i]!)).toBe(true));

    // A pack leased stays intact while later packs are read into reused buffers, none of them its own.
    const held = await reader.leaseBlob(smallIds[0]!, { wholePacks: true });
    const later = smallIds.filter((id) => packOf(id) !== packOf(smallIds[0]!));
    const seen = new Set<ArrayBufferLike>();
    for (const id of later) {
      const lease = await reader.leaseBlob(id, { wholePacks: true });
      expect(lease.data.equals(small[smallIds.indexOf(id)]!)).toBe(true);
      seen.add(lease.data.buffer);
      lease.release();
      // Buffers come back once the pack's read has settled.
      await new Promise((resolve) => setImmediate(resolve));
    }
    expect(held.data.equals(small[0]!)).toBe(true);
    expect(seen.has(held.data.buffer)).toBe(false);
    // Eight packs read through three buffers: two kept, and the one an eviction gives back.
    expect(seen.size).toBe(3);
    held.release();

    // Ranged reads: a buffer released is the next one's; one still held is not.
    const first = await reader.leaseBlob(largeIds[0]!, { wholePacks: true });
    expect(first.data.equals(large[0]!)).toBe(true);
    const second = await reader.leaseBlob(largeIds[1]!, { wholePacks: true });
    expect(second.data.buffer).not.toBe(first.data.buffer);
    expect(first.data.equals(large[0]!)).toBe(true);
    const firstBuffer = first.data.buffer;
    first.release();
    const third = await reader.leaseBlob(largeIds[2]!, { wholePacks: true });
    expect(third.data.buffer).toBe(firstBuffer);
    expect(third.data.equals(large[2]!)).toBe(true);
    expect(second.data.equals(large[1]!)).toBe(true);
    second.release();
    third.release();
    // After releasePackCache nothing is kept for reuse, not even a buffer released after it.
    reader.releasePackCache();
    const after = await reader.leaseBlob(largeIds[0]!, { wholePacks: true });
    expect(after.data.buffer).not.toBe(firstBuffer);
    const late = after.data.buffer;
    reader.releasePackCache();
    after.release();
    const next = await reader.leaseBlob(largeIds[1]!, { wholePacks: true });
    expect(next.data.buffer).not.toBe(late);
    next.release();
  });

  it('a writer whose store does not keep up waits: no sealed pack waits behind the one being written', async () => {
    const repo = await Repository.init(store, { codec: 'none', packSize: 1024 });
    let unblock: () => void = () => undefined;
    const blocked = new Promise<void>((resolve) => { unblock = resolve; });
    const putsStarted: string[] = [];
    const slow = Object.create(store, {
      put: { value: async (key: string, data: Uint8Array) => { putsStarted.push(key); await blocked; return store.put(key, data); } },
    }) as VfsBlobStore;
    const writer = (await Repository.open(slow)).newWriter();
    // Each blob fills a pack: the first pack's write blocks, the next blob waits for it.
    await writer.add('data', randomBytes(2048));
    let secondDone = false;
    const second = writer.add('data', randomBytes(2048)).then(() => { secondDone = true; });
    await new Promise((resolve) => setTimeout(resolve, 200));
    expect(putsStarted).toHaveLength(1);
    expect(secondDone).toBe(false);
    unblock();
    await second;
    await writer.flush();
    expect(writer.stats.packs).toBe(2);
    expect(repo.config.packSize).toBe(1024);
  });

  it('codecs round-trip small (same-thread) and large (thread-pool) blobs, each cut at its expected length', async () => {
    const text = Buffer.from('a line of a log file, quite repetitive\n'.repeat(20_000));
    for (const codec of ['deflate-1', 'brotli-0', 'brotli-1', 'lz4'] as const) {
      for (const size of [1000, SYNC_CODEC_MAX, SYNC_CODEC_MAX + 1, 700_000]) {
        const data = text.subarray(0, size);
        const packed = await compress(codec, data);
        expect(packed.codec, `${codec} ${size}`).toBe(codec);
        expect((await decompress(codec, packed.data, size)).equals(data)).toBe(true);
        await expect(decompress(codec, packed.data, size - 100), `${codec} ${size}`).rejects.toThrow();
      }
    }
  });

  it('a large blob whose samples do not compress is stored as is, without compressing it whole', async () => {
    const random = randomBytes(2 * 1024 * 1024);
    const text = Buffer.from('compressible text '.repeat(120_000));
    expect(looksCompressible('brotli-0', random)).toBe(false);
    expect(looksCompressible('brotli-0', text)).toBe(true);
    const packed = await compress('brotli-0', random);
    expect(packed.codec).toBe('none');
    expect(packed.data).toBe(random);
    // Compressible in the middle only: the samples at start and end do not hide it.
    const mixed = Buffer.concat([random.subarray(0, 512 * 1024), text.subarray(0, 1024 * 1024), random.subarray(0, 512 * 1024)]);
    expect(looksCompressible('brotli-0', mixed)).toBe(true);
    expect((await compress('brotli-0', mixed)).codec).toBe('brotli-0');
  });

  it('codecs round-trip, and a decompression bomb is cut at the expected length', async () => {
    const data = Buffer.from('abc'.repeat(100_000));
    for (const codec of ['none', 'deflate-1', 'brotli-0', 'brotli-1', 'lz4'] as const) {
      const packed = await compress(codec, data);
      expect(packed.codec).toBe(codec);
      expect((await decompress(packed.codec, packed.data, data.length)).equals(data)).toBe(true);
      if (codec !== 'none') await expect(decompress(packed.codec, packed.data, 1000)).rejects.toThrow();
    }
  });

  it('lz4: its JavaScript decoder reads what lz4-napi writes and refuses damaged blocks', async () => {
    expect(DEFAULT_CODEC).toBe('brotli-0');
    expect(nativeLz4()).not.toBeNull();
    const text = Buffer.from(Array.from({ length: 30_000 }, (_, i) => `line ${i % 97} of a log, status=${200 + (i % 5)}\n`).join(''));
    // Long literal runs (random), long matches (a repeated byte) and overlapping matches (a short period).
    const samples = [text, randomBytes(300_000), Buffer.alloc(100_000, 7), Buffer.from('ab'.repeat(5000)), Buffer.concat([randomBytes(70_000), text.subarray(0, 200_000)])];
    for (const data of samples) {
      const packed = nativeLz4()!.compressSync(data);
      expect(packed.readUInt32LE(0)).toBe(data.length);
      expect(lz4BlockDecode(packed.subarray(4), data.length).equals(data)).toBe(true);
      expect(() => lz4BlockDecode(packed.subarray(4), data.length - 1)).toThrow(/corrupt/);
      expect(() => lz4BlockDecode(packed.subarray(4, packed.length - 3), data.length)).toThrow(/corrupt/);
    }
    // A back-reference before the start of the output.
    expect(() => lz4BlockDecode(Buffer.from([0x10, 0x61, 0x05, 0x00, 0x00]), 10)).toThrow(/offset/);
    // The length prefix must be the recorded length: lz4_flex would allocate what it states.
    const packed = await compress('lz4', text);
    expect(packed.codec).toBe('lz4');
    const lying = Buffer.from(packed.data);
    lying.writeUInt32LE(0xfffffff0, 0);
    await expect(decompress('lz4', lying, text.length)).rejects.toThrow(/stating/);
    expect((await decompress('lz4', packed.data, text.length)).equals(text)).toBe(true);
  });

  it('without lz4-napi, lz4 blobs still read (JavaScript decoder) and new blobs are written with brotli-0', async () => {
    const text = Buffer.from('text that lz4 compresses, written where lz4-napi loads\n'.repeat(20_000));
    const packed = await compress('lz4', text);
    expect(packed.codec).toBe('lz4');
    process.env.STOWAGE_NO_NATIVE_LZ4 = '1';
    try {
      vi.resetModules();
      const fresh = await import('../../../src/core/backup/codec.js');
      expect(fresh.nativeLz4()).toBeNull();
      expect((await fresh.decompress('lz4', packed.data, text.length)).equals(text)).toBe(true);
      expect((await fresh.compress('lz4', text)).codec).toBe('brotli-0');
    } finally {
      delete process.env.STOWAGE_NO_NATIVE_LZ4;
      vi.resetModules();
    }
  });

  it('old repositories still read: blobs in every codec, of a repository whose config names brotli-0', async () => {
    const old = await Repository.init(store, { codec: 'brotli-0' });
    const w = old.newWriter();
    const blob = await w.add('data', Buffer.from('an old repository\'s text '.repeat(3000)));
    await w.flush();
    expect(old.locate(blob.id)).toMatchObject({ codec: 'brotli-0' });
    const again = await Repository.open(store);
    expect(again.config.codec).toBe('brotli-0');
    expect((await again.readBlob(blob.id)).toString()).toBe('an old repository\'s text '.repeat(3000));
  });

  it('a corrupt, truncated or missing pack is detected on read with an error naming the chunk and pack', async () => {
    const repo = await Repository.init(store, { codec: 'brotli-0' });
    const writer = repo.newWriter();
    const text = await writer.add('data', Buffer.from('some text to compress '.repeat(500)));
    const raw = await writer.add('data', randomBytes(4096));
    // Incompressible and large, so stored as is: damage to it only the hash can find.
    const largeData = randomBytes(256 * 1024);
    const large = await writer.add('data', largeData);
    expect(large.id).toBe(sha256(largeData));
    await writer.flush();
    const loc = repo.locate(raw.id)!;
    expect(repo.locate(large.id)!.pack).toBe(loc.pack);
    expect((await repo.readBlob(large.id)).equals(largeData)).toBe(true);
    const path = join(dir, packKey(loc.pack));
    const original = await readFile(path);
    const flipped = Buffer.from(original);
    flipped[loc.offset + 10] ^= 0xff;
    flipped[repo.locate(text.id)!.offset + 5] ^= 0xff;
    flipped[repo.locate(large.id)!.offset + 200_000] ^= 0xff;
    await writeFile(path, flipped);
    const fresh = await Repository.open(store);
    await expect(fresh.readBlob(large.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(`chunk ${large.id} in ${packKey(loc.pack)} is corrupt: its content does not match its hash`) });
    await expect(fresh.readBlob(raw.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringMatching(new RegExp(`chunk ${raw.id} in ${packKey(loc.pack)} is corrupt`)) });
    await expect(fresh.readBlob(text.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining(text.id) });
    await truncate(path, loc.offset + 100);
    await expect(fresh.readBlob(raw.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_CORRUPT, message: expect.stringContaining('truncated') });
    await rm(path);
    // Another store on the same directory: this one may still hold the pack open for range
    // reads, and an open file reads as it was (objects never change once written).
    const elsewhere = await Repository.open(new VfsBlobStore(dir, { durable: false }));
    await expect(elsewhere.readBlob(raw.id)).rejects.toMatchObject({ code: ErrorCodes.BACKUP_OBJECT_MISSING, message: expect.stringContaining(raw.id) });
    // A damaged index whose pack is gone too: the repository opens, and a read names the index.
    await writeFile(join(dir, indexKey(loc.pack)), '{"format":1,"pack":');
    await expect((await Repository.open(store)).readBlob(raw.id)).rejects.toMatchObject({
      code: ErrorCodes.BACKUP_OBJECT_MISSING, message: expect.stringContaining(`1 index object(s) do not (${indexKey(loc.pack)}: index object ${indexKey(loc.pack)} is not valid JSON`),
    });
  });

  it('a manifest is stored in blobs of bounded size, read back in order and validated', async () => {
    const repo = await Repository.init(store);
    const writer = repo.newWriter();
    const manifest = new ManifestWriter(writer);
    const entries: Entry[] = [{ path: '.', type: 'dir', mode: 0o755, uid: 0, gid: 0, mtimeNs: '1', atimeNs: '1', size: 0 }];
    for (let i = 0; i < 2500; i += 1) {
      entries.push({ path: `f${String(i).padStart(5, '0')}`, type: 'file', mode: 0o644, uid: 1, gid: 2, mtimeNs: '1000000000', atimeNs: '1', size: 0, chunks: [] });
    }
    for (const e of entries) await manifest.add(e);
    const ids = await manifest.finish();
    await writer.flush();
    expect(ids.length).toBe(3);
    const record: BackupRecord = {
      format: 1, id: newBackupId(Date.UTC(2026, 11, 2, 14, 35, 0, 123), '0a0b0c0d'), volume: 'vol', host: 'h',
      startedAt: '', finishedAt: '', manifest: ids, warnings: [],
      stats: { entries: 0, files: 0, bytes: 0, filesRead: 0, bytesRead: 0, newBlobs: 0, newRawBytes: 0, newStoredBytes: 0, skipped: 0 },
    };
    expect(record.id).toBe('20261202T143500123Z-0a0b0c0d');
    await repo.putBackupRecord(record);
    const back: Entry[] = [];
    for await (const e of repo.entries(await repo.readBackupRecord('vol', record.id))) back.push(e);
    expect(back).toEqual(entries);
    expect((await repo.listBackups('vol')).map((r) => r.id)).toEqual([record.id]);
    await expect(repo.readBackupRecord('vol', '../../config')).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
    await expect(repo.readBackupRecord('vol', newBackupId(0, '00000000'))).rejects.toMatchObject({ code: ErrorCodes.BACKUP_NOT_FOUND });
  });

  it('backup ids sort by time and paths sort as a depth-first walk', () => {
    const ids = [newBackupId(Date.UTC(2027, 0, 1), 'ffffffff'), newBackupId(Date.UTC(2026, 11, 31, 23, 59, 59, 999), '00000000')];
    expect([...ids].sort()).toEqual([ids[1], ids[0]]);
    expect(['a.b', 'a/b', '.', 'a', 'a/b/c', 'b'].sort(comparePaths)).toEqual(['.', 'a', 'a/b', 'a/b/c', 'a.b', 'b']);
  });
});
