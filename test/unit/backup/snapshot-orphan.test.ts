/**
 * A daemon killed between a snapshot's backup and its name leaves a backup no snapshot names
 * (vfs/glusterfs snapshots, repository-snapshots.ts): the next snapshot operation on that volume
 * deletes it once it is older than the grace period, and never a backup a name references.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { acquireLock, Repository, verifyBackup } from '../../../src/core/backup/index.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { RepositorySnapshots } from '../../../src/core/backup/repository-snapshots.js';
import { memoryLogger } from '../../helpers/memory-logger.js';

describe('a snapshot killed before its name is written', () => {
  let base = '';
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('leaves an unnamed backup that the next snapshot operation deletes once past the grace period', { timeout: 120_000 }, async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-snapshot-orphan-'));
    const repoDir = join(base, 'repository');
    const data = join(base, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'first version\n');
    const host = (graceMs: number, log = memoryLogger()) => new RepositorySnapshots({
      backend: 'vfs', repositoryDir: async () => repoDir, hasRepository: async () => true, dataPath: async () => data, log, orphanGraceMs: graceMs,
    });
    await host(0).createSnapshot('vol', 'kept');

    // Node itself with tsx's loader: the pid killed is the process taking the snapshot.
    const child = execa(process.execPath, ['--import', 'tsx', join(import.meta.dirname, 'snapshot-child.ts'), repoDir, data, 'vol', 'doomed'],
      { reject: false, buffer: false });
    await new Promise<void>((resolve, reject) => {
      child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('backed-up')) resolve(); });
      void child.then((r) => reject(new Error(`the child ended before its backup was written: ${String(r.stderr ?? '')}`)));
    });
    child.kill('SIGKILL');
    expect((await child).signal).toBe('SIGKILL');

    const repo = await Repository.open(new VfsBlobStore(repoDir));
    const before = await repo.listBackups('vol');
    expect(before).toHaveLength(2);
    const named = (await host(0).listSnapshots('vol'));
    expect(named.map((s) => s.name)).toEqual(['kept']);
    const keptId = named[0]!.details!.backupId;
    const orphan = before.find((b) => b.id !== keptId)!;
    expect(orphan.snapshot).toBe('doomed');

    // Within the grace period (a snapshot on another node may be about to name it): left alone.
    await host(60 * 60_000).createSnapshot('vol', 'young');
    expect((await repo.listBackups('vol')).map((b) => b.id)).toContain(orphan.id);

    // Past it: the next snapshot operation deletes it, and only it.
    const log = memoryLogger();
    await writeFile(join(data, 'a.txt'), 'second version\n');
    await host(0, log).createSnapshot('vol', 'later');
    const after = (await repo.listBackups('vol')).map((b) => b.id);
    expect(after).not.toContain(orphan.id);
    expect(after).toHaveLength(3);
    expect(log.lines.join('\n')).toMatch(new RegExp(`deleted 1 snapshot backup\\(s\\) of vol that no snapshot names \\(${orphan.id}\\)`));
    expect((await host(0).listSnapshots('vol')).map((s) => s.name)).toEqual(['kept', 'young', 'later']);
    // Every named snapshot is whole: its chunks survived the sweep's gc.
    for (const id of after) await verifyBackup(repo, 'vol', id);
    // And the name the dead child never wrote is free to take.
    await host(0).createSnapshot('vol', 'doomed');
  });
});

describe('snapshot deletes while another node collects garbage', () => {
  let base = '';
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('refuse before changing anything: every snapshot is still there, then goes once the lock is free', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-snapshot-locked-'));
    const repoDir = join(base, 'repository');
    const data = join(base, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'kept\n');
    const snapshots = new RepositorySnapshots({
      backend: 'vfs', repositoryDir: async () => repoDir, hasRepository: async () => true, dataPath: async () => data, log: memoryLogger(),
    });
    await snapshots.createSnapshot('vol', 'one');
    await snapshots.createSnapshot('vol', 'two');
    const names = async () => (await snapshots.listSnapshots('vol')).map((s) => s.name);
    const gcElsewhere = await acquireLock(new VfsBlobStore(repoDir), { kind: 'exclusive', purpose: 'garbage collection', owner: 'node-b', autoRefresh: false });
    await expect(snapshots.deleteSnapshot('vol', 'one')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    // What a volume's remove runs first: refused, the remove fails with its snapshots intact.
    await expect(snapshots.deleteAll('vol')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    expect(await names()).toEqual(['one', 'two']);
    expect(await (await Repository.open(new VfsBlobStore(repoDir))).listBackups('vol')).toHaveLength(2);
    await gcElsewhere.release();
    await snapshots.deleteSnapshot('vol', 'one');
    expect(await names()).toEqual(['two']);
    expect(await snapshots.deleteAll('vol')).toEqual({ deleted: 1 });
    expect(await names()).toEqual([]);
    expect(await (await Repository.open(new VfsBlobStore(repoDir))).listBackups('vol')).toEqual([]);
  });
});

describe('a snapshot that loses its name to another while a collection holds the repository', () => {
  let base = '';
  afterAll(async () => { await rm(base, { recursive: true, force: true }); });

  it('says the name is taken (so a caller choosing names tries the next), not that the repository is locked', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-snapshot-lost-name-'));
    const repoDir = join(base, 'repository');
    const data = join(base, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'x\n');
    const log = memoryLogger();
    let gcElsewhere: Awaited<ReturnType<typeof acquireLock>> | undefined;
    const snapshots = new RepositorySnapshots({
      backend: 'vfs', repositoryDir: async () => repoDir, hasRepository: async () => true, dataPath: async () => data, log,
      // Right after its read, before it names it: another snapshot names itself `one`, and a
      // collection (after that other's own lost race, say) takes the repository.
      releaseDataPath: async () => {
        if (gcElsewhere) return;
        const store = new VfsBlobStore(repoDir);
        await store.put('snapshots/vol/one', Buffer.from('{}'));
        gcElsewhere = await acquireLock(store, { kind: 'exclusive', purpose: 'garbage collection', owner: 'other', autoRefresh: false });
      },
    });
    await expect(snapshots.createSnapshot('vol', 'one')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_EXISTS });
    expect(log.lines.join('\n')).toMatch(/snapshot one of vol lost its name to another; its unnamed backup .* is deleted by a later sweep/);
    await gcElsewhere!.release();
  });
});
