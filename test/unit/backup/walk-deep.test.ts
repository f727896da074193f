/**
 * A tree nested deeper than any path a manifest records still backs up, without that part; and
 * one whose paths a manifest records but the kernel takes in no single call restores whole.
 */
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { MAX_PATH } from '../../../src/core/backup/format.js';
import { backupTree, restoreTree, Repository } from '../../../src/core/backup/index.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';
import { collect } from './tree-helpers.js';

const noAttr = systemSuite('extended attributes', process.getuid?.() === 0 && findExecutable('getfattr') && findExecutable('setfattr')
  ? { ok: true } : { ok: false, why: 'needs root and getfattr/setfattr (apt-get install attr)' });
/** A directory name of 120 two-byte characters: 20 levels are 2420 characters but 4820 bytes. */
const LEVEL = '\u00e9'.repeat(120);

describe('a tree deeper than a manifest records', () => {
  let base = '';
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-walk-deep-'));
  });
  afterAll(async () => {
    // rm(1) walks by descriptor: node's rm would meet paths longer than the kernel takes.
    if (base) await execa('rm', ['-rf', base]);
  });

  it('leaves out what lies past the longest path, says so, and backs up the rest', async () => {
    const src = join(base, 'src');
    const level = 'd'.repeat(200);
    // 21 levels of 201 characters: the 21st is past 4096 (absolute, it is past PATH_MAX too).
    await execa('bash', ['-c', `mkdir -p "$1" && cd "$1" && for i in $(seq 21); do mkdir ${level} && cd ${level}; done && echo deep > f`, 'bash', src]);
    await writeFile(join(src, 'zz'), 'after');
    const repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }));
    const warnings: string[] = [];
    const record = await backupTree(src, repo, { volume: 'deep', onWarning: (w) => warnings.push(w) });
    const paths = (await collect(repo, record)).entries.map((e) => e.path);
    expect(paths.at(-1)).toBe('zz');
    const deepest = paths.filter((p) => p.startsWith('d')).at(-1)!;
    expect(deepest.split('/')).toHaveLength(20);
    expect(deepest.length).toBeLessThanOrEqual(MAX_PATH);
    expect(warnings).toEqual([expect.stringMatching(/^d{200}\/d+\.\.\.: is a path of 4220 characters, more than a backup records \(4096\); not in this backup, nor anything under it$/)]);
    expect(record.warnings).toEqual(warnings);
  });

  it('restores paths longer than PATH_MAX once under the target: names, hardlinks (of files, a symlink, a FIFO), data and times', async () => {
    const src = join(base, 'long');
    // 20 levels of 120 two-byte characters: 2420 characters, as a manifest records them, but
    // 4820 bytes, more than any path the kernel takes in one call (4096).
    const level = LEVEL;
    const script = [
      'mkdir -p "$1" && cd "$1"',
      `for i in $(seq 19); do mkdir ${level} && cd ${level}; done`,
      // 'other' sorts before the next level: its file is the first name of the hardlinks, and
      // its directory is closed again by the time the deeper names link to it.
      `mkdir other ${level} && echo deep > other/h && chmod 640 other/h`,
      // A symlink and a FIFO with two names each: link(2) takes any but a directory.
      `cd ${level} && ln ../other/h f && ln f g && ln -s f s && ln -P s s2 && mkfifo p && ln p p2 && echo -n sibling > z`,
      // Whole seconds everywhere, as find prints them to the nanosecond and a restore sets microseconds.
      'cd "$1" && find . -execdir touch -h -d 2002-03-04T05:06:07Z {} +',
    ].join(' && ');
    await execa('bash', ['-c', script, 'bash', src]);
    const repo = await Repository.init(new VfsBlobStore(join(base, 'repo-long'), { durable: false }));
    const warnings: string[] = [];
    const record = await backupTree(src, repo, { volume: 'long', onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    const out = join(base, 'long-out');
    await mkdir(out);
    expect(await restoreTree(repo, 'long', record.id, out)).toMatchObject({ entries: record.stats.entries, files: 2 });
    // find walks by descriptor: type, links, size, mode, mtime and path of everything, both sides.
    const listing = async (root: string) => (await execa('find', ['.', '-printf', '%y %n %s %m %T@ %P\n'], { cwd: root })).stdout.split('\n').sort();
    const restored = await listing(out);
    expect(restored).toEqual(await listing(src));
    expect(restored.filter((line) => line.startsWith('f 3 5 640 1015218367.0000000000 '))).toHaveLength(3);
    expect(restored.filter((line) => line.startsWith('p 2 0 644 ') || line.startsWith('l 2 1 777 '))).toHaveLength(4);
    const kinds = new Map((await collect(repo, record)).entries.map((e) => [e.path.split('/').at(-1), e.type]));
    expect([kinds.get('s'), kinds.get('s2'), kinds.get('p'), kinds.get('p2')]).toEqual(['symlink', 'hardlink', 'fifo', 'hardlink']);
    // Read through the deepest directory, a level at a time, as no single path reaches it.
    const read = await execa('bash', ['-c', `cd "$1" && for i in $(seq 20); do cd ${level}; done && cat g z && readlink s && stat -c %i f g ../other/h | sort -u | wc -l`, 'bash', out]);
    expect(read.stdout).toBe('deep\nsiblingf\n1');
  });

  it.skipIf(noAttr)('sets the attributes it can name, and says which it cannot: those past PATH_MAX', async () => {
    const src = join(base, 'long-xattrs');
    await execa('bash', ['-c', [
      'mkdir -p "$1" && echo top > "$1/top" && setfattr -n user.top -v yes "$1/top" && cd "$1"',
      `for i in $(seq 20); do mkdir ${LEVEL} && cd ${LEVEL}; done`,
      'echo deep > f && setfattr -n user.deep -v 1 f',
    ].join(' && '), 'bash', src]);
    const repo = await Repository.init(new VfsBlobStore(join(base, 'repo-long-xattrs'), { durable: false }));
    const record = await backupTree(src, repo, { volume: 'long' });
    const out = join(base, 'long-xattrs-out');
    await mkdir(out);
    const warnings: string[] = [];
    await restoreTree(repo, 'long', record.id, out, { onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([`extended attributes of 1 entry were not restored: their paths under ${out} are 4096 bytes or longer, more than setfattr can name (the entries themselves are restored)`]);
    expect((await execa('getfattr', ['--only-values', '-n', 'user.top', join(out, 'top')])).stdout).toBe('yes');
    const deep = await execa('bash', ['-c', `cd "$1" && for i in $(seq 20); do cd ${LEVEL}; done && cat f`, 'bash', out]);
    expect(deep.stdout).toBe('deep');
  });
});
