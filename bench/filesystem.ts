/**
 * What the benchmark's temporary directories live on. On ext4 without a journal (this project's
 * CI machines) the kernel will not hand out an inode freed in the last one to six minutes
 * (fs/ext4/ialloc.c, recently_deleted) and checks them one by one, so every file created after
 * many were deleted costs more: Create and Remove, which make and delete lock and intent files,
 * cost up to twice as much CPU late in a run as early on (README, Benchmarks).
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename } from 'node:path';
import { promisify } from 'node:util';

export async function describeFilesystem(dir = tmpdir()): Promise<string> {
  let fstype: string;
  let source: string;
  try {
    const { stdout } = await promisify(execFile)('findmnt', ['-n', '-o', 'FSTYPE,SOURCE', '-T', dir], { timeout: 10_000 });
    [fstype = '?', source = '?'] = stdout.trim().split(/\s+/);
  } catch {
    return `unknown (findmnt failed for ${dir})`;
  }
  if (fstype !== 'ext4') return `${fstype} on ${source} (${dir})`;
  // jbd2 lists each journal it runs as <device>-<inode>.
  let journals: string[] = [];
  try { journals = readdirSync('/proc/fs/jbd2'); } catch { /* no journal anywhere */ }
  const journaled = journals.some((j) => j.startsWith(`${basename(source)}-`));
  const unjournaled = 'without a journal: freed inodes are not reused for minutes, so creates slow down run after run; ' +
    'set TMPDIR to a directory on a journaled filesystem to measure what most hosts have';
  return `ext4 on ${source}, ${journaled ? 'journaled' : unjournaled} (${dir})`;
}
