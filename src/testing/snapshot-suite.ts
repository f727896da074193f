import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { VfsBlobStore } from '../backup-targets/vfs/vfs-blob-store.js';
import { parseBackupUrl } from '../core/backup/backup-url.js';
import { Repository, restoreTree } from '../core/backup/index.js';
import type { SnapshotSupport } from '../core/backend.js';
import { ErrorCodes } from '../core/errors.js';
import { isValidVolumeName } from '../core/names.js';
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

    it('a volume removed with its data retained keeps its snapshots, out of its name: a new volume of that name has none', async () => {
      await h.backend.create(request('held'));
      const path = await h.backend.attach('held');
      await fsOf(h).writeFile(join(path, 'a.txt'), 'at monday');
      await snapshots.createSnapshot('held', 'monday');
      await fsOf(h).writeFile(join(path, 'a.txt'), 'after monday');
      await h.backend.detach('held');
      const outcome = await h.backend.remove('held', { retain: true });
      await h.backend.create(request('held'));
      expect(await snapshots.listSnapshots('held')).toEqual([]);
      await snapshots.createSnapshot('held', 'monday');
      expect((await snapshots.listSnapshots('held')).map((s) => s.name)).toEqual(['monday']);
      if (!outcome.snapshotsKept) {
        // A backend with snapshots of its own keeps them with the retained data and says so in its description.
        expect(Object.values(await h.backend.describe()).join('\n')).toMatch(/\bmonday=/);
        return;
      }
      // Kept as backups: the URL names a repository and a volume no volume can be called, and the monday backup restores what monday held.
      expect(outcome.snapshotsKept).toMatchObject({ snapshots: 1, backups: 1 });
      const url = parseBackupUrl(outcome.snapshotsKept.url);
      expect(url.volume).toMatch(/^held\.\.removed-/);
      expect(isValidVolumeName(url.volume)).toBe(false);
      if (url.target.scheme !== 'vfs') throw new Error(`kept snapshots at ${outcome.snapshotsKept.url}, not a vfs repository`);
      const repository = await Repository.open(new VfsBlobStore(url.target.path));
      const [kept, ...more] = await repository.listBackups(url.volume!);
      expect(more).toEqual([]);
      expect(kept?.snapshot).toBe('monday');
      const restored = await mkdtemp(join(tmpdir(), 'stowage-kept-'));
      try {
        await restoreTree(repository, url.volume!, kept!.id, restored);
        expect(await readFile(join(restored, 'a.txt'), 'utf8')).toBe('at monday');
      } finally {
        repository.releasePackCache();
        await rm(restored, { recursive: true, force: true });
      }
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
