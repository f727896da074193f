import * as nodeFs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { SnapshotSource, SnapshotSupport } from '../core/backend.js';
import { restoreTree } from '../core/backup/index.js';
import { ErrorCodes } from '../core/errors.js';
import type { FsPort } from '../core/fs-port.js';
import { createRequest as request, fsOf, type ConformanceHarness } from './harness.js';

/**
 * Where a snapshot's files can be read, and on which file system: a `tree` is the backend's own
 * directory (on the harness's fs); a `backup` is restored into a fresh temp dir (restoreTree
 * writes the real file system). `done` removes the temp dir.
 */
async function readableTree(h: ConformanceHarness, source: SnapshotSource): Promise<{ fs: FsPort; path: string; done(): Promise<void> }> {
  if (source.kind === 'tree') return { fs: fsOf(h), path: source.path, done: async () => undefined };
  const path = await nodeFs.mkdtemp(join(tmpdir(), 'stowage-snapshot-suite-'));
  try {
    await restoreTree(source.repository, source.volume, source.backupId, path);
  } catch (err) {
    await nodeFs.rm(path, { recursive: true, force: true });
    throw err;
  }
  return { fs: nodeFs, path, done: () => nodeFs.rm(path, { recursive: true, force: true }) };
}

const RFC3339 = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$/;

/**
 * The snapshot suite, for backends that can snapshot volumes (those with a `snapshots` member):
 * call it beside describeBackendConformance with the same kind of setup.
 */
export function describeSnapshotConformance(label: string, setup: () => Promise<ConformanceHarness>): void {
  describe(`Snapshot conformance: ${label}`, () => {
    let h: ConformanceHarness;
    let snapshots: SnapshotSupport;
    beforeEach(async () => {
      h = await setup();
      // A backend given to this suite must have the member: its presence is the capability.
      expect(h.backend.snapshots, `${h.backend.name} has no snapshots member`).toBeDefined();
      snapshots = h.backend.snapshots!;
    });
    afterEach(async () => {
      await h.backend.dispose();
      await h.cleanup?.();
    });

    it('a volume without snapshots lists none; an unknown volume cannot be snapshotted', async () => {
      await h.backend.create(request('plain'));
      expect(await snapshots.listSnapshots('plain')).toEqual([]);
      await expect(snapshots.createSnapshot('ghost', 's1')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    });

    it('creates snapshots, listed oldest first, and leaves the volume and its data as they were', async () => {
      const record = await h.backend.create(request('origin'));
      const path = await h.backend.attach('origin');
      await fsOf(h).writeFile(join(path, 'kept.txt'), 'before the snapshot');
      const first = await snapshots.createSnapshot('origin', 'monday');
      expect(first).toMatchObject({ name: 'monday', volume: 'origin', createdAt: expect.stringMatching(RFC3339) });
      await snapshots.createSnapshot('origin', 'tuesday');
      const listed = await snapshots.listSnapshots('origin');
      expect(listed.map((s) => s.name)).toEqual(['monday', 'tuesday']);
      expect(listed[0]).toEqual(first);
      expect(await h.backend.get('origin')).toEqual(record);
      expect(await fsOf(h).readFile(join(await h.backend.attach('origin'), 'kept.txt'), 'utf8')).toBe('before the snapshot');
    });

    it('a taken snapshot name fails with E_SNAPSHOT_EXISTS and keeps the first snapshot', async () => {
      await h.backend.create(request('twice'));
      const first = await snapshots.createSnapshot('twice', 'snap');
      await expect(snapshots.createSnapshot('twice', 'snap')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_EXISTS });
      expect(await snapshots.listSnapshots('twice')).toEqual([first]);
    });

    it('deletes a snapshot; deleting an unknown one fails with E_SNAPSHOT_NOT_FOUND', async () => {
      await h.backend.create(request('trim'));
      await snapshots.createSnapshot('trim', 'old');
      const young = await snapshots.createSnapshot('trim', 'young');
      await snapshots.deleteSnapshot('trim', 'old');
      expect(await snapshots.listSnapshots('trim')).toEqual([young]);
      await expect(snapshots.deleteSnapshot('trim', 'old')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
      expect(await snapshots.listSnapshots('trim')).toEqual([young]);
    });

    it('openSnapshot gives the content as it was at snapshot time, later writes to the volume do not show', async (ctx) => {
      if (!snapshots.openSnapshot) return ctx.skip(`${h.backend.name} has no openSnapshot`);
      const fs = fsOf(h);
      await h.backend.create(request('frozen'));
      const live = await h.backend.attach('frozen');
      await fs.writeFile(join(live, 'kept.txt'), 'at snapshot time');
      await fs.mkdir(join(live, 'dir'));
      await fs.writeFile(join(live, 'dir', 'gone-later.txt'), 'deleted after the snapshot');
      await snapshots.createSnapshot('frozen', 'then');
      await fs.writeFile(join(live, 'kept.txt'), 'written after the snapshot');
      await fs.writeFile(join(live, 'late.txt'), 'new after the snapshot');
      await fs.rm(join(live, 'dir', 'gone-later.txt'));

      await expect(snapshots.openSnapshot('frozen', 'never')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
      const source = await snapshots.openSnapshot('frozen', 'then');
      try {
        const tree = await readableTree(h, source);
        try {
          expect((await tree.fs.readdir(tree.path)).map(String).sort()).toEqual(['dir', 'kept.txt']);
          expect(await tree.fs.readFile(join(tree.path, 'kept.txt'), 'utf8')).toBe('at snapshot time');
          expect(await tree.fs.readFile(join(tree.path, 'dir', 'gone-later.txt'), 'utf8')).toBe('deleted after the snapshot');
        } finally {
          await tree.done();
        }
      } finally {
        await source.release();
      }
      expect(await fs.readFile(join(live, 'kept.txt'), 'utf8')).toBe('written after the snapshot');
      // Released: nothing holds the snapshot any more.
      await snapshots.deleteSnapshot('frozen', 'then');
      expect(await snapshots.listSnapshots('frozen')).toEqual([]);
    });
  });
}
