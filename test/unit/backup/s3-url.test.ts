import { describe, expect, it } from 'vitest';
import { formatBackupUrl, parseBackupUrl } from '../../../src/core/backup/backup-url.js';
import { ErrorCodes } from '../../../src/core/errors.js';

describe('s3:// backup URLs', () => {
  it("reads Convoy's s3://bucket@region/path, with and without a path, an endpoint, a volume and a backup", () => {
    expect(parseBackupUrl('s3://backups@eu-west-1/stowage/prod')).toEqual({ target: { scheme: 's3', bucket: 'backups', region: 'eu-west-1', prefix: 'stowage/prod' } });
    expect(parseBackupUrl('s3://backups@eu-west-1')).toEqual({ target: { scheme: 's3', bucket: 'backups', region: 'eu-west-1', prefix: '' } });
    expect(parseBackupUrl('s3://backups@eu-west-1/x/')).toMatchObject({ target: { prefix: 'x' } });
    const full = parseBackupUrl('s3://b.c-d@us-east-1/p?endpoint=http%3A%2F%2F127.0.0.1%3A7480&volume=pg&backup=20261202T143500123Z-1a2b3c4d');
    expect(full).toEqual({
      target: { scheme: 's3', bucket: 'b.c-d', region: 'us-east-1', prefix: 'p', endpoint: 'http://127.0.0.1:7480' },
      volume: 'pg', backup: '20261202T143500123Z-1a2b3c4d',
    });
    expect(formatBackupUrl(full)).toBe('s3://b.c-d@us-east-1/p?endpoint=http%3A%2F%2F127.0.0.1%3A7480&volume=pg&backup=20261202T143500123Z-1a2b3c4d');
    expect(parseBackupUrl(formatBackupUrl(full))).toEqual(full);
    expect(formatBackupUrl({ target: { scheme: 's3', bucket: 'bkt', region: 'r1', prefix: '' }, volume: 'v' })).toBe('s3://bkt@r1?volume=v');
  });

  it('refuses what S3 or stowage cannot take, saying why, and never accepts credentials in the endpoint', () => {
    const cases: [string, RegExp][] = [
      ['s3://backups/stowage', /region after "@"/],
      ['s3://Bad_Bucket@us-east-1', /not an S3 bucket name/],
      ['s3://ab@us-east-1', /not an S3 bucket name/],
      ['s3://a..b@us-east-1', /not an S3 bucket name/],
      ['s3://bucket@US EAST', /not a region name/],
      ['s3://bucket@us-east-1/a//b', /path segment "" is not valid/],
      ['s3://bucket@us-east-1/../x', /path segment ".." is not valid/],
      ['s3://bucket@us-east-1/x?endpoint=ftp%3A%2F%2Fh', /http:\/\/ or https:\/\//],
      ['s3://bucket@us-east-1/x?endpoint=http%3A%2F%2Fkey%3Asecret%40h', /must not carry credentials/],
      ['s3://AKIAKEY:Secret123@bucket@us-east-1/x', /credentials do not go in the URL/],
      ['s3://bucket@us-east-1/x?endpoint=http%3A%2F%2Fkey%3Asecret%40h%20x%5E', /is not a URL/],
      ['s3://bucket@us-east-1/x?endpoint=http%3A%2F%2Fh%2Fpath', /no path or query/],
      ['s3://bucket@us-east-1/x?endpoint=not-a-url', /is not a URL/],
      ['s3://bucket@us-east-1/x?region=eu', /unknown query key "region" \(known: volume, backup, endpoint\)/],
      ['vfs:///srv?endpoint=http%3A%2F%2Fh', /unknown query key "endpoint" \(known: volume, backup\)/],
    ];
    for (const [url, why] of cases) {
      let caught: unknown;
      try { parseBackupUrl(url); } catch (err) { caught = err; }
      expect(caught, url).toMatchObject({ code: ErrorCodes.INVALID_REQUEST, message: expect.stringMatching(why) });
      // Shown neither as typed nor percent-encoded.
      expect((caught as Error).message.toLowerCase()).not.toContain('secret');
    }
  });
});
