import type { BufferPool } from './buffer-pool.js';
import { Chunker, type ChunkerParams } from './chunker.js';
import { sha256, sha256OffThread } from './objects.js';
import { zeroChunkId } from './zeros.js';

/**
 * Where each chunk of a file's previous version began: its id and length, or null for the last
 * chunk, which ended where that file ended rather than at a cut (its start is a cut all the same).
 */
export type PreviousLayout = ReadonlyMap<number, { readonly id: string; readonly length: number } | null>;

/**
 * The layout of a file's previous chunks, or undefined when there is nothing to gain (fewer
 * than two chunks) or a chunk's length is not known.
 */
export function previousLayout(chunks: readonly string[], lengthOf: (id: string) => number | undefined): PreviousLayout | undefined {
  if (chunks.length < 2) return undefined;
  const layout = new Map<number, { id: string; length: number } | null>();
  let offset = 0;
  for (const [i, id] of chunks.entries()) {
    const length = lengthOf(id);
    if (length === undefined || length <= 0) return undefined;
    layout.set(offset, i < chunks.length - 1 ? { id, length } : null);
    offset += length;
  }
  return layout;
}

/**
 * Receives a file's chunks in order. `onReleased` is called once nothing refers to `chunk` any
 * more (PackWriter.add's contract); `knownId`, when given, is the chunk's sha256.
 */
export type ChunkSink = (chunk: Buffer, onReleased: () => void, knownId?: string) => Promise<void>;

/**
 * Reads up to `length` bytes at `position` into `buffer` at `offset`; 0 at the end of the file.
 * Synchronous on a local filesystem, through the thread pool elsewhere.
 */
export type PositionalRead = (buffer: Buffer, offset: number, length: number, position: number) => number | Promise<number>;

/** Reads `length` bytes at `position`, fewer only at the end of the file. */
async function readFully(read: PositionalRead, buffer: Buffer, length: number, position: number): Promise<number> {
  let done = 0;
  while (done < length) {
    const got = await read(buffer, done, length - done, position + done);
    if (got === 0) break;
    done += got;
  }
  return done;
}

/**
 * Cuts a changed file into the chunks content-defined chunking would give, without scanning the
 * parts that did not change. Cuts depend only on the bytes since the last cut, so where a cut of
 * the previous version lies at the same offset and the bytes up to its next cut hash to the same
 * id, that chunk is the one the chunker would cut again: it is taken whole, hashed but not
 * scanned. Elsewhere the chunker runs from the last cut until one of its cuts lands on an offset
 * where a previous chunk began, and the comparison starts again there. A file rewritten in
 * place (a database's pages, a disk image's blocks) is scanned only around its changes; one
 * with bytes inserted or removed is scanned from the first change on, as without a layout.
 * With a layout this chunker cut, the chunks are exactly the chunker's. A foreign one (a backup
 * copied in from a repository with other chunk sizes) keeps its unchanged chunks as they were,
 * which dedups against that backup; the data is the file's either way. Chunks larger than
 * this chunker's maximum are never taken whole, so memory stays within one maximum chunk.
 */
export async function guidedChunks(
  read: PositionalRead, layout: PreviousLayout, params: ChunkerParams, buffers: BufferPool, bufferSize: number,
  emit: ChunkSink, pause: () => Promise<void>,
): Promise<void> {
  let offset = 0;
  for (;;) {
    const first = layout.get(offset);
    if (first && first.length <= params.maxSize) {
      const taken = await takeUnchangedRun(read, offset, layout, params, buffers, bufferSize, emit, pause);
      offset = taken.offset;
      if (taken.whole) continue;
    }
    const next = await chunkUntilKnownCut(read, offset, layout, params, buffers, bufferSize, emit, pause);
    if (next === undefined) return;
    offset = next;
  }
}

