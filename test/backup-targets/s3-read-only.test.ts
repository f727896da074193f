/**
 * An S3 repository read with credentials that may only read it (a restore host given read-only
 * keys, as careful operators do), against a real S3 server (Ceph radosgw) and a bucket policy:
 * restore, verify and check work without a lock object of their own and say so; a backup is
 * refused with the server's answer; nothing in the bucket changes.
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateBucketCommand, PutBucketPolicyCommand, S3Client } from '@aws-sdk/client-s3';
import { S3BlobStore } from '../../src/backup-targets/s3/s3-blob-store.js';
import { parseBackupUrl, type S3Target } from '../../src/core/backup/backup-url.js';
import { backupTree, checkRepository, listAll, Repository, restoreTree, verifyBackup } from '../../src/core/backup/index.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { checkS3Server, systemSuite } from '../helpers/requirements.js';
import { createS3User, sharedS3Server, type S3ServerInfo } from '../helpers/s3-server.js';

const skip = systemSuite('s3 (ceph radosgw)', checkS3Server());

describe.skipIf(skip)('an S3 repository read with read-only credentials', () => {
  let server: S3ServerInfo;
  let dir: string;
  let owner: S3BlobStore;
  let reader: S3BlobStore;
  let backupId: string;
  let before: string[];
  const bucket = `ro-${randomBytes(4).toString('hex')}`;

  const client = (accessKeyId: string, secretAccessKey: string) => new S3Client({
    endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials: { accessKeyId, secretAccessKey },
  });
  const keys = async (store: S3BlobStore) => {
    const out: string[] = [];
    for await (const { key } of listAll(store, '')) out.push(key);
    return out.sort();
  };

  beforeAll(async () => {
    server = await sharedS3Server();
    dir = await makeTempDir('stowage-s3ro-');
    const ownerClient = client(server.accessKeyId, server.secretAccessKey);
    await ownerClient.send(new CreateBucketCommand({ Bucket: bucket }));
    const target = parseBackupUrl(`s3://${bucket}@${server.region}/repo`).target as S3Target;
    owner = new S3BlobStore(target, { client: ownerClient });
    await mkdir(join(dir, 'source'));
    await writeFile(join(dir, 'source', 'a.txt'), 'the data\n');
    await writeFile(join(dir, 'source', 'b.bin'), randomBytes(300 * 1024));
    backupId = (await backupTree(join(dir, 'source'), await Repository.init(owner), { volume: 'v' })).id;
    const user = await createS3User(server, `reader-${randomBytes(3).toString('hex')}`);
    await ownerClient.send(new PutBucketPolicyCommand({
      Bucket: bucket,
      Policy: JSON.stringify({
        Version: '2012-10-17',
        Statement: [
          { Effect: 'Allow', Principal: { AWS: [user.arn] }, Action: ['s3:ListBucket'], Resource: [`arn:aws:s3:::${bucket}`] },
          { Effect: 'Allow', Principal: { AWS: [user.arn] }, Action: ['s3:GetObject'], Resource: [`arn:aws:s3:::${bucket}/*`] },
        ],
      }),
    }));
    reader = new S3BlobStore(target, { client: client(user.accessKeyId, user.secretAccessKey) });
    before = await keys(owner);
  }, 240_000);
  afterAll(async () => {
    await removeTempDir(dir);
  });

  it('restores, verifies and checks without a lock, saying why, and writes nothing', async () => {
    const repo = await Repository.open(reader);
    const warnings: string[] = [];
    const onWarning = (message: string) => warnings.push(message);
    const target = join(dir, 'restored');
    await mkdir(target);
    await restoreTree(repo, 'v', backupId, target, { onWarning });
    expect(await readFile(join(target, 'a.txt'), 'utf8')).toBe('the data\n');
    expect(await readFile(join(target, 'b.bin'))).toEqual(await readFile(join(dir, 'source', 'b.bin')));
    await expect(verifyBackup(repo, 'v', backupId, { onWarning })).resolves.toMatchObject({ files: 2 });
    await expect(checkRepository(repo, { onWarning })).resolves.toMatchObject({ backups: 1, files: 2 });
    expect(warnings).toHaveLength(3);
    for (const warning of warnings) expect(warning).toMatch(/refuses writes \(.*HTTP 403.*\): the (restore|verify|check) .* runs without a repository lock/);
    expect(await keys(owner)).toEqual(before);
  });

  it('refuses a backup with the server\'s answer, and the bucket stays as it was', async () => {
    const repo = await Repository.open(reader);
    await expect(backupTree(join(dir, 'source'), repo, { volume: 'w' })).rejects.toThrow(/HTTP 403/);
    expect(await keys(owner)).toEqual(before);
  });
});
