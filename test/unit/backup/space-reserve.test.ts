/**
 * The space a vfs repository holds back (src/backup-targets/vfs/space-reserve.ts) is made and
 * given up only inside the repository: a symlink planted for the repository's root or for
 * `.reserve` never leads a write or an unlink elsewhere.
 */
import { lstat, mkdir, mkdtemp, readdir, readFile, rm, symlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { RESERVE_BYTES, SpaceReserve } from '../../../src/backup-targets/vfs/space-reserve.js';

describe('the space reserve of a vfs repository', () => {
  let base = '';
  beforeEach(async () => { base = await mkdtemp(join(tmpdir(), 'stowage-reserve-')); });
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  it('is made once, given up once, and made again after space was freed', async () => {
    const reserve = new SpaceReserve(base, false);
    await reserve.keep();
    expect((await lstat(join(base, '.reserve', 'space'))).size).toBe(RESERVE_BYTES);
    expect(await reserve.spend()).toBe(true);
    expect(await reserve.spend()).toBe(false);
    await reserve.keep();
    expect((await lstat(join(base, '.reserve', 'space'))).size).toBe(RESERVE_BYTES);
  });

  it('never unlinks or writes through a planted symlink, for .reserve or for the root', async () => {
    const outside = join(base, 'outside');
    await mkdir(outside);
    await writeFile(join(outside, 'space'), 'a user file');
    const repo = join(base, 'repo');
    await mkdir(repo);
    await symlink(outside, join(repo, '.reserve'));
    const reserve = new SpaceReserve(repo, false);
    expect(await reserve.spend()).toBe(false);
    await reserve.keep();
    expect(await readFile(join(outside, 'space'), 'utf8')).toBe('a user file');
    expect(await readdir(outside)).toEqual(['space']);

    const linkedRoot = join(base, 'linked-root');
    await symlink(outside, linkedRoot);
    const viaLink = new SpaceReserve(linkedRoot, false);
    await viaLink.keep();
    expect(await viaLink.spend()).toBe(false);
    expect(await viaLink.sweep(0)).toBe(0);
    expect(await readdir(outside)).toEqual(['space']);
  });

  it('sweeps what a killed make left, once it is old, and never the reserve itself', async () => {
    const reserve = new SpaceReserve(base, false);
    await reserve.keep();
    const left = join(base, '.reserve', '0123456789abcdef-4242');
    await writeFile(left, 'half a reserve');
    expect(await reserve.sweep(60_000)).toBe(0);
    const old = new Date(Date.now() - 2 * 3600_000);
    await utimes(left, old, old);
    await utimes(join(base, '.reserve', 'space'), old, old);
    await writeFile(join(base, '.reserve', 'notes'), 'someone\'s');
    await utimes(join(base, '.reserve', 'notes'), old, old);
    expect(await reserve.sweep(60_000)).toBe(1);
    expect((await readdir(join(base, '.reserve'))).sort()).toEqual(['notes', 'space']);
  });
});
