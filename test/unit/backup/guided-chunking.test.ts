import { createCipheriv, createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BufferPool } from '../../../src/core/backup/buffer-pool.js';
import { Chunker, type ChunkerParams } from '../../../src/core/backup/chunker.js';
import { guidedChunks, previousLayout } from '../../../src/core/backup/guided-chunking.js';

const PARAMS: ChunkerParams = { minSize: 1024, avgSize: 4096, maxSize: 16 * 1024, seed: 'guided' };
/** Smaller than maxSize, so chunks both fit a pooled buffer and straddle reads. */
const BUFFER = 8 * 1024;

/**
 * Counts the bytes the chunker hashes (its private scanTo: what a cut costs, where push's input
 * counts what it was given, and the chunker stops early when told to).
 */
function countHashed(): { bytes: () => number; restore: () => void } {
  type Scan = { scanTo(data: Buffer, from: number): { index: number } };
  // Private to the class; reached through its prototype for the count only.
  const spy = vi.spyOn(Chunker.prototype as unknown as Scan, 'scanTo');
  return {
    bytes: () => spy.mock.calls.reduce((sum, [, from], i) => {
      const result = spy.mock.results[i]!;
      return sum + (result.type === 'return' ? (result.value as { index: number }).index - from : 0);
    }, 0),
    restore: () => spy.mockRestore(),
  };
}

function pseudoRandom(size: number, seed: string): Buffer {
  const key = createHash('sha256').update(seed).digest();
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size));
}

const idOf = (data: Buffer) => createHash('sha256').update(data).digest('hex');

/** What the chunker cuts from `data` read whole: the reference every guided run must match. */
function plainChunks(data: Buffer): Buffer[] {
  const chunker = new Chunker(PARAMS);
  const out = chunker.push(data);
  const last = chunker.finish();
  return last ? [...out, Buffer.from(last)] : out;
}

