import { createHash, randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { BufferPool } from '../../../src/core/backup/buffer-pool.js';
import { SideHasher } from '../../../src/core/backup/side-hasher.js';

const idOf = (data: Uint8Array) => createHash('sha256').update(data).digest('hex');

/** A buffer shared with worker threads, holding random bytes, as a view that does not start at 0. */
function sharedBytes(size: number): Buffer {
  const whole = Buffer.from(new SharedArrayBuffer(size + 100));
  randomBytes(size + 100).copy(whole);
  return whole.subarray(100);
}

describe('hashing on a side thread', () => {
  it('hashes ranges of a shared buffer on its own thread, each as sha256 of those bytes', async () => {
    const hasher = new SideHasher();
    try {
      const data = sharedBytes(300_000);
      const ranges = [[0, 1000], [1000, 150_000], [151_000, 149_000], [7, 0]] as const;
      const ids = await hasher.hash(data, ranges);
      expect(ids).toEqual(ranges.map(([start, length]) => idOf(data.subarray(start, start + length))));
      expect(hasher.running).toBe(true);
    } finally {
      await hasher.close();
    }
  });

  it('answers many requests at once, each with its own ranges', async () => {
    const hasher = new SideHasher();
    try {
      const data = sharedBytes(64 * 1024);
      const requests = Array.from({ length: 40 }, (_, i) => [[i * 1000, 1000 + i], [i * 500, 7]] as const);
      const answers = await Promise.all(requests.map((ranges) => hasher.hash(data, ranges)));
      expect(answers).toEqual(requests.map((ranges) => ranges.map(([start, length]) => idOf(data.subarray(start, start + length)))));
    } finally {
      await hasher.close();
    }
  });

  it('hashes a buffer that is not shared on the calling thread, without starting a worker', async () => {
    const hasher = new SideHasher();
    const data = randomBytes(10_000);
    expect(await hasher.hash(data, [[10, 5000]])).toEqual([idOf(data.subarray(10, 5010))]);
    expect(hasher.running).toBe(false);
  });

  it('still answers, on the calling thread, after close', async () => {
    const hasher = new SideHasher();
    const data = sharedBytes(10_000);
    await hasher.hash(data, [[0, 10]]);
    await hasher.close();
    expect(hasher.running).toBe(false);
    expect(await hasher.hash(data, [[0, 10_000]])).toEqual([idOf(data)]);
    expect(hasher.running).toBe(false);
  });

  it('answers correctly when its worker dies, or answers with an error, and stops using it', async () => {
    const data = sharedBytes(50_000);
    const dying = new SideHasher(`require('node:worker_threads').parentPort.on('message', () => process.exit(3));`);
    expect(await dying.hash(data, [[0, 50_000], [5, 5]])).toEqual([idOf(data), idOf(data.subarray(5, 10))]);
    expect(dying.running).toBe(false);
    expect(await dying.hash(data, [[1, 2]])).toEqual([idOf(data.subarray(1, 3))]);
    const erring = new SideHasher(`const { parentPort } = require('node:worker_threads'); parentPort.on('message', ({ n }) => parentPort.postMessage({ n, error: 'no' }));`);
    try {
      expect(await erring.hash(data, [[100, 200]])).toEqual([idOf(data.subarray(100, 300))]);
    } finally {
      await erring.close();
    }
  });

  it('does not keep a process alive once its answers are in, though never closed', async () => {
    const script = join(import.meta.dirname, 'side-hasher-child.ts');
    const child = await execa(process.execPath, ['--import', 'tsx', script], { timeout: 20_000, reject: false });
    expect(child.timedOut).toBe(false);
    expect(child.exitCode).toBe(0);
    expect(child.stdout.trim()).toBe(idOf(Buffer.alloc(1000, 7)));
  });

  it('a shared pool hands out buffers a worker can read', async () => {
    const pool = new BufferPool(2, 4096, true);
    const buffer = await pool.take();
    expect(buffer.buffer).toBeInstanceOf(SharedArrayBuffer);
    expect(buffer.length).toBe(4096);
    const plain = await new BufferPool(1, 16).take();
    expect(plain.buffer).not.toBeInstanceOf(SharedArrayBuffer);
  });
});
