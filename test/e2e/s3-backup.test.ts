/**
 * Backups to a real S3 server (Ceph radosgw, test/helpers/s3-server.ts) through the daemon and
 * the built CLI: backup, list, inspect, verify, restore and delete; the gateway stopped in the
 * middle of a backup; an object deleted behind stowage's back. Credentials reach the daemon only
 * through the AWS chain (its environment), the endpoint through the URL.
 */
import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CreateBucketCommand, DeleteObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import {
  CLI_PATH, assertCliBuilt, cleanEnv, killAllDaemons, makeTempDir, removeTempDir, runCli, startDaemon, type DaemonHandle,
} from '../helpers/daemon-process.js';
import { checkS3Server, systemSuite } from '../helpers/requirements.js';
import { sharedS3Server, startGateway, stopGateway, type S3ServerInfo } from '../helpers/s3-server.js';

const skip = systemSuite('s3 (ceph radosgw)', checkS3Server());

async function treeDigest(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const entry of (await readdir(dir, { withFileTypes: true })).sort((a, b) => a.name.localeCompare(b.name))) {
      const path = join(dir, entry.name);
      if (entry.isDirectory()) await walk(path, `${rel}${entry.name}/`);
      else out.push(`${rel}${entry.name} ${createHash('sha256').update(await readFile(path)).digest('hex')}`);
    }
  };
  await walk(root, '');
  return out;
}

const lastLine = (text: string) => text.trim().split('\n').at(-1)!;

