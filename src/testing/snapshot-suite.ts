import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { restoreTree } from '../core/backup/index.js';
import type { SnapshotSupport } from '../core/backend.js';
import { ErrorCodes } from '../core/errors.js';
import { createRequest as request, fsOf, type ConformanceHarness } from './harness.js';

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

    it('a removed volume takes its snapshots along: a new volume of that name has none', async () => {
      await h.backend.create(request('gone'));
      await snapshots.createSnapshot('gone', 'old');
      await h.backend.remove('gone', { retain: false });
      await h.backend.create(request('gone'));
      expect(await snapshots.listSnapshots('gone')).toEqual([]);
      await expect(snapshots.deleteSnapshot('gone', 'old')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
      await snapshots.createSnapshot('gone', 'old');
      expect((await snapshots.listSnapshots('gone')).map((s) => s.name)).toEqual(['old']);
    });

    it('openSnapshot gives the content at snapshot time, whatever the volume holds since', async () => {
      const open = snapshots.openSnapshot.bind(snapshots);
      await h.backend.create(request('moving'));
      const path = await h.backend.attach('moving');
      const fs = fsOf(h);
      await fs.writeFile(join(path, 'a.txt'), 'then');
      await fs.mkdir(join(path, 'sub'));
      await fs.writeFile(join(path, 'sub', 'b.txt'), 'kept');
      await snapshots.createSnapshot('moving', 'then');
      await fs.writeFile(join(path, 'a.txt'), 'now, and longer');
      await fs.writeFile(join(path, 'new.txt'), 'after the snapshot');
      await fs.rm(join(path, 'sub', 'b.txt'));
      await expect(open('moving', 'ghost')).rejects.toMatchObject({ code: ErrorCodes.SNAPSHOT_NOT_FOUND });
      const source = await open('moving', 'then');
      // A tree is read where it is; a backup is restored to a temporary directory and read there.
      let dir: string;
      let read: (file: string) => Promise<string>;
      let names: (sub: string) => Promise<string[]>;
      let restored: string | undefined;
      try {
        if (source.kind === 'tree') {
          dir = source.path;
          read = async (file) => String(await fs.readFile(join(dir, file), 'utf8'));
          names = async (sub) => (await fs.readdir(join(dir, sub))).map(String).filter((n) => n !== 'lost+found').sort();
        } else {
          expect(source.volume).toBe('moving');
          restored = await mkdtemp(join(tmpdir(), 'stowage-snapshot-'));
          dir = restored;
          await restoreTree(source.repository, source.volume, source.backupId, restored);
          read = (file) => readFile(join(dir, file), 'utf8');
          names = async (sub) => (await readdir(join(dir, sub))).filter((n) => n !== 'lost+found').sort();
        }
        expect(await names('.')).toEqual(['a.txt', 'sub']);
        expect(await read('a.txt')).toBe('then');
        expect(await read(join('sub', 'b.txt'))).toBe('kept');
      } finally {
        await source.release();
        if (restored) await rm(restored, { recursive: true, force: true });
      }
      // The volume itself is untouched by reading its snapshot.
      expect(String(await fs.readFile(join(path, 'a.txt'), 'utf8'))).toBe('now, and longer');
      // Released, the snapshot is held by nothing: it can be deleted.
      await snapshots.deleteSnapshot('moving', 'then');
      expect(await snapshots.listSnapshots('moving')).toEqual([]);
    });
  });
}
