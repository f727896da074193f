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

function brotliOptions(quality: number, size: number): zlib.BrotliOptions {
  return {
    params: {
      [zlib.constants.BROTLI_PARAM_QUALITY]: quality,
      [zlib.constants.BROTLI_PARAM_SIZE_HINT]: size,
    },
  };
}

/**
 * Compresses with `codec`, or keeps the bytes as they are (codec 'none') when that saves less
 * than 1/32: decompressing costs time on every restore for nothing.
 */
export async function compress(codec: Codec, data: Buffer): Promise<{ codec: Codec; data: Buffer }> {
  let out: Buffer;
  switch (codec) {
    case 'none': return { codec, data };
    case 'deflate-1': out = await deflateRaw(data, { level: 1 }); break;
    case 'brotli-0': out = await brotliCompress(data, brotliOptions(0, data.length)); break;
    case 'brotli-1': out = await brotliCompress(data, brotliOptions(1, data.length)); break;
  }
  return out.length < data.length - (data.length >> 5) ? { codec, data: out } : { codec: 'none', data };
}

/**
 * Decompresses, refusing to produce more than `rawLength` bytes: a damaged or hostile blob
 * cannot make the reader allocate without bound.
 */
export async function decompress(codec: Codec, data: Buffer, rawLength: number): Promise<Buffer> {
  // One byte more than expected, so an overlong blob is told apart from an exact one.
  const limit = { maxOutputLength: Math.max(1, rawLength + 1) };
  switch (codec) {
    case 'none': return data;
    case 'deflate-1': return inflateRaw(data, limit);
    case 'brotli-0':
    case 'brotli-1': return brotliDecompress(data, limit);
  }
}