describe.skipIf(skip)('backups to S3 (radosgw) from the CLI', () => {
  let server: S3ServerInfo;
  let admin: S3Client;
  let dir: string;
  let socket: string;
  let vols: string;
  let daemon: DaemonHandle;
  const bucket = `e2e-${randomBytes(4).toString('hex')}`;
  let dest: string;
  let daemonEnv: Record<string, string>;
  const cli = (args: string[], timeoutMs = 120_000) => runCli(['--socket', socket, ...args], { timeoutMs });

  const objectKeys = async (prefix: string): Promise<string[]> => {
    const keys: string[] = [];
    let token: string | undefined;
    do {
      const page = await admin.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix, ContinuationToken: token }));
      keys.push(...(page.Contents ?? []).map((o) => o.Key!));
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return keys;
  };

  beforeAll(async () => {
    assertCliBuilt();
    server = await sharedS3Server();
    admin = new S3Client({
      endpoint: server.endpoint, region: server.region, forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED',
    });
    await admin.send(new CreateBucketCommand({ Bucket: bucket }));
    dir = await makeTempDir('stowage-s3e2e-');
    socket = join(dir, 's.sock');
    vols = join(dir, 'vols');
    dest = `s3://${bucket}@us-east-1/repo?endpoint=${encodeURIComponent(server.endpoint)}`;
    daemonEnv = {
      AWS_ACCESS_KEY_ID: server.accessKeyId, AWS_SECRET_ACCESS_KEY: server.secretAccessKey,
      AWS_EC2_METADATA_DISABLED: 'true', AWS_CONFIG_FILE: join(dir, 'none'), AWS_SHARED_CREDENTIALS_FILE: join(dir, 'none'),
    };
    daemon = await startDaemon(socket, ['--root', join(dir, 'root'), '--opt', `vfs.path=${vols}`, '--docker-host', 'none'], { env: daemonEnv });
  }, 240_000);

  afterAll(async () => {
    if (server) await startGateway(server).catch(() => undefined);
    await killAllDaemons();
    await removeTempDir(dir);
  });

  const volumeDir = async (name: string) => {
    const inspected = JSON.parse((await cli(['inspect', name, '--json'])).stdout) as { mountpoint?: string; Mountpoint?: string; path?: string };
    return inspected.mountpoint ?? inspected.Mountpoint ?? inspected.path ?? join(vols, name);
  };

  it('backs up, lists, inspects, verifies, restores and deletes through the CLI', async () => {
    expect((await cli(['create', 'src'])).exitCode).toBe(0);
    const data = await volumeDir('src');
    await mkdir(join(data, 'sub/deep'), { recursive: true });
    await writeFile(join(data, 'sub/hello.txt'), 'hello s3\n');
    await writeFile(join(data, 'sub/deep/random.bin'), randomBytes(3_000_000));
    await writeFile(join(data, 'empty'), '');
    const before = await treeDigest(data);

    const made = await cli(['backup', 'create', 'src', '--dest', dest]);
    expect(made.exitCode, made.stderr).toBe(0);
    const url = lastLine(made.stdout);
    expect(url).toMatch(new RegExp(`^s3://${bucket}@us-east-1/repo\\?endpoint=.*&volume=src&backup=`));
    expect(made.stdout + made.stderr).not.toContain(server.secretAccessKey);
    expect((await objectKeys('repo/')).some((k) => k.startsWith('repo/packs/'))).toBe(true);

    const listed = JSON.parse((await cli(['backup', 'list', '--dest', dest, '--json'])).stdout) as { url: string; state: string }[];
    expect(listed.map((b) => [b.url, b.state])).toEqual([[url, 'complete']]);
    const inspected = JSON.parse((await cli(['backup', 'inspect', url, '--json'])).stdout) as { volume: string; stats: { files: number; bytes: number } };
    expect(inspected).toMatchObject({ volume: 'src', stats: { files: 3, bytes: 3_000_009 } });
    const verified = await cli(['backup', 'verify', url]);
    expect(verified.exitCode, verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/3 files, \d+ chunks?/);

    const restored = await cli(['create', 'copy', '--backup', url]);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(await treeDigest(await volumeDir('copy'))).toEqual(before);

    const deleted = await cli(['backup', 'delete', url]);
    expect(deleted.exitCode, deleted.stderr).toBe(0);
    expect(deleted.stdout).toMatch(new RegExp(`^${url.replace(/[?.*+^$()[\]{}|\\]/g, '\\$&')}: deleted, [\\d.]+ [KMG]?i?B freed \\(\\d+ packs?\\)$`));
    expect(JSON.parse((await cli(['backup', 'list', '--dest', dest, '--json'])).stdout)).toEqual([]);
    // Nothing else used its packs: they are gone from the bucket too.
    expect((await objectKeys('repo/')).filter((k) => k.startsWith('repo/packs/'))).toEqual([]);
  }, 300_000);

  it('names an object deleted behind its back, in verify and in restore, and leaves no volume', async () => {
    const made = await cli(['backup', 'create', 'src', '--dest', dest]);
    expect(made.exitCode, made.stderr).toBe(0);
    const url = lastLine(made.stdout);
    const packs = (await objectKeys('repo/packs/'));
    expect(packs.length).toBeGreaterThan(0);
    const victim = packs[0]!;
    await admin.send(new DeleteObjectCommand({ Bucket: bucket, Key: victim }));
    const shortKey = victim.slice('repo/'.length);

    const verified = await cli(['backup', 'verify', url]);
    expect(verified.exitCode).toBe(1);
    expect(verified.stderr).toContain(shortKey);
    const restored = await cli(['create', 'lost', '--backup', url]);
    expect(restored.exitCode).toBe(1);
    expect(restored.stderr).toContain(shortKey);
    const names = (JSON.parse((await cli(['list', '--json'])).stdout) as { name: string }[]).map((v) => v.name);
    expect(names).not.toContain('lost');
    // Put the repository right for the next test: drop that backup and what only it used.
    expect((await cli(['backup', 'delete', url])).exitCode).toBe(0);
  }, 300_000);

  it('fails a backup whose S3 server goes away, says why, and a retry completes without re-sending what is there', async () => {
    expect((await cli(['create', 'big'])).exitCode).toBe(0);
    const data = await volumeDir('big');
    for (let i = 0; i < 6; i += 1) await writeFile(join(data, `part${i}`), randomBytes(24 * 1024 * 1024));
    const total = 6 * 24 * 1024 * 1024;
    const packsBefore = new Set(await objectKeys('repo/packs/'));

    const child = execa('node', [CLI_PATH, '--socket', socket, 'backup', 'create', 'big', '--dest', dest], {
      reject: false, env: cleanEnv(), extendEnv: false, stdin: 'ignore', timeout: 280_000,
    });
    // Stop the gateway once the backup has stored some packs, not all.
    const deadline = Date.now() + 200_000;
    let stored: string[] = [];
    while (Date.now() < deadline) {
      stored = (await objectKeys('repo/packs/')).filter((k) => !packsBefore.has(k));
      if (stored.length >= 2 || child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 200));
    }
    expect(child.exitCode).toBeNull();
    await stopGateway(server);
    const failed = await child;
    await startGateway(server);
    expect(failed.exitCode).toBe(1);
    expect(String(failed.stderr)).toMatch(/S3 \w+ of .* failed: .*(ECONNREFUSED|socket|connect|Timeout)/i);
    expect(String(failed.stderr)).not.toContain(server.secretAccessKey);
    const listed = JSON.parse((await cli(['backup', 'list', '--dest', dest, '--volume', 'big', '--json'])).stdout) as { state: string }[];
    expect(listed.filter((b) => b.state === 'complete')).toEqual([]);
    const keptPacks = (await objectKeys('repo/packs/')).filter((k) => !packsBefore.has(k));
    expect(keptPacks.length).toBeGreaterThanOrEqual(stored.length);

    const again = await cli(['backup', 'create', 'big', '--dest', dest, '--json'], 280_000);
    expect(again.exitCode, again.stderr).toBe(0);
    const result = JSON.parse(again.stdout) as { url: string; stats?: { bytes: number; newRawBytes: number } };
    const url = result.url;
    const stats = result.stats ?? (JSON.parse((await cli(['backup', 'inspect', url, '--json'])).stdout) as { stats: { bytes: number; newRawBytes: number } }).stats;
    expect(stats.bytes).toBe(total);
    // What the first attempt stored was not read into new packs again.
    expect(stats.newRawBytes).toBeLessThan(total);
    const restored = await cli(['create', 'big-copy', '--backup', url], 280_000);
    expect(restored.exitCode, restored.stderr).toBe(0);
    expect(await treeDigest(await volumeDir('big-copy'))).toEqual(await treeDigest(data));
  }, 600_000);
});
