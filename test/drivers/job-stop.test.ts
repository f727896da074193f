/** JobRegistry.stopAll, what a graceful daemon stop calls (the daemon itself: daemon-stop-jobs.test.ts). */
import { describe, expect, it } from 'vitest';
import { ErrorCodes } from '../../src/core/errors.js';
import { JobRegistry } from '../../src/drivers/control/jobs.js';
import { memoryLogger } from '../helpers/memory-logger.js';

describe('JobRegistry.stopAll', () => {
  it('cancels running jobs, waits until each has ended (its undo done), then refuses new ones', async () => {
    const jobs = new JobRegistry(memoryLogger());
    const undone: string[] = [];
    const started = jobs.start('restore', 'copy', (context) => new Promise((_, reject) => {
      context.signal.addEventListener('abort', () => {
        // The undo a cancelled restore runs (removing its volume) takes a turn or two.
        void Promise.resolve().then(() => undone.push('copy')).then(() => reject(context.signal.reason));
      });
    }));
    const done = jobs.start('backup-verify', 'url', async () => 'verified');
    await new Promise((r) => setImmediate(r));
    expect(jobs.get(done.id).state).toBe('succeeded');
    expect(await jobs.stopAll(60_000)).toBe(0);
    expect(undone).toEqual(['copy']);
    expect(jobs.get(started.id)).toMatchObject({ state: 'failed', error: { code: ErrorCodes.CANCELLED, message: expect.stringMatching(/the daemon is stopping/) } });
    expect(() => jobs.start('backup-create', 'db', async () => 'never')).toThrow(expect.objectContaining({ code: ErrorCodes.CANCELLED }));
    expect(jobs.list().map((j) => j.target)).toEqual(['copy', 'url']);
  });

  it('gives up on a job that does not stop within the wait, and says how many', async () => {
    const log = memoryLogger();
    const jobs = new JobRegistry(log);
    const stuck = jobs.start('backup-delete', 'url', () => new Promise(() => {}));
    await new Promise((r) => setImmediate(r));
    expect(await jobs.stopAll(10)).toBe(1);
    expect(jobs.get(stuck.id).state).toBe('running');
    expect(log.lines.join('\n')).toMatch(new RegExp(`1 job\\(s\\) did not stop within 0 s: ${stuck.id}`));
  });
});
