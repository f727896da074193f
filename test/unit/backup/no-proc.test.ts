/** Without /proc, opening a repository, a backup and a restore say why they cannot run, and write nothing. */
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { backupTree, Repository } from '../../../src/core/backup/index.js';
import { mountNamespaceSuite } from '../../helpers/requirements.js';

const noUnshare = mountNamespaceSuite('a mount namespace without /proc');

describe.skipIf(noUnshare)('backups and restores without /proc', () => {
  let base = '';
  beforeAll(async () => { base = await mkdtemp(join(tmpdir(), 'stowage-no-proc-')); });
  afterAll(async () => { if (base) await rm(base, { recursive: true, force: true }); });

  it('refuse with E_NOT_SUPPORTED, naming /proc (not as a missing file); the restore target stays empty', async () => {
    const tree = join(base, 'tree');
    await mkdir(join(tree, 'd'), { recursive: true });
    await writeFile(join(tree, 'd', 'f'), 'data');
    const repoDir = join(base, 'repo');
    const repo = await Repository.init(new VfsBlobStore(repoDir, { durable: false }));
    const record = await backupTree(tree, repo, { volume: 'noproc' });
    const target = join(base, 'target');
    await mkdir(target);
    // A private mount namespace, where the child puts an empty tmpfs over /proc once its
    // repository is open: it then sees no /proc/self/fd.
    const child = await execa('unshare', ['--mount', '--propagation', 'private',
      process.execPath, '--import', 'tsx', join(import.meta.dirname, 'no-proc-child.ts'), repoDir, tree, target, record.id]);
    const said = JSON.parse(child.stdout) as Record<'open' | 'backup' | 'restore', { code: string; message: string }>;
    // Not "holds no backup repository": the config is there, what is missing is /proc.
    expect(said.open).toEqual({ code: 'E_NOT_SUPPORTED', message: expect.stringMatching(/^opening \S+\/config needs \/proc mounted/) });
    for (const step of [said.backup, said.restore]) expect(step).toEqual({ code: 'E_NOT_SUPPORTED', message: expect.stringMatching(/needs \/proc/) });
    expect(await readdir(target)).toEqual([]);
    // Outside that namespace, /proc is as it was.
    expect((await readdir('/proc/self/fd')).length).toBeGreaterThan(0);
  });
});
