import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import { ErrorCodes, StowageError } from '../errors.js';
import { isZeroRange } from './zeros.js';

/** Content-defined chunking parameters; recorded in the repository's config. */
export interface ChunkerParams {
  minSize: number;
  avgSize: number;
  maxSize: number;
  /** Seeds the gear table; repositories may choose their own so chunk sizes leak less. */
  seed: string;
}

/**
 * For new repositories. 512 KiB on average, not 1 MiB: rewriting 1% of every 64 MiB file of the
 * bench tree in place stored 6.2% of a full backup's bytes with 1 MiB chunks, 3.2% with these
 * (a change costs about the chunks around it), and full backups took as long (alternating
 * runs, within the noise). Repositories record their own parameters, so older ones keep theirs.
 */
export const DEFAULT_CHUNKER: ChunkerParams = {
  minSize: 256 * 1024,
  avgSize: 512 * 1024,
  maxSize: 4 * 1024 * 1024,
  seed: 'stowage-gear-v1',
};

const gearTables = new Map<string, Uint32Array>();

/** Bytes the scan takes between checks for a run of zeros it may skip. */
const ZERO_STRIDE = 4096;


/**
 * 256 pseudo-random 32-bit words drawn from sha256 of the seed: the same seed, the same cuts.
 * Kept per seed (a repository has one): a backup makes a chunker per file, and 32 hashes per
 * file cost more than chunking a small file.
 */
/** The gear table for `seed` (exported for the tests' byte-by-byte reference chunker). */
export function gearTable(seed: string): Uint32Array {
  let table = gearTables.get(seed);
  if (!table) {
    table = makeGearTable(seed);
    if (gearTables.size > 16) gearTables.clear();
    gearTables.set(seed, table);
  }
  return table;
}

function makeGearTable(seed: string): Uint32Array {
  const table = new Uint32Array(256);
  for (let i = 0; i < 32; i += 1) {
    const block = createHash('sha256').update(`${seed}:${i}`).digest();
    for (let j = 0; j < 8; j += 1) table[i * 8 + j] = block.readUInt32BE(j * 4);
  }
  return table;
}

export function topMask(bits: number): number {
  // As a signed 32-bit value, to match the hash kept in int32 range (`| 0` is the cheapest wrap).
  return ((2 ** bits - 1) * 2 ** (32 - bits)) | 0;
}

export function validateChunkerParams(p: ChunkerParams): void {
  const pow2 = Number.isInteger(Math.log2(p.avgSize));
  if (!(Number.isSafeInteger(p.minSize) && p.minSize >= 64 && p.minSize < p.avgSize && p.avgSize < p.maxSize && pow2 && p.maxSize <= 64 * 1024 * 1024)) {
    throw new StowageError(ErrorCodes.INVALID_OPTION, `chunker sizes ${p.minSize}/${p.avgSize}/${p.maxSize} are not valid (64 <= min < avg < max <= 64 MiB, avg a power of two)`);
  }
}

/**
 * A FastCDC-style chunker: a gear rolling hash (a 32-byte window, as each byte shifts the hash
 * left once) cuts where the hash's top bits are zero. Normalised chunking: below the average
 * size the mask has two more bits (cuts rarer), above it two fewer (cuts likelier), which keeps
 * sizes close to the average; nothing is cut before minSize (those bytes are not even hashed)
 * and everything is cut at maxSize. Cuts depend only on the bytes near them, so an insertion
 * moves the cuts of one or two chunks and the rest line up again.
 */
export class Chunker {
  private readonly gear: Uint32Array;
  private readonly maskSmall: number;
  private readonly maskLarge: number;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  private hash = 0;
  /**
   * The hash over a run of zeros: each zero byte maps h to 2h + gear[0], whose fixed point is
   * -gear[0]; 32 zeros reach it from any h, and further zeros keep it. NaN (never equal) when
   * that hash is a cut point for either mask, so runs of zeros are then scanned byte by byte.
   */
  private readonly zeroRunHash: number;

  constructor(readonly params: ChunkerParams = DEFAULT_CHUNKER) {
    validateChunkerParams(params);
    this.gear = gearTable(params.seed);
    const bits = Math.log2(params.avgSize);
    this.maskSmall = topMask(Math.min(bits + 2, 31));
    this.maskLarge = topMask(Math.max(bits - 2, 1));
    const fixed = -this.gear[0]! | 0;
    this.zeroRunHash = (fixed & this.maskSmall) === 0 || (fixed & this.maskLarge) === 0 ? Number.NaN : fixed;
  }

