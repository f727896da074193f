/** A tree nested deeper than any path a manifest records still backs up, without that part. */
import { mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { MAX_PATH } from '../../../src/core/backup/format.js';
import { backupTree, Repository } from '../../../src/core/backup/index.js';
import { collect } from './tree-helpers.js';

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
});
