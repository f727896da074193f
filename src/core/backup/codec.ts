import { promisify } from 'node:util';
import zlib from 'node:zlib';
import { z } from 'zod';

/**
 * Compression codecs a repository may use. The repository's config names the one new objects
 * are written with; every stored blob names its own, so the default can change later and old
 * blobs still read. Measured on this kind of machine (one core, 1 MiB chunks, source-code-like
 * data / random data): deflate level 1 36-48 / 25-34 MiB/s, brotli quality 0 90-117 / 570-611
 * MiB/s, brotli quality 1 86-96 / 138-225 MiB/s, lz4-napi 77-164 / 148-245 MiB/s (a native
 * dependency that was not faster here). brotli-0 is the default: no dependency, the fastest on
 * compressible data, and it gives up quickly on incompressible data, which is then stored as is.
 * zlib's asynchronous calls run on libuv's thread pool, so compression uses more than one core.
 */
export const CodecSchema = z.enum(['none', 'deflate-1', 'brotli-0', 'brotli-1']);
export type Codec = z.infer<typeof CodecSchema>;
export const DEFAULT_CODEC: Codec = 'brotli-0';

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
export async function compress(codec: Codec, data: Buffer): Promise<{ codec: Codec; data: Buffer }> {
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
