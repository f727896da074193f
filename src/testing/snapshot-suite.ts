import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
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
  });
}
