import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { Backend, CreateRequest } from '../../src/core/backend.js';
import { LockLease } from '../../src/core/cluster/lease.js';
import { ErrorCodes } from '../../src/core/errors.js';
import type { FsPort } from '../../src/core/fs-port.js';
import { createRequest } from '../../src/core/create-request.js';
import type { VolumeOptions } from '../../src/core/options.js';

/** What a backend's test file provides to run the shared suite. */
export interface ConformanceHarness {
  backend: Backend;
  /** File system on which the paths returned by attach live (memfs, or the real one). */
  fs: FsPort;
  /** Waits for background work (purges) so assertions about removed data are deterministic. */
  settle?(): Promise<void>;
  cleanup(): Promise<void>;
}

function request(name: string, options: VolumeOptions = {}): CreateRequest {
  return createRequest(name, options, { createdAt: new Date().toISOString(), createdBy: 'conformance-node' });
}

/**
 * Checks the sentences written on the Backend interface. Every backend's test file calls this
 * once, with a fresh, initialised backend per test.
 */
export function describeBackendConformance(label: string, setup: () => Promise<ConformanceHarness>): void {
  describe(`Backend conformance: ${label}`, () => {
    let h: ConformanceHarness;
    beforeEach(async () => {
      h = await setup();
    });
    afterEach(async () => {
      await h.backend.dispose();
      await h.cleanup();
    });

    const writeInto = async (name: string, file: string, content: string) => {
      const path = await h.backend.attach(name);
      await h.fs.writeFile(join(path, file), content);
      return path;
    };

    it('starts with no volumes and returns undefined for an unknown name', async () => {
      expect(await h.backend.list()).toEqual([]);
      expect(await h.backend.get('nothing-here')).toBeUndefined();
    });

    it('create registers the volume with its options, creation time and creator', async () => {
      const req = request('alpha', { size: 1048576 });
      const record = await h.backend.create(req);
      expect(record).toMatchObject({ name: 'alpha', createdAt: req.record.createdAt, createdBy: 'conformance-node' });
      expect(record.options.size).toBe(1048576);
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

    it('a new volume starts empty and attach returns a directory that keeps data across attach/detach', async () => {
      await h.backend.create(request('data'));
      const path = await h.backend.attach('data');
      expect(await h.fs.readdir(path)).toEqual([]);
      await h.fs.writeFile(join(path, 'hello.txt'), 'hi there');
      await h.backend.detach('data');
      const again = await h.backend.attach('data');
      expect(await h.fs.readFile(join(again, 'hello.txt'), 'utf8')).toBe('hi there');
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
      expect(await h.fs.readdir(two)).toEqual([]);
    });

    it('remove of an unknown name is a no-op', async () => {
      expect(await h.backend.remove('ghost', { retain: false })).toEqual({});
      expect(await h.backend.remove('ghost', { retain: true })).toEqual({});
    });

    it('remove unregisters and a re-created volume of the same name starts empty', async () => {
      await h.backend.create(request('reborn'));
      await writeInto('reborn', 'secret', 'old contents');
      await h.backend.detach('reborn');
      expect(await h.backend.remove('reborn', { retain: false })).toEqual({});
      await h.settle?.();
      expect(await h.backend.get('reborn')).toBeUndefined();
      expect((await h.backend.list()).map((v) => v.name)).not.toContain('reborn');
      await h.backend.create(request('reborn'));
      expect(await h.fs.readdir(await h.backend.attach('reborn'))).toEqual([]);
    });

    it('remove with retain keeps the data outside the namespace and the re-created volume starts empty', async () => {
      await h.backend.create(request('keeper'));
      await writeInto('keeper', 'precious', 'keep me');
      await h.backend.detach('keeper');
      const outcome = await h.backend.remove('keeper', { retain: true });
      expect(outcome.retainedAt).toBeTruthy();
      expect(await h.fs.readFile(join(outcome.retainedAt!, 'precious'), 'utf8')).toBe('keep me');
      await h.backend.create(request('keeper'));
      const fresh = await h.backend.attach('keeper');
      expect(fresh).not.toBe(outcome.retainedAt);
      expect(await h.fs.readdir(fresh)).toEqual([]);
    });

    it('remove with a lost lease (cluster-protected backends) fails, moving and deleting nothing', async (ctx) => {
      if (!h.backend.clusterStateDir) ctx.skip();
      await h.backend.create(request('leased'));
      await writeInto('leased', 'data', 'stays');
      await h.backend.detach('leased');
      const lease = new LockLease('leased', 60_000, 0, LockLease.stamp());
      lease.lose('another node took the name');
      for (const retain of [false, true]) {
        await expect(h.backend.remove('leased', { retain, lease })).rejects.toMatchObject({
          code: ErrorCodes.BACKEND_UNAVAILABLE, message: expect.stringMatching(/^lost the cluster lock on volume leased .*nothing was deleted/),
        });
      }
      await h.settle?.();
      expect(await h.backend.get('leased')).toMatchObject({ name: 'leased' });
      expect(await h.fs.readFile(join(await h.backend.attach('leased'), 'data'), 'utf8')).toBe('stays');
    });

    it('lists many volumes, each once', async () => {
      const names = Array.from({ length: 40 }, (_, i) => `many-${String(i).padStart(2, '0')}`);
      await Promise.all(names.map((n) => h.backend.create(request(n))));
      const listed = (await h.backend.list()).map((v) => v.name).sort();
      expect(listed).toEqual(names);
      await h.backend.remove('many-07', { retain: false });
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

    it('declares its capabilities', () => {
      expect(['local', 'global']).toContain(h.backend.capabilities.scope);
      expect(['recorded', 'enforced']).toContain(h.backend.capabilities.sizeLimit);
      expect(typeof h.backend.name).toBe('string');
    });
  });
}
