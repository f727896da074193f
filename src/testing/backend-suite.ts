import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { LockLease } from '../core/cluster/lease.js';
import { ErrorCodes } from '../core/errors.js';
import type { FsPort } from '../core/fs-port.js';
import { createRequest as request, findFiles, fsOf, removeRequest, type ConformanceHarness } from './harness.js';

/**
 * The base suite: checks the sentences written on the Backend interface. Call it once per
 * backend (and per configuration worth checking) in a vitest file; `setup` returns a fresh,
 * initialised backend for each test.
 */
export function describeBackendConformance(label: string, setup: () => Promise<ConformanceHarness>): void {
  describe(`Backend conformance: ${label}`, () => {
    let h: ConformanceHarness;
    let fs: FsPort;
    let disposed: boolean;
    beforeEach(async () => {
      h = await setup();
      fs = fsOf(h);
      disposed = false;
    });
    afterEach(async () => {
      if (!disposed) await h.backend.dispose();
      await h.cleanup?.();
    });

    const writeInto = async (name: string, file: string, content: string) => {
      const path = await h.backend.attach(name);
      await fs.writeFile(join(path, file), content);
      return path;
    };

    it('starts with no volumes and returns undefined for an unknown name', async () => {
      expect(await h.backend.list()).toEqual([]);
      expect(await h.backend.get('nothing-here')).toBeUndefined();
    });

    it('create registers the volume with its options, creation time and creator', async () => {
      const req = request('alpha', { size: 1048576 });
      const record = await h.backend.create(req);
      expect(record).toMatchObject({ name: 'alpha', createdAt: req.record.createdAt, createdBy: req.record.createdBy });
      expect(record.options.size).toBe(1048576);
      expect(record.adopted).toBeFalsy();
      expect(await h.backend.get('alpha')).toEqual(record);
      expect((await h.backend.list()).map((v) => v.name)).toEqual(['alpha']);
    });

    it('create of a registered name fails with E_VOLUME_EXISTS and keeps the first volume', async () => {
      const first = await h.backend.create(request('dup', { size: 2097152 }));
      await expect(h.backend.create(request('dup', { size: 4194304 }))).rejects.toMatchObject({ code: ErrorCodes.VOLUME_EXISTS });
      expect(await h.backend.get('dup')).toEqual(first);
    });

    it('create never records adopt as a defining option', async () => {
      const record = await h.backend.create(request('noadopt', { adopt: true }));
      expect(record.options).not.toHaveProperty('adopt');
    });

    it('create refuses data already where the volume would go with E_DATA_CONFLICT, changing nothing', async (ctx) => {
      if (!h.plantData) ctx.skip();
      await h.plantData!('found', 'from-before.txt', 'found there');
      await expect(h.backend.create(request('found'))).rejects.toMatchObject({
        code: ErrorCodes.DATA_CONFLICT, message: expect.stringContaining('found'),
      });
      expect(await h.backend.get('found')).toBeUndefined();
      expect(await h.backend.list()).toEqual([]);
      // The refused data is still there for the adopt that follows.
      const record = await h.backend.create(request('found', { adopt: true }));
      expect(record).toMatchObject({ name: 'found', adopted: true });
      expect(record.options).not.toHaveProperty('adopt');
      expect(await h.backend.get('found')).toEqual(record);
      expect(await fs.readFile(join(await h.backend.attach('found'), 'from-before.txt'), 'utf8')).toBe('found there');
    });

    it('a new volume starts empty and attach returns a directory that keeps data across attach/detach', async () => {
      await h.backend.create(request('data'));
      const path = await h.backend.attach('data');
      expect(await fs.readdir(path)).toEqual([]);
      await fs.writeFile(join(path, 'hello.txt'), 'hi there');
      await h.backend.detach('data');
      const again = await h.backend.attach('data');
      expect(await fs.readFile(join(again, 'hello.txt'), 'utf8')).toBe('hi there');
    });

    it('attach is idempotent and detach of an unattached volume is a no-op', async () => {
      await h.backend.create(request('idem'));
      const a = await h.backend.attach('idem');
      const b = await h.backend.attach('idem');
      expect(b).toBe(a);
      await h.backend.detach('idem');
      await h.backend.detach('idem');
      await h.backend.create(request('never-attached'));
      await h.backend.detach('never-attached');
      expect(await h.backend.get('never-attached')).toBeDefined();
    });

    it('attach of an unknown name fails with E_VOLUME_NOT_FOUND', async () => {
      await expect(h.backend.attach('ghost')).rejects.toMatchObject({ code: ErrorCodes.VOLUME_NOT_FOUND });
    });

    it('volumes do not share data', async () => {
      await h.backend.create(request('one'));
      await h.backend.create(request('two'));
      await writeInto('one', 'only-in-one', '1');
      const two = await h.backend.attach('two');
      expect(two).not.toBe(await h.backend.attach('one'));
      expect(await fs.readdir(two)).toEqual([]);
    });

    it('remove of an unknown name is a no-op', async () => {
      expect(await h.backend.remove('ghost', removeRequest(false))).toEqual({});
      expect(await h.backend.remove('ghost', removeRequest(true))).toEqual({});
    });

    it('remove unregisters and a re-created volume of the same name starts empty', async () => {
      await h.backend.create(request('reborn'));
      await writeInto('reborn', 'secret', 'old contents');
      await h.backend.detach('reborn');
      expect(await h.backend.remove('reborn', removeRequest(false))).toEqual({});
      await h.backend.settle?.();
      expect(await h.backend.get('reborn')).toBeUndefined();
      expect((await h.backend.list()).map((v) => v.name)).not.toContain('reborn');
      await h.backend.create(request('reborn'));
      expect(await fs.readdir(await h.backend.attach('reborn'))).toEqual([]);
    });

    it('remove with retain keeps the data outside the namespace and the re-created volume starts empty', async () => {
      await h.backend.create(request('keeper'));
      await writeInto('keeper', 'precious', 'keep me');
      await h.backend.detach('keeper');
      const outcome = await h.backend.remove('keeper', removeRequest(true));
      expect(outcome.retainedAt).toBeTruthy();
      expect(await fs.readFile(join(outcome.retainedAt!, 'precious'), 'utf8')).toBe('keep me');
      await h.backend.create(request('keeper'));
      const fresh = await h.backend.attach('keeper');
      expect(fresh).not.toBe(outcome.retainedAt);
      expect(await fs.readdir(fresh)).toEqual([]);
    });

    it('remove with a lost lease (cluster-protected backends) fails, moving and deleting nothing', async (ctx) => {
      if (!h.backend.capabilities.clusterStateDir) ctx.skip();
      await h.backend.create(request('leased'));
      await writeInto('leased', 'data', 'stays');
      await h.backend.detach('leased');
      const lease = new LockLease('leased', 60_000, 0, LockLease.stamp());
      lease.lose('another node took the name');
      for (const retain of [false, true]) {
        await expect(h.backend.remove('leased', removeRequest(retain, lease))).rejects.toMatchObject({
          code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/^lost the cluster lock on volume leased .*nothing was deleted/),
        });
      }
      await h.backend.settle?.();
      expect(await h.backend.get('leased')).toMatchObject({ name: 'leased' });
      expect(await fs.readFile(join(await h.backend.attach('leased'), 'data'), 'utf8')).toBe('stays');
    });

    it('dispose waits for background work: no deleted file is left once it returns', async (ctx) => {
      if (!h.dataRoot) ctx.skip();
      await h.backend.create(request('purged'));
      const path = await h.backend.attach('purged');
      // Enough files that a purge still running after dispose would be seen part-way.
      for (let d = 0; d < 8; d++) {
        await fs.mkdir(join(path, `dir-${d}`));
        await Promise.all(Array.from({ length: 25 }, (_, f) => fs.writeFile(join(path, `dir-${d}`, `purge-me-${f}`), 'x')));
      }
      expect(await findFiles(fs, h.dataRoot!, 'purge-me-')).toHaveLength(200);
      await h.backend.detach('purged');
      await h.backend.remove('purged', removeRequest(false));
      disposed = true;
      await h.backend.dispose();
      expect(await findFiles(fs, h.dataRoot!, 'purge-me-')).toEqual([]);
    });

    it('init fails with E_BACKEND_UNAVAILABLE naming what is missing', async (ctx) => {
      if (!h.unavailable) ctx.skip();
      const { backend, missing } = await h.unavailable!();
      try {
        await expect(backend.init()).rejects.toMatchObject({
          code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringContaining(missing),
        });
      } finally {
        await backend.dispose().catch(() => undefined);
      }
    });

    it('lists many volumes, each once', async () => {
      const names = Array.from({ length: 40 }, (_, i) => `many-${String(i).padStart(2, '0')}`);
      await Promise.all(names.map((n) => h.backend.create(request(n))));
      const listed = (await h.backend.list()).map((v) => v.name).sort();
      expect(listed).toEqual(names);
      await h.backend.remove('many-07', removeRequest(false));
      expect((await h.backend.list()).map((v) => v.name)).not.toContain('many-07');
      expect(await h.backend.list()).toHaveLength(39);
    });

    it('volumeStatus answers for a registered volume and describe names the backend settings', async () => {
      await h.backend.create(request('stat'));
      const status = await h.backend.volumeStatus('stat');
      expect(typeof status).toBe('object');
      for (const value of Object.values(status)) expect(typeof value).toBe('string');
      const facts = await h.backend.describe();
      expect(Object.keys(facts).length).toBeGreaterThan(0);
    });

    it('declares its capabilities: a global backend has a cluster state directory, snapshots a whole interface', async () => {
      const { capabilities, snapshots } = h.backend;
      expect(['local', 'global']).toContain(capabilities.scope);
      expect(['recorded', 'enforced']).toContain(capabilities.sizeLimit);
      expect(typeof h.backend.name).toBe('string');
      if (capabilities.scope === 'global') expect(capabilities.clusterStateDir).toEqual(expect.stringMatching(/^\//));
      if (capabilities.clusterStateDir !== undefined) {
        expect(capabilities.clusterStateDir).toMatch(/^\//);
        expect((await fs.stat(capabilities.clusterStateDir)).isDirectory()).toBe(true);
      }
      if (snapshots !== undefined) {
        for (const op of ['createSnapshot', 'listSnapshots', 'deleteSnapshot'] as const) expect(typeof snapshots[op]).toBe('function');
      }
    });
  });
}
