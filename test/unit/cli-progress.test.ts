import { describe, expect, it } from 'vitest';
import { describeProgress } from '../../src/drivers/cli/progress.js';

describe('a progress line', () => {
  it('counts files, or the chunks a whole-repository verify counts, against their totals', () => {
    expect(describeProgress({ phase: 'restore', files: 3, totalFiles: 7, bytes: 1024, totalBytes: 4096 }, 512, 6))
      .toBe('restore 3/7 files, 1.0 KiB/4.0 KiB, 512 B/s, ETA 6s');
    expect(describeProgress({ phase: 'verify', unit: 'chunks', files: 40, totalFiles: 120, bytes: 3 * 1024 * 1024, totalBytes: 9 * 1024 * 1024 }, 0))
      .toBe('verify 40/120 chunks, 3.0 MiB/9.0 MiB');
  });
});
