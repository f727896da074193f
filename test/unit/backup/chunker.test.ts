import { createHash, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Chunker, chunkStream, DEFAULT_CHUNKER, gearTable, topMask, type ChunkerParams } from '../../../src/core/backup/chunker.js';
import { ErrorCodes } from '../../../src/core/errors.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** Feeds the buffer in uneven pieces, as a file stream would. */
async function chunksOf(data: Buffer, params: ChunkerParams = DEFAULT_CHUNKER, piece = 65_521): Promise<Buffer[]> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += piece) pieces.push(data.subarray(i, i + piece));
  const out: Buffer[] = [];
  for await (const chunk of chunkStream(Readable.from(pieces), params)) out.push(chunk);
  return out;
}

describe('content-defined chunker', () => {
  const data = randomBytes(64 * 1024 * 1024);

  it('owned input gives the same chunks, as views of the input where a chunk lies inside one piece', () => {
    const piece = 8 * 1024 * 1024;
    const pieces = () => Array.from({ length: 3 }, (_, i) => Buffer.from(data.subarray(i * piece, (i + 1) * piece)));
    const run = (owned: boolean) => {
      const chunker = new Chunker();
      const inputs = pieces();
      const out = inputs.flatMap((p) => chunker.push(p, owned));
      const last = chunker.finish();
      if (last) out.push(last);
      return { out, inputs };
    };
    const copied = run(false);
    const owned = run(true);
    expect(owned.out.map(sha)).toEqual(copied.out.map(sha));
    const inputBuffers = new Set<ArrayBufferLike>(owned.inputs.map((b) => b.buffer));
    // Owned: most chunks share memory with an input piece; copied: none does.
    expect(owned.out.filter((c) => inputBuffers.has(c.buffer)).length).toBeGreaterThan(owned.out.length / 2);
    const copiedInputs = new Set<ArrayBufferLike>(copied.inputs.map((b) => b.buffer));
    expect(copied.out.some((c) => copiedInputs.has(c.buffer))).toBe(false);
  });

  it('lent input: chunks inside a piece are views of it, what carries over to the next piece is a copy', () => {
    const piece = 8 * 1024 * 1024;
    const reference = new Chunker();
    const expected = [0, 1, 2].flatMap((i) => reference.push(Buffer.from(data.subarray(i * piece, (i + 1) * piece)))).map(sha);
    const last = reference.finish();
    if (last) expected.push(sha(last));
    // One buffer reused for every piece, as a backup reuses its read buffers: each piece's chunks
    // are consumed before the buffer is overwritten.
    const chunker = new Chunker();
    const shared = Buffer.alloc(piece);
    const got: string[] = [];
    let views = 0;
    for (let i = 0; i < 3; i += 1) {
      data.copy(shared, 0, i * piece, (i + 1) * piece);
      for (const chunk of chunker.push(shared, 'lent')) {
        if (chunk.buffer === shared.buffer) views += 1;
        got.push(sha(chunk));
      }
      shared.fill(0xaa); // the next read overwrites it
    }
    const tail = chunker.finish();
    if (tail) got.push(sha(tail));
    expect(got).toEqual(expected);
    expect(views).toBeGreaterThan(got.length / 2);
  });

  it('cuts within min/max, loses no byte, and averages near the target size', async () => {
    const chunks = await chunksOf(data);
    expect(Buffer.concat(chunks).equals(data)).toBe(true);
    for (const c of chunks.slice(0, -1)) {
      expect(c.length).toBeGreaterThanOrEqual(DEFAULT_CHUNKER.minSize);
      expect(c.length).toBeLessThanOrEqual(DEFAULT_CHUNKER.maxSize);
    }
    const mean = data.length / chunks.length;
    expect(mean).toBeGreaterThan(DEFAULT_CHUNKER.minSize);
    expect(mean).toBeLessThan(2 * DEFAULT_CHUNKER.avgSize);
  });

  it('is deterministic whatever the read sizes, and depends on the seed', async () => {
    const a = (await chunksOf(data, DEFAULT_CHUNKER, 65_521)).map(sha);
    const b = (await chunksOf(data, DEFAULT_CHUNKER, 1024 * 1024 + 7)).map(sha);
    expect(b).toEqual(a);
    const other = (await chunksOf(data, { ...DEFAULT_CHUNKER, seed: 'other' })).map(sha);
    expect(other).not.toEqual(a);
  });

  it('re-synchronises after an insertion near the start: most chunks are reused', async () => {
    const before = new Set((await chunksOf(data)).map(sha));
    const edited = Buffer.concat([data.subarray(0, 100_000), randomBytes(777), data.subarray(100_000)]);
    const after = (await chunksOf(edited)).map(sha);
    const reused = after.filter((id) => before.has(id)).length / after.length;
    expect(reused).toBeGreaterThanOrEqual(0.9);
    // Deleting bytes re-synchronises too.
    const cut = Buffer.concat([data.subarray(0, 3_000_000), data.subarray(3_001_000)]);
    const afterCut = (await chunksOf(cut)).map(sha);
    expect(afterCut.filter((id) => before.has(id)).length / afterCut.length).toBeGreaterThanOrEqual(0.9);
  });

  it('cuts at maxSize in data with no cut point (all zeros) and emits small input whole', async () => {
    const params = { minSize: 1024, avgSize: 4096, maxSize: 16_384, seed: 's' };
    const zeros = await chunksOf(Buffer.alloc(100_000), params, 3000);
    expect(zeros.slice(0, -1).every((c) => c.length === 16_384)).toBe(true);
    expect(zeros.reduce((n, c) => n + c.length, 0)).toBe(100_000);
    expect((await chunksOf(Buffer.from('tiny'), params)).map(String)).toEqual(['tiny']);
    expect(await chunksOf(Buffer.alloc(0), params)).toEqual([]);
  });

  it('refuses sizes that make no sense', () => {
    expect(() => new Chunker({ minSize: 10, avgSize: 3000, maxSize: 100, seed: 'x' })).toThrow(expect.objectContaining({ code: ErrorCodes.INVALID_OPTION }));
  });
});