describe('chunking a changed file guided by its previous chunks', () => {
  let dir = '';
  beforeAll(async () => { dir = await mkdtemp(join(tmpdir(), 'stowage-guided-')); });
  afterAll(async () => { await rm(dir, { recursive: true, force: true }); });

  /**
   * Runs guidedChunks over `data` with the layout of `before`'s chunks; returns what it emitted
   * and the bytes it scanned. `reads`: synchronous (a local filesystem), through a file handle,
   * or through one that answers at most 3000 bytes a read (as a network filesystem may).
   */
  async function guided(data: Buffer, before: Buffer[], reads: 'sync' | 'async' | 'short' = 'sync'): Promise<{ ids: string[]; scanned: number; buffersBack: boolean }> {
    const file = join(dir, `f-${Math.random().toString(16).slice(2)}`);
    await writeFile(file, data);
    const lengths = new Map(before.map((c) => [idOf(c), c.length]));
    const layout = previousLayout(before.map(idOf), (id) => lengths.get(id));
    expect(layout).toBeDefined();
    const pool = new BufferPool(2, BUFFER);
    const hashed = countHashed();
    const ids: string[] = [];
    const fd = openSync(file, 'r');
    const handle = await open(file, 'r');
    const read = reads === 'sync'
      ? (buffer: Buffer, offset: number, length: number, position: number) => readSync(fd, buffer, offset, length, position)
      : async (buffer: Buffer, offset: number, length: number, position: number) =>
        (await handle.read(buffer, offset, reads === 'short' ? Math.min(length, 3000) : length, position)).bytesRead;
    try {
      await guidedChunks(read, layout!, PARAMS, pool, BUFFER, async (chunk, onReleased, knownId) => {
        const id = idOf(chunk);
        if (knownId !== undefined) expect(knownId).toBe(id);
        ids.push(id);
        onReleased();
      }, async () => {});
    } finally {
      closeSync(fd);
      await handle.close();
    }
    const scanned = hashed.bytes();
    hashed.restore();
    // Every pooled buffer came back: two can be taken at once again without waiting.
    const both = await Promise.race([Promise.all([pool.take(), pool.take()]).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 200))]);
    return { ids, scanned, buffersBack: both };
  }

  const original = pseudoRandom(600 * 1024, 'original');
  const before = plainChunks(original);

  it.each(['sync', 'async', 'short'] as const)('cuts exactly what the chunker cuts, scanning only around in-place changes (%s reads)', async (reads) => {
    const edited = Buffer.from(original);
    for (const at of [10_000, 250_000, 590_000]) pseudoRandom(700, `edit${at}`).copy(edited, at);
    const run = await guided(edited, before, reads);
    expect(run.ids).toEqual(plainChunks(edited).map(idOf));
    expect(run.buffersBack).toBe(true);
    // Three edits: a few chunks around each are scanned, not the 600 KiB.
    expect(run.scanned).toBeLessThan(0.25 * edited.length);
    expect(run.scanned).toBeGreaterThan(0);
  });

  it('scans nothing but the last chunk of an unchanged file', async () => {
    const run = await guided(original, before);
    expect(run.ids).toEqual(before.map(idOf));
    expect(run.scanned).toBeLessThanOrEqual(before.at(-1)!.length);
  });

  it('cuts exactly what the chunker cuts after an insertion, a removal, a truncation, growth, and an emptied file', async () => {
    const cases: Array<[string, Buffer]> = [
      ['insertion', Buffer.concat([original.subarray(0, 300_000), pseudoRandom(123, 'inserted'), original.subarray(300_000)])],
      ['removal', Buffer.concat([original.subarray(0, 100_000), original.subarray(100_777)])],
      ['truncation', original.subarray(0, 333_333)],
      ['growth', Buffer.concat([original, pseudoRandom(50_000, 'appended')])],
      ['empty', Buffer.alloc(0)],
    ];
    for (const [what, data] of cases) {
      for (const reads of ['sync', 'short'] as const) {
        const run = await guided(data, before, reads);
        expect(run.ids, `${what}, ${reads} reads`).toEqual(plainChunks(data).map(idOf));
        expect(run.buffersBack, what).toBe(true);
      }
    }
  });

  it('keeps the unchanged chunks of a foreign layout (cut with other sizes) as they were, and the data whole', async () => {
    const foreign: Buffer[] = [];
    for (let at = 0; at < original.length; at += 7000) foreign.push(original.subarray(at, Math.min(original.length, at + 7000)));
    // One chunk larger than this chunker's maximum: never taken whole.
    foreign.splice(10, 4, Buffer.concat(foreign.slice(10, 14)));
    const edited = Buffer.from(original);
    pseudoRandom(300, 'x').copy(edited, 300_000);
    const file = join(dir, 'foreign');
    await writeFile(file, edited);
    const lengths = new Map(foreign.map((c) => [idOf(c), c.length]));
    const layout = previousLayout(foreign.map(idOf), (id) => lengths.get(id))!;
    const chunks: Buffer[] = [];
    const fd = openSync(file, 'r');
    try {
      await guidedChunks((buffer, offset, length, position) => readSync(fd, buffer, offset, length, position), layout, PARAMS, new BufferPool(2, BUFFER), BUFFER, async (chunk, onReleased) => {
        chunks.push(Buffer.from(chunk));
        onReleased();
      }, async () => {});
    } finally {
      closeSync(fd);
    }
    expect(Buffer.concat(chunks).equals(edited)).toBe(true);
    // The ten foreign chunks before the oversized one are kept; that one is cut anew, and from
    // there the chunker runs on (its cuts seldom land on a foreign chunk's start).
    expect(chunks.slice(0, 10).map(idOf)).toEqual(foreign.slice(0, 10).map(idOf));
    expect(chunks.some((c) => idOf(c) === idOf(foreign[10]!))).toBe(false);
    expect(Math.max(...chunks.map((c) => c.length))).toBeLessThanOrEqual(PARAMS.maxSize);
  });

  it('cuts what the chunker cuts when chunks are large enough to hash on the thread pool, a run of them per buffer', async () => {
    // Chunks of 128 KiB and more hash on the pool; a 2 MiB buffer holds a run of several.
    const params: ChunkerParams = { minSize: 128 * 1024, avgSize: 256 * 1024, maxSize: 1024 * 1024, seed: 'large' };
    const cut = (data: Buffer) => {
      const chunker = new Chunker(params);
      const out = chunker.push(data);
      const last = chunker.finish();
      return (last ? [...out, Buffer.from(last)] : out).map(idOf);
    };
    const large = pseudoRandom(12 * 1024 * 1024, 'large');
    const edited = Buffer.from(large);
    for (const at of [1_000_000, 5_500_000, 5_600_000, 11_000_000]) pseudoRandom(2000, `edit${at}`).copy(edited, at);
    const file = join(dir, 'large');
    await writeFile(file, edited);
    const lengths = new Map<string, number>();
    const chunker = new Chunker(params);
    const previous = [...chunker.push(large), chunker.finish()!].map((c) => { lengths.set(idOf(c), c.length); return idOf(c); });
    const pool = new BufferPool(2, 2 * 1024 * 1024);
    const ids: string[] = [];
    const hashed = countHashed();
    const fd = openSync(file, 'r');
    try {
      await guidedChunks((buffer, offset, length, position) => readSync(fd, buffer, offset, length, position),
        previousLayout(previous, (id) => lengths.get(id))!, params, pool, 2 * 1024 * 1024, async (chunk, onReleased, knownId) => {
          if (knownId !== undefined) expect(knownId).toBe(idOf(chunk));
          ids.push(idOf(chunk));
          onReleased();
        }, async () => {});
    } finally {
      closeSync(fd);
    }
    const scanned = hashed.bytes();
    hashed.restore();
    expect(ids).toEqual(cut(edited));
    // Four edits: the chunker ran from each until a cut met a previous one, and stopped there;
    // everything else was hashed and taken. Running on to the end of each 2 MiB read hashed a
    // quarter of the file; each run of chunks hashing wrong would scan more than the whole.
    expect(scanned).toBeLessThan(0.1 * edited.length);
    expect(await Promise.race([Promise.all([pool.take(), pool.take()]).then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 200))])).toBe(true);
  });

  it('has no layout for a single chunk or an unknown length', () => {
    expect(previousLayout(['a'], () => 10)).toBeUndefined();
    expect(previousLayout(['a', 'b'], (id) => (id === 'a' ? 10 : undefined))).toBeUndefined();
    const layout = previousLayout(['a', 'b', 'c'], (id) => ({ a: 10, b: 20, c: 5 })[id]);
    expect([...layout!]).toEqual([[0, { id: 'a', length: 10 }], [10, { id: 'b', length: 20 }], [30, null]]);
  });
});