  /**
   * Feeds bytes; returns the chunks they complete, in order. `owned`: the caller never reuses
   * `data`, so chunks may be views of it (no copy); a chunk then keeps `data` alive. `'lent'`:
   * the returned chunks may be views of `data` (the caller keeps it unchanged until it is done
   * with them), but what the chunker keeps for the next call is copied. `stopAt`, asked of each
   * chunk as it is cut: true ends the push there, the rest of `data` neither scanned nor kept
   * (the chunker is then as new, the state it has at any cut).
   */
  push(data: Buffer, owned: boolean | 'lent' = false, stopAt?: (chunk: Buffer) => boolean): Buffer[] {
    const out: Buffer[] = [];
    const { minSize } = this.params;
    let start = 0;
    let i = 0;
    let hash = this.hash;
    while (i < data.length) {
      const len = this.pendingBytes + (i - start);
      if (len < minSize) {
        // Skip to minSize without hashing: cuts below it are never taken.
        i += Math.min(minSize - len, data.length - i);
        continue;
      }
      const cut = this.scan(data, i, len, hash);
      hash = cut.hash;
      i = cut.index;
      if (cut.found) {
        const tail = data.subarray(start, i);
        const chunk = this.pending.length === 0 ? (owned !== false ? tail : Buffer.from(tail)) : Buffer.concat([...this.pending, tail]);
        out.push(chunk);
        this.pending = [];
        this.pendingBytes = 0;
        hash = 0;
        start = i;
        if (stopAt?.(chunk)) {
          this.hash = 0;
          return out;
        }
      }
    }
    if (start < data.length) {
      // Copied: the caller may reuse its buffer, and a chunk must not pin a large read buffer.
      this.pending.push(owned === true ? data.subarray(start) : Buffer.from(data.subarray(start)));
      this.pendingBytes += data.length - start;
    }
    this.hash = hash;
    return out;
  }

  /** The rest, once the input ended (empty input gives no chunk). */
  finish(): Buffer | undefined {
    if (this.pendingBytes === 0) return undefined;
    // pending holds copies or owned views: one of them needs no further copy.
    const last = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    this.hash = 0;
    return last;
  }

  /**
   * From `from` (`lenAtFrom` bytes into the chunk) to the next cut, or to the end of `data`:
   * the small mask below the average size, the large one up to the maximum.
   */
  private scan(data: Buffer, from: number, lenAtFrom: number, hashIn: number): { index: number; hash: number; found: boolean } {
    const { avgSize, maxSize } = this.params;
    const endSmall = Math.min(data.length, from + Math.max(0, avgSize - lenAtFrom));
    const below = this.scanTo(data, from, endSmall, this.maskSmall, hashIn);
    if (below.found) return below;
    const endLarge = Math.min(data.length, from + (maxSize - lenAtFrom));
    const above = this.scanTo(data, below.index, endLarge, this.maskLarge, below.hash);
    return above.found ? above : { index: above.index, hash: above.hash, found: lenAtFrom + (above.index - from) >= maxSize };
  }

  /**
   * Hashes bytes from `from` until one leaves the hash's `mask` bits zero (a cut after it) or
   * `end`. The bytes go a stride at a time. Between strides, a hash at the zero-run value
   * followed by a stride of zeros is skipped whole: the hash stays the same over it and is no
   * cut point, so the result is the byte-by-byte one (a sparse file's holes: 2 GiB of zeros took
   * 4.6 s). Inside a stride the hot loop tests only the index.
   */
  private scanTo(data: Buffer, from: number, end: number, mask: number, hashIn: number): { index: number; hash: number; found: boolean } {
    const gear = this.gear;
    const zeroRun = this.zeroRunHash;
    let hash = hashIn;
    let i = from;
    while (i < end) {
      const strideEnd = Math.min(end, i + ZERO_STRIDE);
      if (hash === zeroRun && isZeroRange(data, i, strideEnd)) {
        i = strideEnd;
        continue;
      }
      for (; i < strideEnd; i += 1) {
        hash = ((hash << 1) + gear[data[i]!]!) | 0;
        if ((hash & mask) === 0) return { index: i + 1, hash, found: true };
      }
    }
    return { index: i, hash, found: false };
  }
}

/**
 * The chunks of a stream, one at a time: memory stays within maxSize plus one read, whatever
 * the stream's length.
 */
export async function* chunkStream(input: Readable | AsyncIterable<Buffer> | Iterable<Buffer>, params: ChunkerParams = DEFAULT_CHUNKER, owned = false): AsyncGenerator<Buffer> {
  const chunker = new Chunker(params);
  for await (const data of input as AsyncIterable<Buffer> | Iterable<Buffer>) yield* chunker.push(data, owned);
  const last = chunker.finish();
  if (last) yield last;
}
