/**
 * A restore sets attributes a batch at a time (bounded memory and command input, whatever the
 * tree holds), each file's after the file is written; directories' last.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, Repository, restoreTree } from '../../../src/core/backup/index.js';
import { RESTORE_RUN_CHARS } from '../../../src/core/backup/xattrs.js';
import { ExecaCommandRunner, type CommandRunner } from '../../../src/core/command-runner.js';
import { readTreeXattrs } from '../../../src/testing/backup-tree.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';

const isRoot = process.getuid?.() === 0;
const noAttr = systemSuite('extended attributes', isRoot && findExecutable('getfattr') && findExecutable('setfattr')
  ? { ok: true } : { ok: false, why: 'needs root and getfattr/setfattr (apt-get install attr)' });

describe.skipIf(noAttr)('a restore\'s extended attributes', () => {
  let base = '';
  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-xattr-restore-'));
  });
  afterAll(async () => {
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('are set a batch of bounded input at a time, each after its file is written, and all come back', async () => {
    const src = join(base, 'src');
    await mkdir(join(src, 'd'), { recursive: true });
    // 2500 files with a 3000-byte value each: about 10 MB of base64 and paths, so two runs for
    // the files at least, and the directory's after them.
    const value = `0x${Buffer.alloc(3000, 0x61).toString('hex')}`;
    const names = Array.from({ length: 2500 }, (_, i) => `f${String(i).padStart(4, '0')}`);
    for (const name of names) await writeFile(join(src, 'd', name), name);
    await execa('xargs', ['-0', 'setfattr', '-n', 'user.big', '-v', value], { input: names.map((n) => join(src, 'd', n)).join('\0') });
    await execa('setfattr', ['-n', 'user.dir', '-v', 'here', join(src, 'd')]);
    const store = new VfsBlobStore(join(base, 'repo'), { durable: false });
    const repo = await Repository.init(store);
    const record = await backupTree(src, repo, { volume: 'x' });
    const inputs: number[] = [];
    const real = new ExecaCommandRunner();
    const runner: CommandRunner = {
      run: async (program, args, options) => {
        if (program === 'setfattr') inputs.push(String(options?.input ?? '').length);
        return real.run(program, args, options);
      },
    };
    const out = join(base, 'out');
    await mkdir(out);
    const warnings: string[] = [];
    await restoreTree(repo, 'x', record.id, out, { commands: runner, onWarning: (w) => warnings.push(w) });
    expect(warnings).toEqual([]);
    expect(inputs.length).toBeGreaterThanOrEqual(3);
    // One entry past the limit at most: a run holds a batch that just reached it.
    for (const length of inputs) expect(length).toBeLessThan(RESTORE_RUN_CHARS + 64 * 1024);
    const restored = await readTreeXattrs(out);
    const b64 = Buffer.alloc(3000, 0x61).toString('base64');
    for (const name of names) expect(restored.get(`d/${name}`), name).toEqual([['user.big', b64]]);
    expect(restored.get('d')).toEqual([['user.dir', Buffer.from('here').toString('base64')]]);
  });
});
