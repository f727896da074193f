/**
 * A snapshot that began on one node while another removed the volume writes its name after the
 * remove dealt with the volume's snapshots (vfs/glusterfs snapshots, repository-snapshots.ts).
 * That name records the volume it was taken of, so a later volume of the same name never lists
 * or restores it as its own.
 */
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { RepositorySnapshots, type SnapshotHost } from '../../../src/core/backup/repository-snapshots.js';
import { ErrorCodes } from '../../../src/core/errors.js';
import { memoryLogger } from '../../helpers/memory-logger.js';

describe('a snapshot racing the remove of its volume on another node', () => {
  let base = '';
  afterEach(async () => { await rm(base, { recursive: true, force: true }); });

  it('leaves a name the next volume of that name neither lists nor opens; it holds the name until deleted', async () => {
    base = await mkdtemp(join(tmpdir(), 'stowage-snapshot-incarnation-'));
    const repoDir = join(base, 'repository');
    const data = join(base, 'data');
    await mkdir(data);
    await writeFile(join(data, 'a.txt'), 'the first volume\n');
    // Both nodes see the same store: the volume there now, by who created it and when.
    let current: string | undefined = 'node-a@2026-12-05T10:00:00.000Z';
    let release!: () => void;
    const gate = new Promise<void>((resolve) => { release = resolve; });
    let reading!: () => void;
    const started = new Promise<void>((resolve) => { reading = resolve; });
    const host = (dataPath: SnapshotHost['dataPath'], log = memoryLogger()) => new RepositorySnapshots({
      backend: 'vfs', repositoryDir: async () => repoDir, hasRepository: async () => true, dataPath,
      incarnation: async () => current, log,
    });
    const nodeA = host(async () => data);
    const log = memoryLogger();
    const nodeB = host(async () => { reading(); await gate; return data; }, log);
    await nodeA.createSnapshot('pg', 'early');

    // Node B's snapshot starts; node A removes the volume (its snapshots go) and a new one is made.
    const racing = nodeB.createSnapshot('pg', 'late');
    await started;
    expect(await nodeA.deleteAll('pg')).toBe(1);
    current = 'node-c@2026-12-05T10:05:00.000Z';
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
});
