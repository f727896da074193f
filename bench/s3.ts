/**
 * Section 6 of `npm run bench` (alone: `npm run bench -- s3`): backups to a local S3 server
 * (Ceph radosgw on an in-memory OSD, test/helpers/s3-server.ts) against an `aws s3 cp`-style
 * copy of the same bytes, with the same SDK, client settings and parallelism, in the same run:
 * - a full backup of the bench tree (bench/backup.ts's makeTree) against uploading each of its
 *   files as one object, BENCH_S3_PARALLEL (the S3 target's request limit) at a time;
 * - a restore of that backup into an empty directory against downloading those objects into
 *   files, likewise.
 * BENCH_S3_MIB (default 256) sets the tree's size in large files; BENCH_S3_SMALL its small files.
 */
import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative } from 'node:path';
import { CreateBucketCommand, GetObjectCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { S3BlobStore } from '../src/backup-targets/s3/s3-blob-store.js';
import { Repository } from '../src/core/backup/repository.js';
import { backupTree } from '../src/core/backup/backup.js';
import { restoreTree } from '../src/core/backup/restore.js';
import { startCephS3, stopCephS3 } from '../test/helpers/s3-server.js';
import { makeTree } from './backup.js';
import { addMetric, atLeast, fmt, newSection, type Section } from './report.js';
import { envInt, runPool, timed } from './util.js';

const MiB = 1024 * 1024;

async function filesUnder(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string) => {
    for (const entry of await readdir(dir, { withFileTypes: true })) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path); else if (entry.isFile()) out.push(path);
    }
  };
  await walk(root);
  return out;
}

export async function s3Bench(progress: (line: string) => void): Promise<Section> {
  const section = newSection('6', 'Backups to S3 (local radosgw): stowage vs an aws-s3-cp-style copy, same SDK and parallelism');
  const largeMiB = envInt('BENCH_S3_MIB', 256);
  const smallFiles = envInt('BENCH_S3_SMALL', 1000);
  const parallel = envInt('BENCH_S3_PARALLEL', 8);
  const base = await mkdtemp('/var/tmp/stowage-bench-s3-');
  const cephDir = join(base, 'ceph');
  try {
    progress(`s3: starting radosgw (in-memory OSD of ${fmt((largeMiB * 3 + 1024) / 1024)} GiB)`);
    const started = await timed(() => startCephS3(cephDir, { memstoreBytes: (largeMiB * 3 + 1024) * MiB }));
    const server = started.result;
    section.notes.push(`radosgw with one monitor and one in-memory OSD started in ${fmt(started.ms / 1000)} s.`);
    const credentials = { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey };
    process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
    const client = new S3Client({
      endpoint: server.endpoint, region: server.region, forcePathStyle: true, credentials, maxAttempts: 5,
      requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
    });
    await client.send(new CreateBucketCommand({ Bucket: 'bench' }));

    const src = join(base, 'src');
    progress(`s3: building a tree of ${largeMiB} MiB in large files and ${smallFiles} small files`);
    const bytes = await makeTree(src, largeMiB, smallFiles);
    const files = await filesUnder(src);

    const store = new S3BlobStore({ scheme: 's3', bucket: 'bench', region: server.region, prefix: 'repo', endpoint: server.endpoint }, { concurrency: parallel });
    const repo = await Repository.init(store);
    const full = await timed(() => backupTree(src, repo, { volume: 'bench', parent: false }));
    progress(`s3: full backup ${fmt(full.ms / 1000)} s`);

    const upload = await timed(() => runPool(files, parallel, async (file) => {
      await client.send(new PutObjectCommand({ Bucket: 'bench', Key: `copy/${relative(src, file)}`, Body: await readFile(file) }));
    }));
    progress(`s3: upload ${fmt(upload.ms / 1000)} s`);

    const restoreDir = join(base, 'restored');
    await mkdir(restoreDir);
    const restore = await timed(async () => restoreTree(await Repository.open(store), 'bench', full.result.id, restoreDir));
    progress(`s3: restore ${fmt(restore.ms / 1000)} s`);

    const downloadDir = join(base, 'downloaded');
    const download = await timed(() => runPool(files, parallel, async (file) => {
      const rel = relative(src, file);
      const out = await client.send(new GetObjectCommand({ Bucket: 'bench', Key: `copy/${rel}` }));
      const target = join(downloadDir, rel);
      await mkdir(dirname(target), { recursive: true });
      await writeFile(target, await out.Body!.transformToByteArray());
    }));
    progress(`s3: download ${fmt(download.ms / 1000)} s`);

    const rate = (ms: number) => bytes / MiB / (ms / 1000);
    section.notes.push(`${fmt(bytes / MiB)} MiB in ${files.length} files, ${parallel} requests in flight at most on both sides.`);
    section.tables.push({
      header: ['step', 'seconds', 'MiB/s'],
      rows: [
        ['stowage full backup', fmt(full.ms / 1000), fmt(rate(full.ms))],
        ['upload of each file (PutObject)', fmt(upload.ms / 1000), fmt(rate(upload.ms))],
        ['stowage restore', fmt(restore.ms / 1000), fmt(rate(restore.ms))],
        ['download of each file (GetObject)', fmt(download.ms / 1000), fmt(rate(download.ms))],
      ],
    });
    addMetric(section, { key: 's3_full_vs_upload', label: 'full backup / upload of the same files (rate ratio)', value: upload.ms / full.ms, unit: 'x', target: atLeast(0.7), headline: true });
    addMetric(section, { key: 's3_restore_vs_download', label: 'restore / download of the same files (rate ratio)', value: download.ms / restore.ms, unit: 'x', target: atLeast(0.7) });
    section.details.s3 = { bytes, files: files.length, parallel, fullMs: full.ms, uploadMs: upload.ms, restoreMs: restore.ms, downloadMs: download.ms, stored: full.result.stats.newStoredBytes };
    return section;
  } finally {
    await stopCephS3(cephDir);
    await rm(base, { recursive: true, force: true });
  }
}
