import { Worker } from 'node:worker_threads';
import { reassertV8Flags } from '../v8-flags.js';
import { sha256 } from './objects.js';

/**
 * The worker's whole program. It is given as source, not as a file, so it runs the same from
 * dist/, from the CLI's bundle and from an embedding application's own bundle. It hashes ranges
 * of a SharedArrayBuffer it is handed and answers with their ids; the bytes are never copied.
 */
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads');
const { createHash } = require('node:crypto');
parentPort.on('message', ({ n, shared, ranges }) => {
  try {
    const ids = ranges.map(([start, length]) => createHash('sha256').update(new Uint8Array(shared, start, length)).digest('hex'));
    parentPort.postMessage({ n, ids });
  } catch (err) {
    parentPort.postMessage({ n, error: String(err && err.message || err) });
  }
});
`;

/** A small heap is plenty: the worker keeps nothing but the ids it is about to send. */
const WORKER_LIMITS = { maxOldGenerationSizeMb: 16, maxYoungGenerationSizeMb: 2 };

interface Waiting { resolve: (ids: string[]) => void; reject: (err: Error) => void }

/**
 * SHA-256 of chunks on a second thread, for the part of a backup whose work is hashing: an
 * incremental backup of files rewritten in place hashes every unchanged chunk to prove it
 * unchanged. WebCrypto's digest also runs off the main thread, but copies its input first,
 * and on the bench's "1% spread" incremental that copy cost this thread nearly what it saved.
 * Here the bytes stay where they were read, in a buffer shared with the worker (see BufferPool's
 * `shared`), so the main thread only posts offsets.
 *
 * The worker starts on first use and ends with close(). It holds the event loop only while a
 * request is out, so a backup that forgets close() does not keep its process alive. Hashing
 * is the same on either thread: a buffer that is not shared, or a worker that cannot start or
 * fails, is hashed on the calling thread instead (nothing but speed depends on this class).
 */
export class SideHasher {
  private worker: Worker | undefined;
  private failed = false;
  private sequence = 0;
  private readonly waiting = new Map<number, Waiting>();

  /** `workerSource`: the worker's program, for tests that need one which fails. */
  constructor(private readonly workerSource = WORKER_SOURCE) {}

  /** The sha256 of each `[start, length]` range of `buffer`, in order. */
  async hash(buffer: Buffer, ranges: ReadonlyArray<readonly [number, number]>): Promise<string[]> {
    const onThisThread = () => ranges.map(([start, length]) => sha256(buffer.subarray(start, start + length)));
    if (!(buffer.buffer instanceof SharedArrayBuffer) || ranges.length === 0) return onThisThread();
    const worker = this.start();
    if (!worker) return onThisThread();
    const n = this.sequence++;
    const answer = new Promise<string[]>((resolve, reject) => this.waiting.set(n, { resolve, reject }));
    if (this.waiting.size === 1) worker.ref();
    worker.postMessage({ n, shared: buffer.buffer, ranges: ranges.map(([start, length]) => [buffer.byteOffset + start, length]) });
    // The caller holds `buffer` unchanged until this settles, so the worker's failure can be
    // made up for here.
    return answer.catch(() => onThisThread());
  }

  /** Ends the worker; later calls hash on the calling thread. */
  async close(): Promise<void> {
    this.failed = true;
    const worker = this.worker;
    this.worker = undefined;
    this.fail(new Error('the hashing thread was closed'));
    await worker?.terminate();
  }

  /** Whether a worker is running (for tests). */
  get running(): boolean {
    return this.worker !== undefined;
  }

  private start(): Worker | undefined {
    if (this.failed) return undefined;
    if (this.worker) return this.worker;
    try {
      const worker = new Worker(this.workerSource, { eval: true, resourceLimits: WORKER_LIMITS, stdout: false, stderr: false });
      worker.unref();
      worker.once('online', reassertV8Flags);
      worker.on('message', (message: { n: number; ids?: string[]; error?: string }) => this.answered(message));
      worker.on('error', (err) => this.broke(err));
      worker.on('exit', (code) => this.broke(new Error(`the hashing thread exited with code ${code}`)));
      this.worker = worker;
      return worker;
    } catch {
      this.failed = true;
      return undefined;
    }
  }

  private answered({ n, ids, error }: { n: number; ids?: string[]; error?: string }): void {
    const waiting = this.waiting.get(n);
    if (!waiting) return;
    this.waiting.delete(n);
    if (this.waiting.size === 0) this.worker?.unref();
    if (ids) waiting.resolve(ids);
    else waiting.reject(new Error(error ?? 'no answer'));
  }

  private broke(err: Error): void {
    this.failed = true;
    this.worker = undefined;
    this.fail(err);
  }

  private fail(err: Error): void {
    const waiting = [...this.waiting.values()];
    this.waiting.clear();
    for (const { reject } of waiting) reject(err);
  }
}
