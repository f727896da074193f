import { sha256 } from './objects.js';

/** What a restored sparse file leaves unwritten: whole file-system blocks of zeros. */
export const HOLE_BLOCK = 4096;
const ZEROS = Buffer.alloc(64 * 1024);

/**
 * True when every byte is zero. Compared with memcmp, which stops at the first byte that
 * differs: data costs next to nothing, zeros one pass.
 */
export function isAllZero(data: Uint8Array): boolean {
  for (let at = 0; at < data.length; at += ZEROS.length) {
    if (!isZeroRange(data, at, Math.min(data.length, at + ZEROS.length))) return false;
  }
  return true;
}

/** True when `data[start, end)`, at most 64 KiB long, is all zeros. */
export function isZeroRange(data: Uint8Array, start: number, end: number): boolean {
  return ZEROS.compare(data, start, end, 0, end - start) === 0;
}

/**
 * The ranges of `data` (to be written at `position` of a file) to write so that every
 * HOLE_BLOCK-aligned block of the file that is all zeros stays a hole: `[start, end)` offsets
 * into `data`, in order, adjacent blocks with data merged. Compared a block at a time with
 * memcmp, which stops at the first byte that differs, so a chunk of data costs little.
 */
export function rangesWithData(data: Uint8Array, position: number): Array<[number, number]> {
  const ranges: Array<[number, number]> = [];
  let start = -1;
  for (let at = 0; at < data.length;) {
    const end = Math.min(data.length, at + HOLE_BLOCK - ((position + at) % HOLE_BLOCK));
    const zero = isZeroRange(data, at, end);
    if (!zero && start < 0) start = at;
    else if (zero && start >= 0) {
      ranges.push([start, at]);
      start = -1;
    }
    at = end;
  }
  if (start >= 0) ranges.push([start, data.length]);
  return ranges;
}

const zeroIds = new Map<number, string>();

/**
 * The id of `data` if it is all zeros, from a table by length: a sparse file's holes read as
 * runs of zeros, cut into chunks of a few lengths, and hashing each again took a backup of a
 * 2 GiB file holding 40 KiB of data from 4.6-4.9 s to 6.0-6.2 s. undefined when `data` holds
 * anything else (memcmp stops at its first byte that is not zero).
 */
export function zeroChunkId(data: Uint8Array): string | undefined {
  if (!isAllZero(data)) return undefined;
  let id = zeroIds.get(data.length);
  if (id === undefined) {
    id = sha256(data);
    if (zeroIds.size >= 256) zeroIds.clear();
    zeroIds.set(data.length, id);
  }
  return id;
}
