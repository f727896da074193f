import { link, lstat, mkdir, mkdtemp, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { spawnSync } from 'node:child_process';
import * as realFs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isTempName, overwriteSameSize, readJsonFile, writeFileAtomic } from '../../src/core/atomic-file.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { LocalFirstFs, asFsPort } from '../../src/core/local-fs.js';
import { ErrorCodes } from '../../src/core/errors.js';

describe('atomic files', () => {
  let dir = '';
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('readJsonFile reads only regular files and never follows a symlink', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-atomic-'));
    await writeFile(join(dir, 'outside.json'), '{"secret": true}');
    await symlink(join(dir, 'outside.json'), join(dir, 'link.json'));
    await mkdir(join(dir, 'folder.json'));
    expect(await readJsonFile(realFs, join(dir, 'outside.json'))).toEqual({ secret: true });
    expect(await readJsonFile(realFs, join(dir, 'missing.json'))).toBeUndefined();
    await expect(readJsonFile(realFs, join(dir, 'link.json')))
      .rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/link\.json is a symbolic link/) });
    await expect(readJsonFile(realFs, join(dir, 'folder.json')))
      .rejects.toMatchObject({ code: ErrorCodes.STATE_CORRUPT, message: expect.stringMatching(/is not a regular file/) });
  });

  it('writeFileAtomic replaces a planted symlink instead of writing through it; temps are dot-files', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-atomic-'));
    await writeFile(join(dir, 'victim'), 'untouched');
    await symlink(join(dir, 'victim'), join(dir, 'state.json'));
    await writeFileAtomic(realFs, join(dir, 'state.json'), '{}');
    expect(await realFs.readFile(join(dir, 'victim'), 'utf8')).toBe('untouched');
    expect((await realFs.lstat(join(dir, 'state.json'))).isFile()).toBe(true);
    expect((await realFs.readdir(dir)).sort()).toEqual(['state.json', 'victim']);
    expect(isTempName('.tmp-0011aabb-12-0011aabb-app.json')).toBe(true);
    expect(isTempName('app.tmp-data.json')).toBe(false);
  });

  describe.each([
    ['node:fs/promises', () => realFs as FsPort],
    ['the daemon\'s synchronous local port', () => {
      const local = new LocalFirstFs();
      local.trustIfLocal(dir);
      return asFsPort(local);
    }],
  ])('overwriteSameSize through %s', (_label, port) => {
    it('writes over a lone regular file of the same length, keeping its inode', async () => {
      dir = await mkdtemp(join(tmpdir(), 'stowage-overwrite-'));
      const file = join(dir, '.epoch');
      await writeFile(file, '0123456789abcdef');
      const before = await stat(file);
      expect(await overwriteSameSize(port(), file, 'fedcba9876543210')).toBe(true);
      expect(await readFile(file, 'utf8')).toBe('fedcba9876543210');
      expect((await stat(file)).ino).toBe(before.ino);
    });

    it('leaves alone, and says so, what it must not write over: missing, another length, a second name, a symlink, a FIFO', async () => {
      dir = await mkdtemp(join(tmpdir(), 'stowage-overwrite-'));
      const fs = port();
      expect(await overwriteSameSize(fs, join(dir, 'missing'), 'fedcba9876543210')).toBe(false);
      await expect(lstat(join(dir, 'missing'))).rejects.toMatchObject({ code: 'ENOENT' });
      await writeFile(join(dir, 'longer'), '0123456789abcdef0');
      expect(await overwriteSameSize(fs, join(dir, 'longer'), 'fedcba9876543210')).toBe(false);
      expect(await readFile(join(dir, 'longer'), 'utf8')).toBe('0123456789abcdef0');
      // A record planted under the name as a hard link: writing would change the record.
      await writeFile(join(dir, 'record.json'), '{"precious":1}00');
      await link(join(dir, 'record.json'), join(dir, 'linked'));
      expect(await overwriteSameSize(fs, join(dir, 'linked'), 'fedcba9876543210')).toBe(false);
      expect(await readFile(join(dir, 'record.json'), 'utf8')).toBe('{"precious":1}00');
      await writeFile(join(dir, 'target'), '0123456789abcdef');
      await symlink(join(dir, 'target'), join(dir, 'pointer'));
      expect(await overwriteSameSize(fs, join(dir, 'pointer'), 'fedcba9876543210')).toBe(false);
      expect(await readFile(join(dir, 'target'), 'utf8')).toBe('0123456789abcdef');
      expect(spawnSync('mkfifo', [join(dir, 'fifo')]).status).toBe(0);
      expect(await overwriteSameSize(fs, join(dir, 'fifo'), 'fedcba9876543210')).toBe(false);
    });
  });

  it('overwriteSameSize does not write a file opened through a second name that is swapped away before the check', async () => {
    dir = await mkdtemp(join(tmpdir(), 'stowage-overwrite-'));
    const victim = join(dir, 'outside-victim');
    const epoch = join(dir, '.epoch');
    await writeFile(victim, 'VICTIM-16-BYTES!');
    await link(victim, epoch);
    // Right after the open, the store's .epoch is replaced: the victim is back to one name, its own.
    const swapping = { ...realFs, open: async (path: string, flags: number) => {
      const handle = await realFs.open(path, flags);
      await writeFile(`${epoch}.new`, '0000000000000000');
      await rename(`${epoch}.new`, epoch);
      return handle;
    } } as unknown as FsPort;
    expect(await overwriteSameSize(swapping, epoch, 'fedcba9876543210')).toBe(false);
    expect(await readFile(victim, 'utf8')).toBe('VICTIM-16-BYTES!');
    expect(await readFile(epoch, 'utf8')).toBe('0000000000000000');
  });
});
