import type { BufferPool } from './buffer-pool.js';
import { Chunker, type ChunkerParams } from './chunker.js';
import { sha256 } from './objects.js';
import type { SideHasher } from './side-hasher.js';
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
  emit: ChunkSink, pause: () => Promise<void>, hasher?: SideHasher,
): Promise<void> {
  let offset = 0;
  for (;;) {
    const first = layout.get(offset);
    if (first && first.length <= params.maxSize) {
      const taken = await takeUnchangedRun(read, offset, layout, params, buffers, bufferSize, emit, pause, hasher);
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
 * there). Hashing is most of an incremental backup of files rewritten in place: with a
 * `hasher`, the later part of a run hashes on its thread while this one hashes the first
 * SHARE_HERE of it (the runs of the files read at once interleave, so both threads keep busy).
 * Without, every hash is here.
 */
/**
 * The share of a run's chunks hashed on this thread when a side hasher takes the rest: this
 * thread also reads, and does the rest of the backup's work. On the bench's "1% spread"
 * incremental, 0.2, 0.35 and 0.5 measured alike (1.3-1.4 s); 0.35 on the large files alone
 * was 0.77-0.9 s against 0.9-1.0 s at 0.65.
 */
const SHARE_HERE = 0.5;

async function takeUnchangedRun(
  read: PositionalRead, offset: number, layout: PreviousLayout, params: ChunkerParams, buffers: BufferPool, bufferSize: number,
  emit: ChunkSink, pause: () => Promise<void>, hasher: SideHasher | undefined,
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
    // The chunks read whole (all of them, unless the file is now shorter) are a prefix of the run.
    const readable = run.filter(({ start, length: size }) => start + size <= got).length;
    const here = hasher && readable > 1 ? Math.max(1, Math.floor(readable * SHARE_HERE)) : readable;
    const side = here < readable ? hasher!.hash(buffer, run.slice(here, readable).map(({ start, length: size }) => [start, size] as const)) : undefined;
    let sideIds: string[] | undefined;
    try {
      for (const [i, { start, id, length: size }] of run.slice(0, readable).entries()) {
        const chunk = buffer.subarray(start, start + size);
        const actual = zeroChunkId(chunk) ?? (i < here ? sha256(chunk) : (sideIds ??= await side!)[i - here]);
        if (actual !== id) break;
        users += 1;
        await emit(chunk, release, id);
        offset += size;
        taken += 1;
        await pause();
      }
    } finally {
      // The side thread reads the buffer until it answers: only then may the buffer go back.
      await side;
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
