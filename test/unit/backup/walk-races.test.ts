import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire, syncBuiltinESMExports } from 'node:module';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { collect } from './tree-helpers.js';

/**
 * A container writing its volume while a backup reads it can swap what the walk just saw. The
 * races are made exact: node:fs's lstat is wrapped (and the ESM bindings synced, so the
 * library's named imports see it) to change the tree right after the walk's lstat of a name.
 */
// node:fs as CommonJS sees it: writable, unlike the ESM namespace.
const cjsFs = createRequire(import.meta.url)('node:fs') as { lstatSync: typeof fs.lstatSync; promises: { lstat: typeof fs.promises.lstat } };
const realLstatSync = cjsFs.lstatSync;
const realLstat = cjsFs.promises.lstat;
const isRoot = process.getuid?.() === 0;

function afterLstatOf(suffix: string, change: () => void): void {
  let fired = false;
  const fire = (path: unknown) => {
    if (!fired && String(path).endsWith(suffix)) {
      fired = true;
      change();
    }
  };
  // Wrapping node:fs itself: the signature is node's, whatever it is called with.
  cjsFs.lstatSync = ((path: fs.PathLike, options?: fs.StatSyncOptions) => {
    const result = realLstatSync(path, options);
    fire(path);
    return result;
  }) as typeof fs.lstatSync;
  cjsFs.promises.lstat = (async (path: fs.PathLike, options?: fs.StatOptions) => {
    const result = await realLstat(path, options);
    fire(path);
    return result;
  }) as typeof fs.promises.lstat;
  syncBuiltinESMExports();
}

function unwrap(): void {
  cjsFs.lstatSync = realLstatSync;
  cjsFs.promises.lstat = realLstat;
  syncBuiltinESMExports();
}

