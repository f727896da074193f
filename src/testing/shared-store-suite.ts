import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ErrorCodes } from '../core/errors.js';
import type { FsPort } from '../core/fs-port.js';
import { createRequest as request, fsOf, removeRequest, type SharedStoreHarness } from './harness.js';

/**
 * The shared-store suite, for `global` backends: two backends, as two nodes would run them, over
 * the same storage see each other's volumes, data and cluster state directory.
 */
export function describeSharedStoreConformance(label: string, setup: () => Promise<SharedStoreHarness>): void {
  describe(`Shared-store conformance: ${label}`, () => {
    let h: SharedStoreHarness;
    let fs: FsPort;
    beforeEach(async () => {
      h = await setup();
      fs = fsOf(h);
    });
    afterEach(async () => {
      await Promise.all([h.first.dispose(), h.second.dispose()]);
      await h.cleanup?.();
    });

    it('both are global and share one cluster state directory', async () => {
      const [a, b] = [h.first.capabilities, h.second.capabilities];
      expect([a.scope, b.scope]).toEqual(['global', 'global']);
      const file = `conformance-${process.pid}-${Date.now()}`;
      await fs.writeFile(join(a.clusterStateDir!, file), 'written by the first node');
      try {
        expect(await fs.readFile(join(b.clusterStateDir!, file), 'utf8')).toBe('written by the first node');
      } finally {
        await fs.rm(join(a.clusterStateDir!, file), { force: true });
      }
    });

    it("each lists and gets the other's volumes, with the same record", async () => {
      const made = await h.first.create(request('from-first', { size: 1048576 }, 'node-one'));
      expect(await h.second.get('from-first')).toEqual(made);
      const other = await h.second.create(request('from-second', {}, 'node-two'));
      expect(await h.first.get('from-second')).toEqual(other);
      for (const backend of [h.first, h.second]) {
        expect((await backend.list()).map((v) => v.name).sort()).toEqual(['from-first', 'from-second']);
      }
    });

    it('a name made on one node is taken on the other: E_VOLUME_EXISTS, the first record kept', async () => {
      const made = await h.first.create(request('taken', {}, 'node-one'));
      await expect(h.second.create(request('taken', {}, 'node-two'))).rejects.toMatchObject({ code: ErrorCodes.VOLUME_EXISTS });
      expect(await h.first.get('taken')).toEqual(made);
      expect(await h.second.get('taken')).toEqual(made);
    });

    it('data written on one node is read on the other', async () => {
      await h.first.create(request('moving', {}, 'node-one'));
      await fs.writeFile(join(await h.first.attach('moving'), 'note.txt'), 'from node one');
      await h.first.detach('moving');
      expect(await fs.readFile(join(await h.second.attach('moving'), 'note.txt'), 'utf8')).toBe('from node one');
      await h.second.detach('moving');
    });

    it('a volume removed on one node is gone on the other', async () => {
      await h.first.create(request('leaving', {}, 'node-one'));
      expect(await h.second.remove('leaving', removeRequest(false))).toEqual({});
      await h.second.settle?.();
      expect(await h.first.get('leaving')).toBeUndefined();
      expect((await h.first.list()).map((v) => v.name)).not.toContain('leaving');
    });
  });
}
