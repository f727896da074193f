/**
 * A restore that brings everything back but not all of it as the backup has it says so in its
 * answer, not only in the log: a volume restored onto a file system that takes no extended
 * attributes (ramfs), from a backup whose files have some.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createStowage, type Stowage } from '../../../src/index.js';
import { findExecutable, systemSuite } from '../../helpers/requirements.js';

const isRoot = process.getuid?.() === 0;
const skip = systemSuite('restore warnings', isRoot && findExecutable('getfattr') && findExecutable('setfattr')
  ? { ok: true } : { ok: false, why: 'needs root (a ramfs mount) and the attr package' });

describe.skipIf(skip)('a restore onto a file system that refuses extended attributes', () => {
  let base = '';
  let ramfs = '';
  const open: Stowage[] = [];
  const logged: string[] = [];

  beforeAll(async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-restore-warnings-'));
    ramfs = join(base, 'ramfs');
    await mkdir(ramfs);
    await execa('mount', ['-t', 'ramfs', '-o', 'mode=700', 'none', ramfs]);
  });
  afterAll(async () => {
    await Promise.all(open.map((s) => s.close()));
    if (ramfs) await execa('umount', [ramfs]).catch(() => undefined);
    if (base) await rm(base, { recursive: true, force: true });
  });

  it('restores the data and answers with what it could not set', async () => {
    const logger = { debug: () => {}, info: () => {}, warn: (m: string) => { logged.push(m); }, error: (m: string) => { logged.push(m); } };
    const source = await createStowage({ options: { 'vfs.path': join(base, 'volumes') }, root: join(base, 'state-a'), nodeId: 'a', logger });
    open.push(source);
    await source.create('app');
    const path = await source.mount('app', 'writer');
    await writeFile(join(path, 'conf'), 'port=5432\n');
    await execa('setfattr', ['-n', 'user.owner', '-v', 'team-a', join(path, 'conf')]);
    await source.unmount('app', 'writer');
    const backup = await source.createBackup('app', { dest: `vfs://${join(base, 'backups')}` });
    expect(backup.warnings ?? []).toEqual([]);

    const target = await createStowage({ options: { 'vfs.path': ramfs }, root: join(base, 'state-b'), nodeId: 'b', logger });
    open.push(target);
    const restored = await target.restoreVolume('copy', backup.url);
    expect(restored.created).toBe(true);
    expect(restored.warnings).toHaveLength(1);
    expect(restored.warnings![0]).toMatch(/^extended attributes: not all could be set: .*Operation not supported/);
    expect(logged.some((line) => line.startsWith('restoring volume copy: extended attributes: not all could be set'))).toBe(true);
    const copy = await target.mount('copy', 'reader');
    expect(await readFile(join(copy, 'conf'), 'utf8')).toBe('port=5432\n');
    await target.unmount('copy', 'reader');

    // Onto a file system that takes them, the same backup restores without a word.
    const clean = await source.restoreVolume('copy', backup.url);
    expect(clean.warnings).toBeUndefined();
  });
});
