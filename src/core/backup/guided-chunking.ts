import type { BufferPool } from './buffer-pool.js';
import { Chunker, type ChunkerParams } from './chunker.js';
import { sha256 } from './objects.js';
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
    const previous = layout.get(offset);
    if (previous && previous.length <= params.maxSize) {
      const pooled = previous.length <= bufferSize ? await buffers.take() : undefined;
      const buffer = pooled ?? Buffer.allocUnsafe(previous.length);
      let given = false;
      const give = () => {
        if (given) return;
        given = true;
        if (pooled) buffers.give(pooled);
      };
      try {
        const chunk = buffer.subarray(0, await readFully(read, buffer, previous.length, offset));
        if (chunk.length === previous.length && (zeroChunkId(chunk) ?? sha256(chunk)) === previous.id) {
          await emit(chunk, give, previous.id);
          offset += previous.length;
          await pause();
          continue;
        }
      } catch (err) {
        give();
        throw err;
      }
      give();
    }
    const next = await chunkUntilKnownCut(read, offset, layout, params, buffers, bufferSize, emit, pause);
    if (next === undefined) return;
    offset = next;
  }
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
      // Lent: chunks are views of the buffer, what the chunker keeps for later is copied.
      for (const chunk of got > 0 ? chunker.push(buffer.subarray(0, got), 'lent') : []) {
        users += 1;
        await emit(chunk, release);
        cut += chunk.length;
        // The rest of this read is read again from there; the chunker's state is dropped,
        // which is the state it has at any cut.
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
