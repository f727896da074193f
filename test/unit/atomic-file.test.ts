import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import * as realFs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { isTempName, readJsonFile, writeFileAtomic } from '../../src/core/atomic-file.js';
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
});
