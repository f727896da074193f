/**
 * A snapshot that began on one node while another removed the volume writes its name after the
 * remove dealt with the volume's snapshots (vfs/glusterfs snapshots, repository-snapshots.ts).
 * That name records the volume it was taken of, so a later volume of the same name never lists
 * or restores it as its own.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { parseBackupUrl } from '../../../src/core/backup/backup-url.js';
import { backupTree, Repository, restoreTree } from '../../../src/core/backup/index.js';
import { RepositorySnapshots, type SnapshotHost } from '../../../src/core/backup/repository-snapshots.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { memoryLogger } from '../../helpers/memory-logger.js';

describe('a snapshot racing the remove of its volume on another node', () => {
  let base = '';
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  /**
   * Two nodes on one repository: node B's snapshot reads its data only once `release` is called.
   * `state.current` is the volume there now, by who created it and when.
   */
  async function twoNodes(current: string) {
    base = await mkdtemp(join(tmpdir(), 'stowage-snapshot-incarnation-'));
    const repoDir = join(base, 'repository');
    const data = join(base, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'the first volume\n');
    const state = { current };
    let release!: () => void;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    let reading!: () => void;
    const started = new Promise<void>((resolve) => { reading = resolve; });
    const log = memoryLogger();
    const host = (dataPath: SnapshotHost['dataPath']) => new RepositorySnapshots({
      backend: 'vfs', repositoryDir: async () => repoDir, hasRepository: async () => true, dataPath, incarnation: async () => state.current, log,
    });
    const nodeA = host(async () => data);
    const nodeB = host(async () => { reading(); await gate; return data; });
    return { repoDir, data, state, release, started, log, nodeA, nodeB };
  }

  it('leaves a name the next volume of that name neither lists nor opens; it holds the name until deleted', async () => {
    const { state, release, started, log, nodeA, nodeB } = await twoNodes('node-a@2026-12-05T10:00:00.000Z');
    await nodeA.createSnapshot('pg', 'early');

    // Node B's snapshot starts; node A removes the volume (its snapshots go) and a new one is made.
    const racing = nodeB.createSnapshot('pg', 'late');
    await started;
    expect(await nodeA.deleteAll('pg')).toEqual({ deleted: 1 });
    state.current = 'node-c@2026-12-05T10:05:00.000Z';
    release();
    await racing;

    expect(await nodeA.listSnapshots('pg')).toEqual([]);
    await expect(nodeA.openSnapshot('pg', 'late')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
    await expect(nodeA.createSnapshot('pg', 'late')).rejects.toMatchObject({
      code: ErrorCodes.SNAPSHOT_EXISTS, message: expect.stringContaining('is held by a snapshot of an earlier volume pg'),
    });
    // Other names are free, and the new volume's own snapshots list alone.
    await nodeA.createSnapshot('pg', 'mine');
    expect((await nodeA.listSnapshots('pg')).map((s) => s.name)).toEqual(['mine']);
    // Deleting it frees the name; the next remove of pg would have taken it along anyway.
    await nodeB.deleteSnapshot('pg', 'late');
    expect(log.lines.some((l) => l.includes('taken of an earlier volume of that name (node-a@2026-12-05T10:00:00.000Z)'))).toBe(true);
    await nodeA.createSnapshot('pg', 'late');
    expect((await nodeA.listSnapshots('pg')).map((s) => s.name)).toEqual(['mine', 'late']);
    expect((await nodeA.openSnapshot('pg', 'late')).kind).toBe('backup');
  });

  it('is kept, not deleted, when the later volume is deleted: nobody asked to delete it', async () => {
    const { repoDir, data, state, release, started, log, nodeA, nodeB } = await twoNodes(`node-a@${new Date(Date.now() - 60_000).toISOString()}`);
    await nodeA.createSnapshot('pg', 'early');
    const racing = nodeB.createSnapshot('pg', 'late');
    await started;
    expect(await nodeA.deleteAll('pg')).toEqual({ deleted: 1 });
    // A backup no name references, begun before the next volume was created: the first volume's too.
    const repository = await Repository.open(new VfsBlobStore(repoDir));
    await backupTree(data, repository, { volume: 'pg', origin: { snapshot: 'interrupted', backend: 'vfs' } });
    await new Promise((resolve) => setTimeout(resolve, 5));
    state.current = `node-c@${new Date().toISOString()}`;
    release();
    await racing;

    // The new volume's own snapshot, and an unnamed backup of its own: both go with it.
    await writeFile(join(data, 'a.txt'), 'the second volume\n');
    await nodeA.createSnapshot('pg', 'mine');
    await backupTree(data, repository, { volume: 'pg', origin: { snapshot: 'its-own', backend: 'vfs' } });
    const removed = await nodeA.deleteAll('pg');
    expect(removed).toMatchObject({ deleted: 1, kept: { snapshots: 1, backups: 2, ofEarlierVolume: true } });
    expect(log.lines.some((l) => l.includes('kept 1 snapshot(s) of an earlier volume pg'))).toBe(true);
    const url = parseBackupUrl(removed.kept!.url);
    const after = await Repository.open(new VfsBlobStore(repoDir));
    expect(await after.listBackups('pg')).toEqual([]);
    const kept = await after.listBackups(url.volume!);
    expect(kept.map((b) => b.snapshot).sort()).toEqual(['interrupted', 'late']);
    for (const backup of kept) {
      const out = join(base, `restored-${backup.snapshot}`);
      await mkdir(out);
      await restoreTree(after, url.volume!, backup.id, out);
      expect(await readFile(join(out, 'a.txt'), 'utf8')).toBe('the first volume\n');
    }
    // Nothing is left under the name: a third volume starts clean, and its delete keeps nothing.
    expect(await nodeA.listSnapshots('pg')).toEqual([]);
    expect(await nodeA.deleteAll('pg')).toEqual({ deleted: 0 });
  });
});
