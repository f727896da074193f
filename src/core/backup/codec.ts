import { createRequire } from 'node:module';
import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { z } from 'zod';
import { lz4BlockDecode } from './lz4-block.js';

/**
 * Compression codecs a repository may use. The repository's config names the one new objects
 * are written with; every stored blob names its own, so the default can change later and old
 * blobs still read. Measured on this kind of machine, CPU time of one thread, 1 MiB chunks
 * (log-like text / random), compress and decompress in MiB per CPU-second:
 *   deflate-1   241 / 50 and 150 / 2892      brotli-0   463 / 536 and 191 / 554
 *   lz4         778 / 4739 and 1725 / 5045 (text ratio 0.28, brotli-0 0.24, deflate-1 0.19)
 * lz4 (lz4-napi: lz4_flex's block format with the plaintext size in front, prebuilt binaries)
 * wins alone, but not inside a backup or restore here: each call returns a native buffer,
 * and on small blobs the call costs more than the work (7 KB blobs: 280 MiB/s decompressing,
 * brotli-0 245); a whole backup of the bench tree took as much CPU as with brotli-0 and peaked
 * 130 MiB higher. So brotli-0 stays the default and lz4 is a choice (`codec: 'lz4'`). Where
 * the native module does not load (a platform without a prebuilt binary, the plugin's bundle),
 * lz4 blobs still read through a JavaScript decoder (lz4-block.ts) and new blobs are written
 * with brotli-0 instead (each blob names its codec). zlib's and lz4-napi's asynchronous calls
 * run on libuv's thread pool, so compression uses more than one core.
 */
export const CodecSchema = z.enum(['none', 'deflate-1', 'brotli-0', 'brotli-1', 'lz4']);
export type Codec = z.infer<typeof CodecSchema>;
export const DEFAULT_CODEC: Codec = 'brotli-0';

interface Lz4Native {
  compress(data: Uint8Array): Promise<Buffer>;
  compressSync(data: Buffer): Buffer;
  uncompress(data: Uint8Array): Promise<Buffer>;
  uncompressSync(data: Uint8Array): Buffer;
}

let lz4Native: Lz4Native | null | undefined;
/** lz4-napi, loaded on first use; null when it does not load here. */
export function nativeLz4(): Lz4Native | null {
  if (lz4Native === undefined) {
    try {
      lz4Native = process.env.STOWAGE_NO_NATIVE_LZ4 === '1' ? null : createRequire(import.meta.url)('lz4-napi') as Lz4Native;
    } catch {
      lz4Native = null;
    }
  }
  return lz4Native;
}

/** The codec new blobs are written with: `codec`, unless it is lz4 and lz4-napi does not load here. */
export function writableCodec(codec: Codec): Codec {
  return codec === 'lz4' && !nativeLz4() ? 'brotli-0' : codec;
}

/** lz4_flex's size-prepended block: 4 bytes little-endian plaintext length, then the block. */
function lz4StatedLength(data: Buffer): number {
  if (data.length < 4) throw new Error('an lz4 blob shorter than its length prefix');
  return data.readUInt32LE(0);
}

const deflateRaw = promisify(zlib.deflateRaw);
const inflateRaw = promisify(zlib.inflateRaw);
const brotliCompress = promisify(zlib.brotliCompress);
const brotliDecompress = promisify(zlib.brotliDecompress);

/**
 * Output buffer size for zlib's asynchronous calls: about the whole output. With the default
 * (16 KiB) a 1 MiB blob took 64 round trips between the thread pool and the main thread, each
 * with its callback on the main thread, which is the busy one in a backup or restore.
 */
function chunkSize(expected: number): number {
  return Math.min(Math.max(zlib.constants.Z_MIN_CHUNK, expected), 16 * 1024 * 1024);
}

function brotliOptions(quality: number, size: number): zlib.BrotliOptions {
  return {
    chunkSize: chunkSize(size),
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: quality,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: size,
      // A 256 KiB window instead of 4 MiB: each compression in flight holds less native
      // memory (peak RSS of a backup -17 MiB), and the bench tree compressed as well.
      [zlib.constants.BROTLI_PARAM_LGWIN]: 18,
    },
  };
}

/**
 * Blobs at most this size are compressed and decompressed on the calling thread: for a small
 * file's blob the thread-pool round trip costs more than the work.
 */
