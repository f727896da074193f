/**
 * A vfs or glusterfs volume removed with its data retained keeps its snapshots (as devicemapper
 * keeps a retained volume's thin snapshots): repository-snapshots.ts re-keys them as backups
 * under a name no volume can take, so a new volume of that name starts without them.
 */
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../../../src/backup-targets/vfs/vfs-blob-store.js';
import { parseBackupUrl } from '../../../src/core/backup/backup-url.js';
import { VolumeNameSchema } from '../../../src/core/backup/format.js';
import { acquireLock, backupTree, Repository, restoreTree, verifyBackup } from '../../../src/core/backup/index.js';
import { RepositorySnapshots } from '../../../src/core/backup/repository-snapshots.js';
import { retainedSnapshotsKey } from '../../../src/core/backup/retained-snapshots.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { isValidVolumeName } from '../../../src/core/names.js';
import { memoryLogger } from '../../helpers/memory-logger.js';

describe('snapshots of a volume removed with its data retained', () => {
  let base = '';
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  async function setup() {
    base = await mkdtemp(join(tmpdir(), 'stowage-snapshot-retain-'));
    const repoDir = join(base, 'repository');
    const data = join(base, 'data');
    await mkdir(data);
    const snapshots = new RepositorySnapshots({
      backend: 'vfs', repositoryDir: async () => repoDir, hasRepository: async () => true, dataPath: async () => data, log: memoryLogger(),
    });
    const repo = async () => Repository.open(new VfsBlobStore(repoDir));
    return { repoDir, data, snapshots, repo };
  }

  it('are kept as backups under a name no volume can take, each restoring its snapshot; the volume\'s name is freed of them', async () => {
    const { data, snapshots, repo } = await setup();
    await writeFile(join(data, 'a.txt'), 'monday\n');
    await snapshots.createSnapshot('pg', 'monday');
    await writeFile(join(data, 'a.txt'), 'tuesday, longer\n');
    await snapshots.createSnapshot('pg', 'tuesday');
    // A backup no name references (a snapshot interrupted before its name): kept too.
    await writeFile(join(data, 'a.txt'), 'unnamed\n');
    await backupTree(data, await repo(), { volume: 'pg', origin: { snapshot: 'wednesday', backend: 'vfs' } });
    // Another volume's snapshot in the same repository is not touched.
    await snapshots.createSnapshot('other', 'mine');

    const kept = await snapshots.retainAll('pg', '20261205T190000Z-a1b2c3');
    expect(kept).toMatchObject({ snapshots: 2, backups: 3 });
    const url = parseBackupUrl(kept!.url);
    expect(url.volume).toBe('pg..removed-20261205T190000Z-a1b2c3');
    expect(await snapshots.listSnapshots('pg')).toEqual([]);
    const repository = await repo();
    expect(await repository.listBackups('pg')).toEqual([]);
    const backups = await repository.listBackups(url.volume!);
    expect(backups.map((b) => b.snapshot)).toEqual(['monday', 'tuesday', 'wednesday']);
    expect((await snapshots.listSnapshots('other')).map((s) => s.name)).toEqual(['mine']);

    // A new volume of the name: its snapshots and their deletion (with its gc) leave the kept ones whole.
    await writeFile(join(data, 'a.txt'), 'a new volume\n');
    await snapshots.createSnapshot('pg', 'monday');
    await snapshots.deleteSnapshot('pg', 'monday');
    expect(await snapshots.deleteAll('pg')).toEqual({ deleted: 0 });
    const expected = ['monday\n', 'tuesday, longer\n', 'unnamed\n'];
    for (const [i, backup] of backups.entries()) {
      await verifyBackup(repository, url.volume!, backup.id);
      const out = join(base, `restored-${i}`);
      await mkdir(out);
      await restoreTree(repository, url.volume!, backup.id, out);
      expect(await readFile(join(out, 'a.txt'), 'utf8')).toBe(expected[i]);
    }
  });

  it('a volume with no snapshot leaves nothing to keep, and writes nothing', async () => {
    const { snapshots, repoDir } = await setup();
    await snapshots.createSnapshot('other', 'mine');
    expect(await snapshots.retainAll('pg', '20261205T190000Z-a1b2c3')).toBeUndefined();
    expect(await (await Repository.open(new VfsBlobStore(repoDir))).listBackups()).toHaveLength(1);
  });

  it('refused while a gc holds the repository: nothing moved, then kept once the lock is free', async () => {
    const { data, snapshots, repoDir, repo } = await setup();
    await writeFile(join(data, 'a.txt'), 'kept\n');
    await snapshots.createSnapshot('pg', 'one');
    const gcElsewhere = await acquireLock(new VfsBlobStore(repoDir), { kind: 'exclusive', purpose: 'garbage collection', owner: 'node-b', autoRefresh: false });
    await expect(snapshots.retainAll('pg', '20261205T190000Z-a1b2c3')).rejects.toMatchObject({ code: ErrorCodes.BACKUP_LOCKED });
    expect((await snapshots.listSnapshots('pg')).map((s) => s.name)).toEqual(['one']);
    expect((await (await repo()).listBackups()).map((b) => b.volume)).toEqual(['pg']);
    await gcElsewhere.release();
    expect(await snapshots.retainAll('pg', '20261205T190000Z-a1b2c3')).toMatchObject({ snapshots: 1, backups: 1 });
    expect((await (await repo()).listBackups()).map((b) => b.volume)).toEqual(['pg..removed-20261205T190000Z-a1b2c3']);
  });

  it('the kept name fits the repository\'s rule for any volume name, and is never a volume name', () => {
    for (const volume of ['pg', 'a'.repeat(128), `x.${'b'.repeat(126)}`, 'ends.']) {
      const key = retainedSnapshotsKey(volume, '20261205T190000Z-a1b2c3');
      expect(VolumeNameSchema.safeParse(key).success).toBe(true);
      expect(key.endsWith('..removed-20261205T190000Z-a1b2c3')).toBe(true);
      expect(isValidVolumeName(key)).toBe(false);
    }
    expect(() => retainedSnapshotsKey('pg', '../x')).toThrow(/stamp/);
  });
});
