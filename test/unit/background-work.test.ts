import { describe, expect, it } from 'vitest';
import { BackgroundWork } from '../../src/core/background-work.js';
import { memoryLogger } from '../helpers/memory-logger.js';

function gate(): { open: () => void; wait: Promise<void> } {
  let open!: () => void;
  const wait = new Promise<void>((resolve) => { open = resolve; });
  return { open, wait };
}

describe('BackgroundWork', () => {
  it('logs a failed task with its failure text and never rejects', async () => {
    const log = memoryLogger();
    const work = new BackgroundWork(log);
    await work.start('could not finish deleting /x', () => Promise.reject(new Error('disk gone')));
    expect(log.lines).toEqual(['error could not finish deleting /x: disk gone']);
  });

  it('settle waits for work started while it waits', async () => {
    const work = new BackgroundWork(memoryLogger());
    const first = gate();
    const done: string[] = [];
    void work.start('first failed', async () => {
      await first.wait;
      done.push('first');
      void work.start('second failed', async () => {
        await new Promise((r) => setTimeout(r, 20));
        done.push('second');
      });
    });
    const settled = work.settle().then(() => done.push('settled'));
    first.open();
    await settled;
    expect(done).toEqual(['first', 'second', 'settled']);
  });

  it('runs enqueued tasks one at a time, in order, past a failure', async () => {
    const log = memoryLogger();
    const work = new BackgroundWork(log);
    const order: string[] = [];
    const slow = gate();
    void work.enqueue('a failed', async () => { order.push('a start'); await slow.wait; order.push('a end'); });
    void work.enqueue('b failed', async () => { order.push('b'); throw new Error('boom'); });
    void work.enqueue('c failed', async () => { order.push('c'); });
    await new Promise((r) => setTimeout(r, 10));
    expect(order).toEqual(['a start']);
    slow.open();
    await work.settle();
    expect(order).toEqual(['a start', 'a end', 'b', 'c']);
    expect(log.lines).toEqual(['error b failed: boom']);
  });

  it('track hands the caller its own outcome and settle waits for it', async () => {
    const work = new BackgroundWork(memoryLogger());
    const hold = gate();
    const tracked = work.track(hold.wait.then(() => { throw new Error('mkfs failed'); }));
    let settled = false;
    const settling = work.settle().then(() => { settled = true; });
    await new Promise((r) => setTimeout(r, 10));
    expect(settled).toBe(false);
    hold.open();
    await expect(tracked).rejects.toThrow('mkfs failed');
    await settling;
    expect(settled).toBe(true);
  });
});