export const SYNC_CODEC_MAX = 64 * 1024;
/** Blobs larger than this are first judged by compressing SAMPLE_SIZE bytes from each of three places. */
const SAMPLE_FROM = 1024 * 1024 / 4;
const SAMPLE_SIZE = 16 * 1024;

function compressSync(codec: Exclude<Codec, 'none'>, data: Buffer): Buffer {
  switch (codec) {
    case 'lz4': return nativeLz4()!.compressSync(data);
    case 'deflate-1': return zlib.deflateRawSync(data, { level: 1 });
    case 'brotli-0': return zlib.brotliCompressSync(data, brotliOptions(0, data.length));
    case 'brotli-1': return zlib.brotliCompressSync(data, brotliOptions(1, data.length));
  }
}

/** Saves at least 1/32 of the input: otherwise decompressing would cost every restore for nothing. */
function worthIt(input: number, output: number): boolean {
  return output < input - (input >> 5);
}

/**
 * Whether a large blob is worth compressing, judged on three samples (start, middle, end)
 * compressed together on the calling thread: incompressible data (media, archives, encrypted
 * files) then costs a few microseconds instead of a whole compression. A blob whose samples do
 * not compress but whose other parts would is stored as is: a little space for much time.
 */
export function looksCompressible(codec: Exclude<Codec, 'none'>, data: Buffer): boolean {
  if (data.length <= SAMPLE_FROM) return true;
  const middle = (data.length >> 1) - (SAMPLE_SIZE >> 1);
  const sample = Buffer.concat([data.subarray(0, SAMPLE_SIZE), data.subarray(middle, middle + SAMPLE_SIZE), data.subarray(data.length - SAMPLE_SIZE)]);
  return worthIt(sample.length, compressSync(codec, sample).length);
}

/**
 * Compresses with `codec`, or keeps the bytes as they are (codec 'none') when that saves less
 * than 1/32 (or, for a large blob, when its samples do: see looksCompressible).
 */
export async function compress(wanted: Codec, data: Buffer): Promise<{ codec: Codec; data: Buffer }> {
  const codec = writableCodec(wanted);
  if (codec === 'none') return { codec, data };
  let out: Buffer;
  if (data.length <= SYNC_CODEC_MAX) {
    out = compressSync(codec, data);
  } else {
    if (!looksCompressible(codec, data)) return { codec: 'none', data };
    switch (codec) {
      case 'deflate-1': out = await deflateRaw(data, { level: 1, chunkSize: chunkSize(data.length) }); break;
      case 'brotli-0': out = await brotliCompress(data, brotliOptions(0, data.length)); break;
      case 'brotli-1': out = await brotliCompress(data, brotliOptions(1, data.length)); break;
      case 'lz4': out = await nativeLz4()!.compress(data); break;
    }
  }
  return worthIt(data.length, out.length) ? { codec, data: out } : { codec: 'none', data };
}

/**
 * Decompresses, refusing to produce more than `rawLength` bytes: a damaged or hostile blob
 * cannot make the reader allocate without bound.
 */
export async function decompress(codec: Codec, data: Buffer, rawLength: number): Promise<Buffer> {
  // One byte more than expected, so an overlong blob is told apart from an exact one.
  const limit = { maxOutputLength: Math.max(1, rawLength + 1) };
  if (codec === 'lz4') {
    // lz4_flex allocates what the prefix states: it must be the recorded length, or a damaged
    // blob could make it allocate up to 4 GiB.
    if (lz4StatedLength(data) !== rawLength) throw new Error(`an lz4 blob stating ${lz4StatedLength(data)} bytes, not ${rawLength}`);
    const native = nativeLz4();
    if (!native) return lz4BlockDecode(data.subarray(4), rawLength);
    return rawLength <= SYNC_CODEC_MAX ? native.uncompressSync(data) : native.uncompress(data);
  }
  // The stored size bounds the work only loosely (a bomb is small): the raw size decides.
  if (codec !== 'none' && rawLength <= SYNC_CODEC_MAX) {
    return codec === 'deflate-1' ? zlib.inflateRawSync(data, limit) : zlib.brotliDecompressSync(data, limit);
  }
  const options = { ...limit, chunkSize: chunkSize(rawLength + 1) };
  switch (codec) {
    case 'none': return data;
    case 'deflate-1': return inflateRaw(data, options);
    case 'brotli-0':
    case 'brotli-1': return brotliDecompress(data, options);
  }
}
