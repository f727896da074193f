import { describe, expect, it } from 'vitest';
import { formatBackupUrl, parseBackupUrl, parseOneBackupUrl, parseRepositoryUrl } from '../../../src/core/backup/backup-url.js';
import { ErrorCodes } from '../../../src/core/errors.js';

const ID = '20261202T143500123Z-1a2b3c4d';

describe('backup URLs', () => {
  it('parses a repository, a volume in it and one backup', () => {
    expect(parseBackupUrl('vfs:///srv/backups')).toEqual({ target: { scheme: 'vfs', path: '/srv/backups' } });
    expect(parseBackupUrl('vfs:///srv/backups?volume=pg')).toEqual({ target: { scheme: 'vfs', path: '/srv/backups' }, volume: 'pg' });
    expect(parseBackupUrl(`vfs:///srv/backups?volume=pg&backup=${ID}`))
      .toEqual({ target: { scheme: 'vfs', path: '/srv/backups' }, volume: 'pg', backup: ID });
    // Query keys in any order.
    expect(parseBackupUrl(`vfs:///srv/backups?backup=${ID}&volume=pg`)).toMatchObject({ volume: 'pg', backup: ID });
  });

  it('round-trips through formatBackupUrl, escaping what a URL cannot carry', () => {
    for (const url of [
      { target: { scheme: 'vfs' as const, path: '/srv/backups' } },
      { target: { scheme: 'vfs' as const, path: '/mnt/my backups/a?b#c%d' }, volume: 'pg.data_1' },
      { target: { scheme: 'vfs' as const, path: '/srv/x' }, volume: 'pg', backup: ID },
    ]) {
      const text = formatBackupUrl(url);
      expect(parseBackupUrl(text)).toEqual(url);
    }
    expect(formatBackupUrl({ target: { scheme: 'vfs', path: '/mnt/my backups' }, volume: 'pg' })).toBe('vfs:///mnt/my%20backups?volume=pg');
    expect(formatBackupUrl({ target: { scheme: 'vfs', path: '/srv/b' }, volume: 'pg', backup: ID })).toBe(`vfs:///srv/b?volume=pg&backup=${ID}`);
  });

  it.each([
    ['', /non-empty/],
    ['/srv/backups', /scheme:\/\/location/],
    ['gs://bucket/path', /unknown scheme "gs"/],
    ['vfs://srv/backups', /three slashes/],
    ['vfs://host/srv/backups', /three slashes/],
    ['vfs:///', /root directory/],
    ['vfs:///srv//backups', /empty segment/],
    ['vfs:///srv/backups/', /empty segment/],
    ['vfs:///srv/../etc', /normalised/],
    ['vfs:///srv/./backups', /normalised/],
    ['vfs:///srv/%2e%2e/etc', /normalised/],
    ['vfs:///srv/a%2Fb', /escaped "\/"/],
    ['vfs:///srv/a%00b', /control character/],
    ['vfs:///srv/%zz', /broken %-escape/],
    ['vfs:///srv/b#frag', /fragment/],
    ['vfs:///srv/b?', /empty query/],
    ['vfs:///srv/b?volume', /not key=value/],
    ['vfs:///srv/b?vol=pg', /unknown query key "vol"/],
    ['vfs:///srv/b?volume=pg&volume=db', /given twice/],
    ['vfs:///srv/b?volume=../x', /not a valid volume name/],
    ['vfs:///srv/b?volume=.hidden', /not a valid volume name/],
    ['vfs:///srv/b?volume=pg&backup=latest', /not a backup id/],
    [`vfs:///srv/b?backup=${ID}`, /needs its volume/],
  ])('refuses %j with E_INVALID_REQUEST saying why', (url, why) => {
    let caught: unknown;
    try { parseBackupUrl(url); } catch (err) { caught = err; }
    expect(caught).toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(why) });
  });

  it('checks what an operation needs: a repository, or one backup', () => {
    expect(() => parseRepositoryUrl(`vfs:///srv/b?volume=pg&backup=${ID}`, 'a backup list')).toThrow(`a backup list takes a repository (or a volume in one), not one backup: drop &backup=${ID}`);
    expect(parseRepositoryUrl('vfs:///srv/b?volume=pg', 'the destination').volume).toBe('pg');
    expect(() => parseOneBackupUrl('vfs:///srv/b?volume=pg')).toThrow(/must name one backup/);
    expect(parseOneBackupUrl(`vfs:///srv/b?volume=pg&backup=${ID}`).backup).toBe(ID);
  });
});
