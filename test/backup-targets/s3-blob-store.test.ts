/**
 * The S3 target against a real S3 server (Ceph radosgw, test/helpers/s3-server.ts): the shared
 * BlobStore conformance sentences, then what is S3's own (prefixes, more than 1000 keys in
 * listing and delete, errors that name the object and never the credentials).
 */
import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { S3BlobStore } from '../../src/backup-targets/s3/s3-blob-store.js';
import { deleteAll, listAll } from '../../src/core/backup/blob-store.js';
import { parseBackupUrl, type S3Target } from '../../src/core/backup/backup-url.js';
import { ErrorCodes } from '../../src/core/errors.js';
import { describeBlobStoreConformance } from '../../src/testing/blob-store-suite.js';
import { checkS3Server, systemSuite } from '../helpers/requirements.js';
import { sharedS3Server, type S3ServerInfo } from '../helpers/s3-server.js';

const skip = systemSuite('s3 (ceph radosgw)', checkS3Server());

function adminClient(server: S3ServerInfo): S3Client {
  return new S3Client({
    endpoint: server.endpoint, region: server.region, forcePathStyle: true,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
  });
}

describe.skipIf(skip)('S3 target on radosgw', () => {
  let server: S3ServerInfo;
  const bucket = `conf-${randomBytes(4).toString('hex')}`;
  const savedEnv = { ...process.env };

  beforeAll(async () => {
    server = await sharedS3Server();
    // The store takes credentials from the AWS chain only: here, the environment.
    process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    await adminClient(server).send(new CreateBucketCommand({ Bucket: bucket }));
  }, 240_000);
  afterAll(() => {
    for (const key of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY']) {
      if (savedEnv[key] === undefined) delete process.env[key]; else process.env[key] = savedEnv[key];
    }
  });

  const storeAt = (prefix: string) =>
    new S3BlobStore(parseBackupUrl(`s3://${bucket}@us-east-1/${prefix}?endpoint=${encodeURIComponent(server.endpoint)}`).target as S3Target);

  describeBlobStoreConformance('s3 (radosgw)', async () => ({ store: storeAt(`c-${randomBytes(6).toString('hex')}`) }));

  it('keeps each repository under its prefix: another prefix of the bucket sees none of it', async () => {
    const a = storeAt('tenant-a/repo');
    const b = storeAt('tenant-a/repo2');
    await a.put('config', Buffer.from('a'));
    await b.put('config', Buffer.from('b'));
    expect((await a.get('config')).toString()).toBe('a');
    expect((await a.list('')).objects).toEqual([{ key: 'config', size: 1 }]);
    expect((await b.list('')).objects).toEqual([{ key: 'config', size: 1 }]);
  });

  it('lists and deletes more than 1000 keys: every page, and deletes in batches of at most 1000', async () => {
    const store = storeAt(`big-${randomBytes(4).toString('hex')}`);
    const keys = Array.from({ length: 1500 }, (_, i) => `data/${String(i).padStart(5, '0')}`);
    for (let i = 0; i < keys.length; i += 32) await Promise.all(keys.slice(i, i + 32).map((k) => store.put(k, Buffer.from(k))));
    const listed: string[] = [];
    for await (const o of listAll(store, 'data/')) listed.push(o.key);
    expect(listed).toEqual(keys);
    await deleteAll(store, keys.slice(0, 1200));
    const left: string[] = [];
    for await (const o of listAll(store, 'data/')) left.push(o.key);
    expect(left).toEqual(keys.slice(1200));
  }, 240_000);

  it('fails with a message naming the store and the cause, never the secret, when the credentials are wrong', async () => {
    process.env.AWS_SECRET_ACCESS_KEY = 'not-the-secret-key-0123456789';
    try {
      const store = storeAt('wrong-creds');
      const err = await store.put('x', Buffer.from('x')).then(() => undefined, (e: unknown) => e as Error & { code: string });
      expect(err?.message).toMatch(/PutObject of x in s3:\/\/conf-[0-9a-f]+@us-east-1\/wrong-creds failed: SignatureDoesNotMatch|HTTP 403/);
      expect(err?.message).not.toContain('not-the-secret-key');
      expect(err?.message).not.toContain(server.secretAccessKey);
      await expect(store.assertReachable()).rejects.toMatchObject({ message: expect.stringContaining('HTTP 403') });
    } finally {
      process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    }
  });

  it('says the bucket does not exist before anything is written', async () => {
    const store = new S3BlobStore(parseBackupUrl(`s3://no-such-bucket-here@us-east-1/x?endpoint=${encodeURIComponent(server.endpoint)}`).target as S3Target);
    await expect(store.assertReachable()).rejects.toMatchObject({ message: expect.stringMatching(/NoSuchBucket.*does the bucket exist/) });
  });

  it('refuses an unreadable range argument with E_INVALID_REQUEST', async () => {
    await expect(storeAt('r').getRange('k', -1, 3)).rejects.toMatchObject({ code: ErrorCodes.INVALID_REQUEST });
  });
});