describe('a tree that changes under the backup', () => {
  let base = '';
  let outside = '';
  let repo: Repository;
  let round = 0;

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-races-'));
    outside = join(base, 'outside');
    fs.mkdirSync(outside);
    fs.writeFileSync(join(outside, 'hostname'), 'OUTSIDE secret\n');
    fs.writeFileSync(join(outside, 'passwd'), 'OUTSIDE secret\n');
    repo = await Repository.init(new VfsBlobStore(join(base, 'repo'), { durable: false }), {});
  });
  afterEach(unwrap);
  afterAll(async () => {
    unwrap();
    await rm(base, { recursive: true, force: true });
  });

  /** A fresh source tree: a directory with two files, a file, a hardlinked pair, a file after them. */
  function tree(): string {
    round += 1;
    const src = join(base, `src${round}`);
    fs.mkdirSync(join(src, 'victim'), { recursive: true });
    fs.writeFileSync(join(src, 'victim', 'hostname'), 'own hostname\n');
    fs.writeFileSync(join(src, 'victim', 'passwd'), 'own passwd\n');
    fs.writeFileSync(join(src, 'zfile'), 'a file the race replaces\n');
    fs.writeFileSync(join(src, 'zz-after'), 'after\n');
    return src;
  }

  /** Backs up, verifies, restores; returns the warnings and every restored file's content. */
  async function backUpAndRestore(src: string, localFastPath: boolean): Promise<{ warnings: string[]; files: Map<string, string>; paths: string[] }> {
    const warnings: string[] = [];
    const record = await backupTree(src, repo, { volume: `race${round}`, localFastPath, parent: false, onWarning: (w) => warnings.push(w) });
    unwrap();
    await verifyBackup(repo, record.volume, record.id);
    const out = join(base, `out${round}`);
    fs.mkdirSync(out);
    await restoreTree(repo, record.volume, record.id, out);
    const files = new Map<string, string>();
    for (const rel of await readdir(out, { recursive: true })) {
      if (fs.lstatSync(join(out, rel)).isFile()) files.set(rel, await readFile(join(out, rel), 'utf8'));
    }
    return { warnings, files, paths: (await collect(repo, record)).entries.map((e) => e.path) };
  }

  for (const localFastPath of [true, false]) {
    const mode = localFastPath ? 'local' : 'thread pool';

    it(`${mode}: a directory swapped for a symlink to outside, before it is listed, is left out with a warning`, async () => {
      const src = tree();
      afterLstatOf('/victim', () => {
        fs.renameSync(join(src, 'victim'), join(src, '..', `moved${round}`));
        fs.symlinkSync(outside, join(src, 'victim'));
      });
      const { warnings, files } = await backUpAndRestore(src, localFastPath);
      expect([...files.values()].join('')).not.toContain('OUTSIDE');
      expect(files.get('zz-after')).toBe('after\n');
      expect(warnings).toEqual(['victim: was replaced by something other than a directory (a symlink, a file) while the backup read the tree; its contents are not in this backup']);
    });

    it(`${mode}: a directory swapped for a symlink to outside while its files are read: nothing outside is read`, async () => {
      const src = tree();
      afterLstatOf('/hostname', () => {
        fs.renameSync(join(src, 'victim'), join(src, '..', `moved${round}`));
        fs.symlinkSync(outside, join(src, 'victim'));
      });
      const { files } = await backUpAndRestore(src, localFastPath);
      // The directory the walk opened is read on, wherever it was moved to.
      expect(files.get('victim/hostname')).toBe('own hostname\n');
      expect(files.get('victim/passwd')).toBe('own passwd\n');
      expect([...files.values()].join('')).not.toContain('OUTSIDE');
    });

    it(`${mode}: a file swapped for a FIFO is left out with a warning, not recorded empty`, async () => {
      const src = tree();
      afterLstatOf('/zfile', () => {
        fs.unlinkSync(join(src, 'zfile'));
        execFileSync('mkfifo', [join(src, 'zfile')]);
      });
      const { warnings, files, paths } = await backUpAndRestore(src, localFastPath);
      expect(paths).not.toContain('zfile');
      expect(files.get('zz-after')).toBe('after\n');
      expect(warnings).toEqual(['zfile: was replaced by a FIFO while the backup read the tree; not in this backup']);
    });

    it.runIf(isRoot)(`${mode}: a file swapped for /dev/zero's device is not read (it never ends)`, async () => {
      const src = tree();
      afterLstatOf('/zfile', () => {
        fs.unlinkSync(join(src, 'zfile'));
        execFileSync('mknod', [join(src, 'zfile'), 'c', '1', '5']);
      });
      const { warnings, paths } = await backUpAndRestore(src, localFastPath);
      expect(paths).not.toContain('zfile');
      expect(warnings).toEqual(['zfile: was replaced by a device while the backup read the tree; not in this backup']);
    });

    it.runIf(isRoot)(`${mode}: a file swapped for a device is never opened (its driver would run): one with no driver, whose open fails, is left out like any device`, async () => {
      const src = tree();
      afterLstatOf('/zfile', () => {
        fs.unlinkSync(join(src, 'zfile'));
        // Major 240 is for local use: no driver here, so opening it fails with ENXIO.
        execFileSync('mknod', [join(src, 'zfile'), 'c', '240', '0']);
      });
      const { warnings, paths } = await backUpAndRestore(src, localFastPath);
      expect(paths).not.toContain('zfile');
      expect(warnings).toEqual(['zfile: was replaced by a device while the backup read the tree; not in this backup']);
    });

    it(`${mode}: a file swapped for a symlink is left out with a warning; the backup goes on`, async () => {
      const src = tree();
      afterLstatOf('/zfile', () => {
        fs.unlinkSync(join(src, 'zfile'));
        fs.symlinkSync(join(outside, 'passwd'), join(src, 'zfile'));
      });
      const { warnings, files } = await backUpAndRestore(src, localFastPath);
      expect(files.has('zfile')).toBe(false);
      expect(files.get('zz-after')).toBe('after\n');
      expect(warnings).toEqual(['zfile: was replaced by a symlink while the backup read the tree; not in this backup']);
    });

    it(`${mode}: a file or directory removed or renamed after the walk saw it is left out with a warning, and the backup completes`, async () => {
      const src = tree();
      afterLstatOf('/zfile', () => fs.unlinkSync(join(src, 'zfile')));
      const gone = await backUpAndRestore(src, localFastPath);
      expect(gone.paths).not.toContain('zfile');
      expect(gone.warnings).toEqual(['zfile: was removed or renamed while the backup read the tree; not in this backup']);
      const again = tree();
      afterLstatOf('/victim', () => fs.renameSync(join(again, 'victim'), join(again, '..', `renamed${round}`)));
      const emptied = await backUpAndRestore(again, localFastPath);
      expect(emptied.paths).toEqual(['.', 'victim', 'zfile', 'zz-after']);
      expect(emptied.warnings).toEqual(['victim: was removed or renamed while the backup read the tree; not in this backup']);
    });

    it(`${mode}: a name listed and gone before the walk stats it is a warning too (a file renamed back and forth)`, async () => {
      const src = tree();
      afterLstatOf('/victim', () => fs.renameSync(join(src, 'zfile'), join(src, 'zfile.1')));
      const { warnings, paths } = await backUpAndRestore(src, localFastPath);
      expect(paths).not.toContain('zfile');
      expect(warnings).toEqual(['zfile: was removed or renamed while the backup read the tree; not in this backup']);
    });

    it(`${mode}: when a hardlinked file's first name is left out, its other names are read instead, still linked to each other`, async () => {
      const src = tree();
      fs.linkSync(join(src, 'zfile'), join(src, 'zz-link'));
      fs.linkSync(join(src, 'zfile'), join(src, 'zz-link2'));
      afterLstatOf('/zfile', () => {
        fs.unlinkSync(join(src, 'zfile'));
        execFileSync('mkfifo', [join(src, 'zfile')]);
      });
      const { warnings, files, paths } = await backUpAndRestore(src, localFastPath);
      expect(paths).not.toContain('zfile');
      expect(warnings).toEqual(['zfile: was replaced by a FIFO while the backup read the tree; not in this backup']);
      expect(files.get('zz-link')).toBe('a file the race replaces\n');
      expect(files.get('zz-link2')).toBe('a file the race replaces\n');
      const out = join(base, `out${round}`);
      expect(fs.statSync(join(out, 'zz-link2')).ino).toBe(fs.statSync(join(out, 'zz-link')).ino);
    });

    it(`${mode}: a hardlinked file's first name replaced by another file before it is read: its other names keep their own content`, async () => {
      const src = tree();
      // Three names: the two left still show it linked once the first is replaced.
      fs.linkSync(join(src, 'zfile'), join(src, 'zz-link'));
      fs.linkSync(join(src, 'zfile'), join(src, 'zz-link2'));
      afterLstatOf('/zfile', () => {
        fs.writeFileSync(join(src, 'zfile.new'), 'the replacement\n');
        fs.renameSync(join(src, 'zfile.new'), join(src, 'zfile'));
      });
      const { warnings, files } = await backUpAndRestore(src, localFastPath);
      expect(warnings).toEqual([]);
      expect(files.get('zfile')).toBe('the replacement\n');
      expect(files.get('zz-link')).toBe('a file the race replaces\n');
      expect(files.get('zz-link2')).toBe('a file the race replaces\n');
      const out = join(base, `out${round}`);
      expect(fs.statSync(join(out, 'zz-link2')).ino).toBe(fs.statSync(join(out, 'zz-link')).ino);
    });
  }
});