/**
 * Reads the previous chunks that follow one another from `offset` into one buffer (as many as
 * fit), hashes them, and emits those that are unchanged, in order, up to the first that is not.
 * Returns where the run stopped, and whether it was taken whole (else the chunker must run from
 * there). Hashing is most of an incremental backup of files rewritten in place: every other
 * chunk of a run hashes on the thread pool while this thread hashes the rest. The bench's "1%
 * spread" incremental, medians of nine: 1754 ms with every hash here, about 1740 ms with every
 * hash on the pool (this thread then waits, and copies each chunk: the pool's digest copies its
 * input), 1650 ms split.
 */
async function takeUnchangedRun(
  read: PositionalRead, offset: number, layout: PreviousLayout, params: ChunkerParams, buffers: BufferPool, bufferSize: number,
  emit: ChunkSink, pause: () => Promise<void>,
): Promise<{ offset: number; whole: boolean }> {
  const run: Array<{ start: number; id: string; length: number }> = [];
  let length = 0;
  for (let previous = layout.get(offset); previous && previous.length <= params.maxSize; previous = layout.get(offset + length)) {
    if (run.length > 0 && length + previous.length > bufferSize) break;
    run.push({ start: length, id: previous.id, length: previous.length });
    length += previous.length;
  }
  // A chunk larger than the read buffers (a foreign layout's) is read alone, into its own buffer.
  const pooled = length <= bufferSize ? await buffers.take() : undefined;
  const buffer = pooled ?? Buffer.allocUnsafe(length);
  let users = 1;
  const release = () => { if (--users === 0 && pooled) buffers.give(pooled); };
  let taken = 0;
  try {
    const got = await readFully(read, buffer, length, offset);
    const ids = run.map(({ start, length: size }, i) => {
      if (start + size > got || i % 2 === 0) return undefined;
      const chunk = buffer.subarray(start, start + size);
      return Promise.resolve(zeroChunkId(chunk) ?? sha256OffThread(chunk));
    });
    // Every hash is settled before the buffer goes back, whichever chunk stopped the run.
    const settled = Promise.allSettled(ids);
    try {
      for (const [i, { start, id, length: size }] of run.entries()) {
        if (start + size > got) break;
        const chunk = buffer.subarray(start, start + size);
        if ((i % 2 === 0 ? zeroChunkId(chunk) ?? sha256(chunk) : await ids[i]) !== id) break;
        users += 1;
        await emit(chunk, release, id);
        offset += size;
        taken += 1;
        await pause();
      }
    } finally {
      await settled;
    }
  } finally {
    release();
  }
  return { offset, whole: taken === run.length };
}

/**
 * Runs the chunker from `offset` (a cut) and emits its chunks until one ends where a previous
 * chunk began (returns that offset) or the file ends (returns undefined).
 */
async function chunkUntilKnownCut(
  read: PositionalRead, offset: number, layout: PreviousLayout, params: ChunkerParams, buffers: BufferPool, bufferSize: number,
  emit: ChunkSink, pause: () => Promise<void>,
): Promise<number | undefined> {
  const chunker = new Chunker(params);
  let position = offset;
  let cut = offset;
  for (;;) {
    const buffer = await buffers.take();
    let users = 1;
    const release = () => { if (--users === 0) buffers.give(buffer); };
    let got: number;
    try {
      got = await readFully(read, buffer, bufferSize, position);
      position += got;
      // Lent: chunks are views of the buffer, what the chunker keeps for later is copied. The
      // chunker stops at the first cut where a previous chunk began: the rest of this read is
      // read again from there (an in-place change realigns within a chunk or two, and scanning
      // the rest of a 4 MiB read cost more than reading it again from the page cache).
      let end = cut;
      for (const chunk of got > 0 ? chunker.push(buffer.subarray(0, got), 'lent', (c) => layout.has(end += c.length)) : []) {
        users += 1;
        await emit(chunk, release);
        cut += chunk.length;
        if (layout.has(cut)) return cut;
      }
    } finally {
      release();
    }
    if (got < bufferSize) {
      const last = chunker.finish();
      if (last) await emit(last, () => {});
      return undefined;
    }
    await pause();
  }
}
