import { createCipheriv, createHash } from 'node:crypto';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { Repository } from '../../../src/core/backup/repository.js';
import { backupTree, gc, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';

const CHUNKER = { minSize: 16 * 1024, avgSize: 64 * 1024, maxSize: 256 * 1024, seed: 'kill' };

function pseudoRandom(size: number, seed: string): Buffer {
  return createCipheriv('aes-256-ctr', createHash('sha256').update(seed).digest(), Buffer.alloc(16)).update(Buffer.alloc(size));
}

describe('a backup killed with SIGKILL', () => {
  let base = '';
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('leaves the repository verifying, no record, and garbage gc removes at once: the lock of a holder gone from this machine holds nothing', { timeout: 120_000 }, async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-kill-'));
    const repoDir = join(base, 'repo');
    const store = new VfsBlobStore(repoDir, { durable: false });
    // Small packs, so the killed backup has written some before it dies.
    const repo = await Repository.init(store, { chunker: CHUNKER, packSize: 256 * 1024 });
    const kept = join(base, 'kept');
    await mkdir(kept);
    await writeFile(join(kept, 'a'), pseudoRandom(300_000, 'kept'));
    const good = await backupTree(kept, repo, { volume: 'kept' });

    const big = join(base, 'big');
    await mkdir(big);
    for (let i = 0; i < 8; i += 1) await writeFile(join(big, `f${i}`), pseudoRandom(8 * 1024 * 1024, `big${i}`));
    // Node itself with tsx's loader: the pid killed is the process doing the backup.
    const child = execa(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'backup-child.ts'), repoDir, big, 'big'], { reject: false, buffer: false });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('progress')) resolve(); });
      child.on('exit', () => reject(new Error('the backup child ended before it made progress')));
    });
    child.kill('SIGKILL');
    expect((await child).signal).toBe('SIGKILL');
    const [object] = (await store.list('locks/')).objects;
    const dead = JSON.parse((await store.get(object!.key)).toString()) as { owner: string; expiresAt: number };
    expect(dead.owner).toBe('doomed-child');
    expect(dead.expiresAt).toBeGreaterThan(Date.now() + 60_000);

    const after = await Repository.open(store);
    expect((await after.listBackups()).map((r) => r.id)).toEqual([good.id]);
    expect(await verifyBackup(after, 'kept', good.id)).toMatchObject({ files: 1 });
    const out = join(base, 'out');
    await mkdir(out);
    await restoreTree(after, 'kept', good.id, out);
    expect(await readdir(out)).toEqual(['a']);
    // The dead backup's lock had not expired, but its holder is gone from this machine, so
    // nothing waited for it (a holder elsewhere is waited for: lock-holders.test.ts).
    const packsBefore = (await store.list('packs/')).objects.length;
    const result = await gc(after);
    expect(result.deletedPacks).toBeGreaterThan(0);
    expect((await store.list('packs/')).objects.length).toBe(packsBefore - result.deletedPacks);
    expect(await verifyBackup(after, 'kept', good.id)).toMatchObject({ files: 1 });
  });
});
