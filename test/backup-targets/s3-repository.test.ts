/**
 * The S3 target under the embedding API and the backup library, against a real S3 server (Ceph
 * radosgw): backup, list, inspect, verify, restore and delete through createStowage with the
 * endpoint from STOWAGE_S3_ENDPOINT; a repository of more than 1000 objects through every
 * listing (index load, verify, gc) and delete path.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { S3BlobStore } from '../../src/backup-targets/s3/s3-blob-store.js';
import { backupTree, deleteBackup, gc, listAll, Repository, restoreTree, verifyBackup } from '../../src/core/backup/index.js';
import { createStowage } from '../../src/drivers/api/create-stowage.js';
import { makeTempDir, removeTempDir } from '../helpers/daemon-process.js';
import { checkS3Server, systemSuite } from '../helpers/requirements.js';
import { sharedS3Server, type S3ServerInfo } from '../helpers/s3-server.js';

const skip = systemSuite('s3 (ceph radosgw)', checkS3Server());

async function digest(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const e of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      if (e.isDirectory()) await walk(join(dir, e.name), `${rel}${e.name}/`);
      else out.push(`${rel}${e.name} ${createHash('sha256').update(await readFile(join(dir, e.name))).digest('hex')}`);
    }
  };
  await walk(root, '');
  return out;
}

describe.skipIf(skip)('S3 repositories on radosgw (embedding API and library)', () => {
  let server: S3ServerInfo;
  let dir: string;
  const bucket = `api-${randomBytes(4).toString('hex')}`;
  const saved = { ...process.env };

  beforeAll(async () => {
    server = await sharedS3Server();
    process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    process.env.STOWAGE_S3_ENDPOINT = server.endpoint;
    await new S3Client({
      endpoint: server.endpoint, region: server.region, forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    }).send(new CreateBucketCommand({ Bucket: bucket }));
    dir = await makeTempDir('stowage-s3api-');
  }, 240_000);
  afterAll(async () => {
    for (const key of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'STOWAGE_S3_ENDPOINT']) {
      if (saved[key] === undefined) delete process.env[key]; else process.env[key] = saved[key];
    }
    await removeTempDir(dir);
  });

  it('backs up, lists, inspects, verifies, restores and deletes through createStowage', async () => {
    const stowage = await createStowage({ options: { 'vfs.path': join(dir, 'volumes') }, root: join(dir, 'state'), nodeId: 'api-node' });
    try {
      const made = await stowage.create('docs');
      const path = made.volume.mountpoint ?? join(dir, 'volumes', 'docs');
      await mkdir(join(path, 'a'), { recursive: true });
      await writeFile(join(path, 'a/one.txt'), 'one');
      await writeFile(join(path, 'blob.bin'), randomBytes(1_500_000));
      const before = await digest(path);
      const dest = `s3://${bucket}@us-east-1/api`;
      const backup = await stowage.createBackup('docs', { dest });
      expect(backup.url).toMatch(new RegExp(`^s3://${bucket}@us-east-1/api\\?volume=docs&backup=`));
      expect((await stowage.listBackups(dest)).map((b) => b.url)).toEqual([backup.url]);
      expect(await stowage.inspectBackup(backup.url)).toMatchObject({ volume: 'docs', stats: { files: 2, bytes: 1_500_003 } });
      expect(await stowage.verifyBackup(backup.url)).toMatchObject({ files: 2 });
      const restored = await stowage.restoreVolume('docs-copy', backup.url);
      expect(await digest(restored.volume.mountpoint ?? join(dir, 'volumes', 'docs-copy'))).toEqual(before);
      await stowage.deleteBackup(backup.url);
      expect(await stowage.listBackups(dest)).toEqual([]);
    } finally {
      await stowage.close();
    }
  }, 300_000);

  it('keeps a repository of more than 1000 objects whole through listing, verify, restore, delete and gc', async () => {
    const store = new S3BlobStore({ scheme: 's3', bucket, region: 'us-east-1', prefix: 'many' });
    // Tiny packs: every file becomes a pack and an index object of its own.
    const repo = await Repository.init(store, { packSize: 1024 });
    const src = join(dir, 'many-src');
    await mkdir(src);
    for (let i = 0; i < 520; i += 1) await writeFile(join(src, `f${i}`), randomBytes(1500));
    const record = await backupTree(src, repo, { volume: 'many', parent: false });
    let objects = 0;
    for await (const _ of listAll(store, '')) objects += 1;
    expect(objects).toBeGreaterThan(1000);

    const reopened = await Repository.open(store);
    expect((await verifyBackup(reopened, 'many', record.id)).files).toBe(520);
    const out = join(dir, 'many-out');
    await mkdir(out);
    await restoreTree(reopened, 'many', record.id, out);
    expect(await digest(out)).toEqual(await digest(src));

    await deleteBackup(reopened, 'many', record.id);
    const collected = await gc(reopened);
    expect(collected.deletedPacks).toBeGreaterThan(500);
    expect(collected.deletedIndexes).toBeGreaterThan(500);
    const left: string[] = [];
    for await (const o of listAll(store, '')) left.push(o.key);
    expect(left.filter((k) => k.startsWith('packs/') || k.startsWith('index/'))).toEqual([]);
  }, 600_000);
});
