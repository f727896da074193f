/**
 * What the benchmark's temporary directories live on. On ext4 without a journal (this project's
 * CI machines) the kernel will not hand out an inode freed in the last one to six minutes
 * (fs/ext4/ialloc.c, recently_deleted) and checks them one by one, so every file created after
 * many were deleted costs more: Create and Remove, which make and delete lock and intent files,
 * cost up to twice as much CPU late in a run as early on (README, Benchmarks).
 */
import { execFile } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { mkdir, rm, rmdir } from 'node:fs/promises';
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

/**
 * A journaled ext4 made for one timed run: a sparse loop file of `sizeBytes` beside
 * `mountPoint`, formatted and mounted there (root only). Each restore gets a filesystem nobody has
 * deleted from, so neither tar nor a library pays for inodes another freed, and dirty pages of
 * the run before are written at its unmount, outside every timing. undefined where it cannot
 * be made (not root, no mkfs.ext4, no loop device): the caller falls back to plain directories.
 */
export async function freshExt4(mountPoint: string, sizeBytes: number): Promise<{ unmount(): Promise<void> } | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const run = promisify(execFile);
  const image = `${mountPoint}.img`;
  try {
    await run('truncate', ['-s', String(sizeBytes), image]);
    // Inode tables and journal written now, not by a kernel thread during the timed run.
    await run('mkfs.ext4', ['-q', '-F', '-E', 'lazy_itable_init=0,lazy_journal_init=0', image], { timeout: 120_000 });
    await mkdir(mountPoint, { recursive: true });
    await run('mount', ['-o', 'loop', image, mountPoint], { timeout: 60_000 });
  } catch {
    await rm(image, { force: true });
    return undefined;
  }
  // Restores write into an empty directory, as into a new volume.
  await rmdir(`${mountPoint}/lost+found`).catch(() => undefined);
  return {
    async unmount() {
      await run('umount', [mountPoint], { timeout: 300_000 });
      await rm(image, { force: true });
    },
  };
}