/** Cut offsets of the chunker's definition, one byte at a time: the reference for its shortcuts. */
function referenceCuts(data: Buffer, p: ChunkerParams): number[] {
  const gear = gearTable(p.seed);
  const bits = Math.log2(p.avgSize);
  const small = topMask(Math.min(bits + 2, 31));
  const large = topMask(Math.max(bits - 2, 1));
  const cuts: number[] = [];
  let start = 0;
  while (start < data.length) {
    let end = Math.min(data.length, start + p.maxSize);
    let hash = 0;
    for (let i = start + p.minSize; i < end; i += 1) {
      hash = ((hash << 1) + gear[data[i]!]!) | 0;
      if ((hash & (i - start < p.avgSize ? small : large)) === 0) {
        end = i + 1;
        break;
      }
    }
    cuts.push(end);
    start = end;
  }
  return cuts;
}

describe('runs of zeros', () => {
  /** Random data with runs of zeros of many lengths (shorter and longer than a chunk) at many offsets. */
  function holey(size: number, seed: number): Buffer {
    const data = randomBytes(size);
    let x = seed;
    const next = () => { x = (x * 1103515245 + 12345) % 2 ** 31; return x; };
    for (let k = 0; k < 40; k += 1) {
      const at = next() % size;
      const length = [1, 31, 32, 33, 4095, 4096, 4097, 10_000, 70_000, 300_000, 1_500_000][next() % 11]!;
      data.fill(0, at, Math.min(size, at + length));
    }
    return data;
  }
  const cutsOf = (chunks: Buffer[]) => chunks.reduce<number[]>((acc, c) => [...acc, (acc.at(-1) ?? 0) + c.length], []);

  for (const params of [DEFAULT_CHUNKER, { minSize: 1024, avgSize: 4096, maxSize: 32 * 1024, seed: 'small' }, { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'test' }]) {
    it(`cuts where the byte-by-byte definition cuts, whatever the read sizes (${params.avgSize} average)`, async () => {
      // The shortcut is on for these seeds: the zero-run hash is no cut point.
      const fixed = -gearTable(params.seed)[0]! | 0;
      const bits = Math.log2(params.avgSize);
      expect(fixed & topMask(Math.min(bits + 2, 31))).not.toBe(0);
      expect(fixed & topMask(Math.max(bits - 2, 1))).not.toBe(0);
      for (const seed of [1, 2, 3]) {
        const data = holey(6 * 1024 * 1024 + seed, seed);
        const want = referenceCuts(data, params);
        for (const piece of [data.length, 65_521, 4096, 1_000_003]) {
          expect(cutsOf(await chunksOf(data, params, piece)), `seed ${seed}, pieces of ${piece}`).toEqual(want);
        }
      }
      const zeros = Buffer.alloc(3 * params.maxSize + 12_345);
      expect(cutsOf(await chunksOf(zeros, params))).toEqual(referenceCuts(zeros, params));
    }, 120_000);
  }
});
