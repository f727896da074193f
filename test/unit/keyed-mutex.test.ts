import { describe, expect, it } from 'vitest';
import { KeyedMutex } from '../../src/core/keyed-mutex.js';

const tick = () => new Promise((r) => setTimeout(r, 1));

describe('KeyedMutex', () => {
  it('runs tasks of one key one at a time, in order, even when some fail', async () => {
    const mutex = new KeyedMutex();
    const events: string[] = [];
    let running = 0;
    const task = (label: string, fail = false) => mutex.run('k', async () => {
      running += 1;
      expect(running).toBe(1);
      events.push(`start ${label}`);
      await tick();
      events.push(`end ${label}`);
      running -= 1;
      if (fail) throw new Error(label);
      return label;
    });
    const results = await Promise.allSettled([task('a'), task('b', true), task('c')]);
    expect(results.map((r) => r.status)).toEqual(['fulfilled', 'rejected', 'fulfilled']);
    expect(events).toEqual(['start a', 'end a', 'start b', 'end b', 'start c', 'end c']);
    await tick();
    expect(mutex.busyKeys).toBe(0);
  });

  it('runs different keys concurrently', async () => {
    const mutex = new KeyedMutex();
    let concurrent = 0;
    let peak = 0;
    await Promise.all(['x', 'y', 'z'].map((key) => mutex.run(key, async () => {
      concurrent += 1;
      peak = Math.max(peak, concurrent);
      await tick();
      concurrent -= 1;
    })));
    expect(peak).toBe(3);
  });
});
